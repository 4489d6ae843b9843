#!/usr/bin/env bash
# Install netspectre from this checkout, or remove it:
#   sudo ./install.sh [--no-deps]           install tor, nftables, python3 (apt, pacman or dnf),
#                                           then netspectre in its own venv; again = upgrade
#   sudo ./install.sh --uninstall [--purge] remove what the install and netspectre created
#                                           (--purge: also a config you changed)
# Every path the install creates is listed in $PREFIX/manifest; --uninstall removes those and
# nothing else (system packages such as tor and nftables stay installed).
# Building the package needs setuptools with bdist_wheel. Offline it comes from the venv itself
# (setuptools >= 70.1) or from Debian/Ubuntu's /usr/share/python-wheels (python3-setuptools-whl
# and python3-wheel-whl); otherwise pip fetches it from PyPI (or your PIP_INDEX_URL /
# PIP_FIND_LINKS). `--wheel FILE` installs a wheel built elsewhere and needs no build at all.
set -euo pipefail

PREFIX=/opt/netspectre
VENV=$PREFIX/venv
MANIFEST=$PREFIX/manifest
BIN=/usr/local/bin/netspectre
CONF_DIR=/etc/netspectre
CONF=$CONF_DIR/netspectre.toml
MAN=/usr/local/share/man/man8/netspectre.8
BASH_COMPLETION=/usr/local/share/bash-completion/completions/netspectre
ZSH_COMPLETION=/usr/local/share/zsh/site-functions/_netspectre
UNIT=netspectre.service
# Created by netspectre itself at run time (netspectre.paths): --uninstall removes them too.
RUNTIME_DIRS=(/run/netspectre /run/netspectre-tor)
DATA_DIR=/var/lib/netspectre

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STAGE=""  # the copy of the checkout pip builds from
WHEEL=""  # --wheel FILE: install this wheel instead of building the checkout
trap 'if [ -n "$STAGE" ]; then rm -rf "$STAGE"; fi' EXIT

say() { printf 'install.sh: %s\n' "$*"; }
die() {  # die STATUS MESSAGE [HINT]
  printf 'install.sh: error: %s\n' "$2" >&2
  [ -z "${3:-}" ] || printf 'hint: %s\n' "$3" >&2
  exit "$1"
}
have() { command -v "$1" >/dev/null 2>&1; }

usage() {
  cat <<'EOF'
usage: sudo ./install.sh [--no-deps] [--wheel FILE]
       sudo ./install.sh --uninstall [--purge]

Install netspectre from this checkout:
  /opt/netspectre/venv                               the package, in its own virtualenv
  /usr/local/bin/netspectre                          the command (a symlink into the venv)
  /etc/netspectre/netspectre.toml                    the default config (an existing one is kept)
  /etc/systemd/system/netspectre.service             the unit (not enabled: `netspectre enable`)
  /usr/local/share/man/man8/netspectre.8             the man page
  /usr/local/share/bash-completion/completions/netspectre, /usr/local/share/zsh/site-functions/_netspectre

  --no-deps    do not install tor, nftables and python3 with the package manager
  --wheel FILE install this netspectre wheel (built elsewhere: pip wheel --no-deps .) instead
               of building the checkout: no network needed
  --uninstall  remove everything the install created (refused while netspectre is active);
               a config you changed is kept, and tor, nftables, python3 stay installed
  --purge      with --uninstall: also remove /etc/netspectre even if you changed the config
EOF
}

# --- the manifest: one "KIND PATH" line per thing created (dir, file, tree, config:SHA256) ---

record() {
  grep -qxF -- "$1 $2" "$MANIFEST" 2>/dev/null || printf '%s %s\n' "$1" "$2" >>"$MANIFEST"
}

owned() {  # is PATH in the manifest (any kind)?
  [ -f "$MANIFEST" ] && awk -v p="$1" '{ k = $1; sub(/^[^ ]+ /, ""); if ($0 == p) f = 1 }
                                       END { exit !f }' "$MANIFEST"
}

make_dirs() {  # mkdir -p DIR, recording each directory created
  local dir=$1 missing=() d
  while [ ! -d "$dir" ]; do missing=("$dir" "${missing[@]}"); dir=$(dirname "$dir"); done
  for d in "${missing[@]}"; do
    mkdir -m 0755 "$d"
    record dir "$d"
  done
}

claim() {  # refuse to replace a file that someone else put there
  if [ -e "$1" ] || [ -L "$1" ]; then
    owned "$1" || die 1 "$1 exists and was not installed by install.sh" \
      "remove it first (an earlier \`pip install\` of netspectre? \`pip uninstall netspectre\`)"
  fi
}

put() {  # put MODE DEST < content: write atomically, record
  local mode=$1 dest=$2
  claim "$dest"
  make_dirs "$(dirname "$dest")"
  cat >"$dest.tmp"
  chmod "$mode" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
  record file "$dest"
}

# --- system packages ---------------------------------------------------------------------------

pkg_missing() {  # print the packages of "$@" that are not installed
  local p
  for p in "$@"; do
    case $PM in
      apt) dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ;;
      pacman) pacman -Q "$p" >/dev/null 2>&1 ;;
      dnf) rpm -q "$p" >/dev/null 2>&1 ;;
    esac || printf '%s\n' "$p"
  done
}

pkg_install() {
  case $PM in
    apt)
      [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" ;;
    pacman) pacman -S --needed --noconfirm "$@" ;;
    dnf) dnf install -y -q "$@" ;;
  esac
}

install_deps() {
  local base missing
  if have apt-get; then PM=apt; base=(tor python3 python3-venv)
  elif have pacman; then PM=pacman; base=(tor python)
  elif have dnf; then PM=dnf; base=(tor python3)
  else
    die 5 "no supported package manager (apt-get, pacman, dnf)" \
      "install tor, nftables (or iptables) and python3 >= 3.11 yourself, then: sudo ./install.sh --no-deps"
  fi
  mapfile -t missing < <(pkg_missing "${base[@]}" nftables)
  if [ "${#missing[@]}" -eq 0 ]; then
    say "$PM: ${base[*]} nftables already installed"
    return
  fi
  say "$PM: installing ${missing[*]}"
  if ! pkg_install "${missing[@]}"; then
    # nftables is preferred, not required: netspectre also drives iptables (nft or legacy).
    mapfile -t missing < <(pkg_missing "${base[@]}")
    [ "${#missing[@]}" -eq 0 ] || pkg_install "${missing[@]}" \
      || die 5 "$PM could not install ${missing[*]}" "install them yourself, then: sudo ./install.sh --no-deps"
    if have iptables || pkg_install iptables; then
      say "warning: nftables could not be installed; netspectre will use iptables"
    else
      die 5 "$PM could install neither nftables nor iptables" "install one, then: sudo ./install.sh --no-deps"
    fi
  fi
}

# --- install -----------------------------------------------------------------------------------

DISTRO_PYTHON=/usr/bin/python3  # what apt, pacman and dnf install (python3 / python)

is_distro_python() {  # is $1 the package manager's interpreter (and so fits its python3-*-whl)?
  [ -x "$DISTRO_PYTHON" ] && [ "$(readlink -f "$1")" = "$(readlink -f "$DISTRO_PYTHON")" ]
}

pick_python() {  # pick_python DEPS: PYTHON if set, else the distro's, else python3 on PATH
  local py=${PYTHON:-} onpath
  onpath=$(command -v python3 || true)
  if [ -z "$py" ] && [ -x "$DISTRO_PYTHON" ]; then
    # pyenv/conda first on PATH is someone's shell setup, not the system's: a venv of it would
    # meet Debian's setuptools wheel (AttributeError: install_layout) and outlive its upgrades.
    py=$DISTRO_PYTHON
    if [ -n "$onpath" ] && ! is_distro_python "$onpath"; then
      say "python3 on PATH is $onpath, not the distro's: using $py (set PYTHON= to choose)" >&2
    fi
  elif [ -z "$py" ] && [ "$1" = 1 ]; then
    die 5 "the package manager's python3 is not at $DISTRO_PYTHON" \
      "set PYTHON=/path/to/the/distro/python3 (not pyenv/conda), then run this again"
  fi
  [ -n "$py" ] || py=$onpath
  [ -n "$py" ] || die 5 "python3 not found" "install python3 >= 3.11 (or run without --no-deps)"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die 5 "$py is Python $("$py" -c 'import platform; print(platform.python_version())'), netspectre needs >= 3.11" \
         "set PYTHON=/path/to/python3.11-or-newer"
  "$py" -c 'import venv, ensurepip' 2>/dev/null \
    || die 5 "$py cannot create virtual environments (no venv/ensurepip module)" \
         "install python3-venv (Debian/Ubuntu), or run without --no-deps"
  printf '%s\n' "$py"
}

can_build_offline() {  # can the venv's own setuptools build a wheel (setuptools >= 70.1 or wheel)?
  "$VENV/bin/python" - 2>/dev/null <<'EOF'
import importlib.util, sys
import setuptools
major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
ok = (major, minor) >= (70, 1) or (major >= 61 and importlib.util.find_spec("wheel") is not None)
sys.exit(0 if ok else 1)
EOF
}

install_package() {
  local py=$1 wheels=/usr/share/python-wheels how=()
  if [ -x "$VENV/bin/python" ] \
     && [ "$("$VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" \
          = "$("$py" -c 'import sys; print(sys.version)')" ]; then
    say "upgrading $VENV"
  else
    say "creating $VENV ($py)"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  record tree "$VENV"
  if [ -n "$WHEEL" ]; then
    how=(--no-index "$WHEEL")
  else
    # Build from a copy: pip's in-tree build would leave root-owned build/ and egg-info in the
    # checkout.
    STAGE=$(mktemp -d)
    tar -C "$SRC" --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md src \
      | tar -C "$STAGE" -xf -
    if can_build_offline; then
      how=(--no-build-isolation "$STAGE")
    elif is_distro_python "$py" && compgen -G "$wheels/setuptools-*.whl" >/dev/null \
         && compgen -G "$wheels/wheel-*.whl" >/dev/null; then
      how=(--no-index --find-links "$wheels" "$STAGE")  # Debian/Ubuntu's python3-*-whl
    else  # (Debian's setuptools wheel fails under any other interpreter: install_layout)
      how=("$STAGE")  # pip fetches setuptools for the build: PyPI, or your PIP_FIND_LINKS
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --force-reinstall "${how[@]}" \
    || die 1 "pip could not install netspectre into $VENV" \
         "offline? build a wheel elsewhere (pip wheel --no-deps .) and use --wheel FILE"
}

do_install() {
  local deps=$1 py config_sum path
  [ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/src/netspectre" ] \
    || die 1 "$SRC is not a netspectre checkout" "run ./install.sh from the repository"
  local target
  for target in "$BIN" "$MAN" "$BASH_COMPLETION" "$ZSH_COMPLETION"; do claim "$target"; done
  if [ "$deps" = 1 ]; then install_deps; else say "--no-deps: not installing tor, nftables, python3"; fi
  py=$(pick_python "$deps")

  if [ -d "$PREFIX" ] && [ ! -f "$MANIFEST" ] && [ -n "$(ls -A "$PREFIX")" ]; then
    die 1 "$PREFIX exists and was not created by install.sh" "move it away, then run this again"
  fi
  make_dirs "$PREFIX"
  record dir "$PREFIX"
  install_package "$py"

  claim "$BIN"
  make_dirs "$(dirname "$BIN")"
  ln -sfn "$VENV/bin/netspectre" "$BIN"
  record file "$BIN"

  if [ -e "$CONF" ]; then
    say "kept the existing $CONF"
  else
    make_dirs "$CONF_DIR"
    install -m 0644 "$SRC/etc/netspectre.toml" "$CONF"
    config_sum=$(sha256sum "$CONF" | cut -d' ' -f1)
    record "config:$config_sum" "$CONF"
  fi

  "$BIN" _man | put 0644 "$MAN"
  "$BIN" _completion bash | put 0644 "$BASH_COMPLETION"
  "$BIN" _completion zsh | put 0644 "$ZSH_COMPLETION"

  make_dirs /etc/systemd/system
  while IFS= read -r path; do
    [ -n "$path" ] && record file "$path"
  done < <("$BIN" _units --root / --exec "$BIN")
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi

  say "installed $("$BIN" --version) ($BIN → $VENV)"
  say "config: $CONF; man netspectre; the unit is not enabled (sudo netspectre enable)"
}

# --- uninstall ---------------------------------------------------------------------------------

refuse_if_active() {
  local state=""
  if [ -d /run/netspectre ]; then  # netns-NAME/ holds the state of other network namespaces
    state=$(find /run/netspectre \( -name state.json -o -name lockdown.json \) -print -quit)
  fi
  if [ -z "$state" ] && [ -x "$BIN" ] && "$BIN" --json status 2>/dev/null | "$VENV/bin/python" 2>/dev/null -c '
import json, sys
data = json.load(sys.stdin)
busy = ("active", "phase", "leftover_rules", "lockdown")
sys.exit(0 if any(data.get(key) for key in busy) else 1)'
  then
    state="netspectre status"
  fi
  if [ -n "$state" ]; then
    die 6 "netspectre is active ($state): uninstalling would leave its firewall rules with no way to lift them" \
      "run \`sudo netspectre stop\` first"
  fi
}

do_uninstall() {
  local purge=$1 entries=() i kind path left=() kept=()
  if [ ! -f "$MANIFEST" ]; then
    say "nothing to remove ($MANIFEST not found: not installed by install.sh)"
    return 0
  fi
  refuse_if_active
  if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
    say "disabling $UNIT"
    "$BIN" disable || die 1 "\`netspectre disable\` failed; nothing was removed" \
      "fix what it says, or: systemctl disable $UNIT; then run this again"
  fi
  mapfile -t entries <"$MANIFEST"
  rm -f "$MANIFEST"
  for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
    kind=${entries[i]%% *}
    path=${entries[i]#* }
    case $kind in
      file) rm -f "$path" ;;
      tree) rm -rf "$path" ;;
      config:*)
        if [ "$purge" = 1 ] || [ "$(sha256sum "$path" 2>/dev/null | cut -d' ' -f1)" = "${kind#config:}" ]; then
          rm -f "$path"
        elif [ -e "$path" ]; then
          kept+=("$path")
        fi ;;
      dir) rmdir "$path" 2>/dev/null || { [ ! -d "$path" ] || left+=("$path"); } ;;
    esac
  done
  if [ "$purge" = 1 ]; then rm -rf "$CONF_DIR"; fi
  # Tor's cached consensus and state, written by netspectre at run time: ours, not the user's.
  rm -rf "${RUNTIME_DIRS[@]}" "$DATA_DIR"
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
  say "removed netspectre (${#entries[@]} manifest entries, ${RUNTIME_DIRS[*]} and $DATA_DIR)"
  for path in "${kept[@]}"; do
    say "kept $path: you changed it (--uninstall --purge removes it)"
  done
  for path in "${left[@]}"; do say "kept $path: not empty (files in it are not ours)"; done
  say "tor, nftables and python3 stay installed (remove them with your package manager)"
}

main() {
  local action=install deps=1 purge=0 arg want_wheel=0
  for arg in "$@"; do
    if [ "$want_wheel" = 1 ]; then WHEEL=$arg; want_wheel=0; continue; fi
    case $arg in
      --uninstall) action=uninstall ;;
      --purge) purge=1 ;;
      --no-deps) deps=0 ;;
      --wheel) want_wheel=1 ;;
      --wheel=*) WHEEL=${arg#--wheel=} ;;
      -h|--help) usage; exit 0 ;;
      *) die 2 "unknown argument: $arg" "./install.sh --help" ;;
    esac
  done
  [ "$want_wheel" = 0 ] || die 2 "--wheel needs a file" "./install.sh --wheel dist/netspectre-*.whl"
  [ "$purge" = 0 ] || [ "$action" = uninstall ] || die 2 "--purge goes with --uninstall" "sudo ./install.sh --uninstall --purge"
  if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || die 2 "--wheel $WHEEL: no such file" "build one: pip wheel --no-deps -w dist ."
    WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
  fi
  if [ "$(id -u)" -ne 0 ]; then
    die 4 "must run as root (it installs into /opt, /usr/local and /etc)" "sudo ./install.sh${*:+ $*}"
  fi
  umask 022
  if [ "$action" = install ]; then do_install "$deps"; else do_uninstall "$purge"; fi
}

main "$@"
