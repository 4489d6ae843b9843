"""install.sh in a throwaway root (an overlay of the host's /): install, upgrade, everything
works from PATH, and --uninstall leaves nothing behind. Never run on the real root."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.install.throwaway import SRC_IN_ROOT, ThrowawayRoot, changes

pytestmark = pytest.mark.root

INSTALLED = (
    "/opt/netspectre/venv/bin/netspectre",
    "/opt/netspectre/manifest",
    "/usr/local/bin/netspectre",
    "/etc/netspectre/netspectre.toml",
    "/etc/systemd/system/netspectre.service",
    "/usr/local/share/man/man8/netspectre.8",
    "/usr/local/share/bash-completion/completions/netspectre",
    "/usr/local/share/zsh/site-functions/_netspectre",
)


# Tor's cached data from netspectre runs on this host (other tests, the lab): --uninstall removes
# /var/lib/netspectre, so in the overlay it shows as deleted from the host image.
HOST_DATA = (["deleted from the host image: /var/lib/netspectre"]
             if os.path.exists("/var/lib/netspectre") else [])


def exists(root: ThrowawayRoot, path: str) -> bool:
    return os.path.lexists(root.upper / path.lstrip("/"))


WHEEL = "--wheel dist/netspectre-*.whl"


def test_install_upgrade_uninstall_leaves_nothing(root: ThrowawayRoot) -> None:
    first = root.ok(f"./install.sh {WHEEL}")
    # The package step ran (apt here) and found everything installed: no network needed.
    assert re.search(r"apt: .*already installed", first.stdout), first
    assert "installed netspectre " in first.stdout
    for path in INSTALLED:
        assert exists(root, path), f"{path} not installed\n{first}"
    assert os.readlink(root.upper / "usr/local/bin/netspectre") == \
        "/opt/netspectre/venv/bin/netspectre"

    second = root.ok(f"./install.sh --no-deps {WHEEL}")  # upgrade in place
    assert "upgrading /opt/netspectre/venv" in second.stdout
    assert "kept the existing /etc/netspectre/netspectre.toml" in second.stdout
    manifest = (root.upper / "opt/netspectre/manifest").read_text().splitlines()
    assert len(manifest) == len(set(manifest)), "install twice duplicated manifest lines"

    # From PATH, as a user would: version, rules (as root and as nobody), the config.
    assert root.ok("cd / && netspectre --version").stdout.strip() == "netspectre 0.1.0"
    assert "table inet netspectre {" in root.ok("cd / && netspectre rules --backend nft").stdout
    assert "table inet netspectre {" in root.ok("cd / && netspectre rules --backend nft",
                                                user="65534").stdout
    root.ok("/opt/netspectre/venv/bin/python -c '"
            "import dataclasses; from netspectre import config; "
            "c = config.load(None); assert c.path == \"/etc/netspectre/netspectre.toml\"; "
            "assert dataclasses.replace(c, path=None) == config.Config()'")
    # The installed package is the checkout's, not an egg-info of some earlier build.
    root.ok(f"cmp {SRC_IN_ROOT}/src/netspectre/cli.py "
            "$(/opt/netspectre/venv/bin/python -c 'import netspectre.cli as m; print(m.__file__)')")
    assert not list((root.base / "src").glob("**/*.egg-info")), "install wrote into the checkout"

    # The man page is found by `man` through the default manpath, and renders cleanly.
    page = root.ok("MANPAGER=cat MANWIDTH=100 man netspectre 2>&1")
    assert "netspectre start" in page.stdout and "EXIT STATUS" in page.stdout
    assert root.ok("groff -man -Tutf8 -ww -z /usr/local/share/man/man8/netspectre.8 2>&1"
                   ).stdout == ""

    # Completions: bash parses and completes; zsh parses if zsh is there.
    done = root.ok("source /usr/local/share/bash-completion/completions/netspectre && "
                   "COMP_WORDS=(netspectre st) COMP_CWORD=1 && _netspectre && "
                   'echo "${COMPREPLY[*]}"')
    assert set(done.stdout.split()) == {"start", "status", "stop"}
    if shutil.which("zsh"):
        root.ok("zsh -n /usr/local/share/zsh/site-functions/_netspectre")

    # The unit: written, runs our command, not enabled by the install.
    unit = (root.upper / "etc/systemd/system/netspectre.service").read_text()
    assert "ExecStart=/usr/local/bin/netspectre start --boot" in unit
    enabled = root.run("systemctl is-enabled netspectre.service")
    assert enabled.stdout.strip() == "disabled", enabled
    if shutil.which("systemd-analyze"):
        verify = root.run("systemd-analyze verify /etc/systemd/system/netspectre.service")
        ours = [line for line in (verify.stdout + verify.stderr).splitlines()
                if "netspectre" in line]
        assert verify.returncode == 0 and not ours, verify

    removed = root.ok("./install.sh --uninstall")
    assert "tor, nftables and python3 stay installed" in removed.stdout
    assert "netspectre is active" not in removed.stderr
    left = root.leftovers()
    assert left == HOST_DATA, "left behind after --uninstall:\n" + "\n".join(left)
    assert root.ok("command -v netspectre || echo gone").stdout.strip() == "gone"
    again = root.ok("./install.sh --uninstall")  # idempotent
    assert "nothing to remove" in again.stdout


DISTRO_WHEELS = Path("/usr/share/python-wheels")


@pytest.mark.skipif(
    not (list(DISTRO_WHEELS.glob("setuptools-*.whl")) and list(DISTRO_WHEELS.glob("wheel-*.whl"))),
    reason="no offline build tools: apt packages python3-setuptools-whl and python3-wheel-whl "
           "(scripts/test installs them)")
def test_install_builds_the_checkout_offline(root: ThrowawayRoot) -> None:
    """Without --wheel: the checkout is built in the root, from the distro's wheels, with no
    network (the root has its own empty network namespace) and nothing written to it."""
    out = root.ok("./install.sh --no-deps")
    assert "installed netspectre 0.1.0" in out.stdout, out
    assert root.ok("cd / && netspectre --version").stdout.strip() == "netspectre 0.1.0"
    assert not list((root.base / "src").glob("**/*.egg-info")), "install wrote into the checkout"
    assert not (root.base / "src/build").exists(), "install wrote into the checkout"
    root.ok("./install.sh --uninstall")
    assert root.leftovers() == HOST_DATA


def test_uninstall_refuses_while_active(root: ThrowawayRoot) -> None:
    root.ok(f"./install.sh --no-deps {WHEEL}")
    root.ok("install -d -m 0700 /run/netspectre && "
            "echo '{\"version\": 1, \"phase\": \"active\"}' > /run/netspectre/state.json")
    refused = root.run("./install.sh --uninstall")
    assert refused.returncode == 6, refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("install.sh: error: netspectre is active")
    assert lines[1] == "hint: run `sudo netspectre stop` first", refused
    for path in INSTALLED:
        assert exists(root, path), f"{path} removed although uninstall refused"
    root.ok("rm /run/netspectre/state.json")
    # Our table in the firewall (of the root's own network namespace) without a state file:
    # `netspectre status` reports leftover rules, and uninstall still refuses.
    root.ok("nft add table inet netspectre")
    refused = root.run("./install.sh --uninstall")
    assert refused.returncode == 6 and "(netspectre status)" in refused.stderr, refused
    root.ok("nft delete table inet netspectre")
    root.ok("./install.sh --uninstall")
    assert root.leftovers() == HOST_DATA


def test_non_root_changes_nothing(root: ThrowawayRoot) -> None:
    for args in ("", "--uninstall", "--no-deps"):
        refused = root.run(f"./install.sh {args}", user="65534")
        assert refused.returncode == 4, refused
        assert refused.stderr.splitlines() == [
            "install.sh: error: must run as root (it installs into /opt, /usr/local and /etc)",
            f"hint: sudo ./install.sh {args}".rstrip(),
        ], refused
    assert not root.leftovers(), "a refused install changed the root"


def test_changed_config_is_kept_unless_purged(root: ThrowawayRoot) -> None:
    root.ok(f"./install.sh --no-deps {WHEEL}")
    root.ok("sed -i 's/^allow_lan = true/allow_lan = false/' /etc/netspectre/netspectre.toml")
    kept = root.ok("./install.sh --uninstall")
    assert "kept /etc/netspectre/netspectre.toml: you changed it" in kept.stdout
    assert sorted(root.leftovers()) == sorted(["new directory: /etc/netspectre/",
                                               "file: /etc/netspectre/netspectre.toml",
                                               *HOST_DATA])
    reinstalled = root.ok(f"./install.sh --no-deps {WHEEL}")
    assert "kept the existing /etc/netspectre/netspectre.toml" in reinstalled.stdout
    assert "allow_lan = false" in root.ok("cat /etc/netspectre/netspectre.toml").stdout
    root.ok("./install.sh --uninstall --purge")
    assert root.leftovers() == HOST_DATA


def test_a_foreign_netspectre_on_path_is_not_replaced(root: ThrowawayRoot) -> None:
    root.ok("printf '#!/bin/sh\\n' > /usr/local/bin/netspectre && "
            "chmod +x /usr/local/bin/netspectre")
    refused = root.run(f"./install.sh --no-deps {WHEEL}")
    assert refused.returncode == 1
    assert "/usr/local/bin/netspectre exists and was not installed by install.sh" in refused.stderr
    assert root.ok("cat /usr/local/bin/netspectre").stdout == "#!/bin/sh\n"
    assert root.leftovers() == ["file: /usr/local/bin/netspectre"], "refused, yet changed"


def test_nftables_unavailable_falls_back_to_iptables(root: ThrowawayRoot) -> None:
    """The package step with stub apt tools: nftables is missing and cannot be installed."""
    root.ok("mkdir -p /usr/local/sbin && cd /usr/local/sbin && "
            "printf '%s\\n' '#!/bin/sh' 'case \"$*\" in *nftables*) exit 1 ;; esac' "
            "'exec /usr/bin/dpkg-query \"$@\"' > dpkg-query && "
            "printf '%s\\n' '#!/bin/sh' 'echo \"apt-get $*\" >> /tmp/apt.log' "
            "'case \"$*\" in *nftables*) exit 100 ;; esac' > apt-get && "
            "chmod +x dpkg-query apt-get")
    out = root.ok(f"./install.sh {WHEEL}")
    assert "apt: installing nftables" in out.stdout
    assert "warning: nftables could not be installed; netspectre will use iptables" in out.stdout
    assert root.ok("cat /tmp/apt.log").stdout.splitlines() == [
        "apt-get update -qq", "apt-get install -y -qq nftables"]


@pytest.mark.parametrize(("manager", "query", "expected"), [
    ("pacman", "pacman", ["pacman -S --needed --noconfirm tor python nftables"]),
    ("dnf", "rpm", ["dnf install -y -q tor python3 nftables"]),
])
def test_pacman_and_dnf_install_the_same_dependencies(root: ThrowawayRoot, manager: str,
                                                      query: str, expected: list[str]) -> None:
    """Arch and Fedora: apt-get hidden in the throwaway root, stub package tools that log what
    they are asked; every package is reported missing, so all of them are asked for."""
    stub = f"printf '%s\\n' '#!/bin/sh' 'echo \"{manager} $*\" >> /tmp/pm.log' > {manager}"
    if query != manager:  # rpm -q: nothing installed
        stub += f" && printf '%s\\n' '#!/bin/sh' 'exit 1' > {query}"
    else:  # pacman -Q: nothing installed
        stub = (f"printf '%s\\n' '#!/bin/sh' 'case \"$1\" in -Q) exit 1 ;; esac' "
                f"'echo \"{manager} $*\" >> /tmp/pm.log' > {manager}")
    root.ok("rm -f /usr/bin/apt-get && mkdir -p /usr/local/sbin && cd /usr/local/sbin && "
            f"{stub} && chmod +x *")
    out = root.ok(f"./install.sh {WHEEL}")
    assert f"{manager}: installing" in out.stdout, out
    assert root.ok("cat /tmp/pm.log").stdout.splitlines() == expected


def test_uninstall_disables_an_enabled_unit(root: ThrowawayRoot) -> None:
    root.ok(f"./install.sh --no-deps {WHEEL}")
    root.ok("cd / && netspectre enable")
    link = "/etc/systemd/system/sysinit.target.wants/netspectre.service"
    assert exists(root, link)
    # What netspectre writes while running, uninstall removes too.
    root.ok("mkdir -p /var/lib/netspectre/tor /run/netspectre-tor/host && "
            "touch /var/lib/netspectre/tor/state /run/netspectre-tor/host/notice.log")
    out = root.ok("./install.sh --uninstall")
    assert not exists(root, link) and not exists(root, "/etc/systemd/system/netspectre.service")
    assert root.leftovers() == HOST_DATA, out


def test_the_leftover_check_catches_strays(tmp_path: Path) -> None:
    """The detector itself: a planted file, a new directory, a deleted host file (whiteout), a
    changed mode on an existing directory; allowed paths and unchanged directories pass."""
    upper = tmp_path
    (upper / "usr/local/bin").mkdir(parents=True)
    os.chmod(upper / "usr/local/bin", os.stat("/usr/local/bin").st_mode & 0o7777)
    (upper / "usr/local/bin/stray").write_text("x")
    (upper / "opt/netspectre").mkdir(parents=True)
    (upper / "etc").mkdir()
    os.chmod(upper / "etc", 0o700)
    os.mknod(upper / "etc/hostname", 0o600 | 0o020000, 0)  # an overlayfs whiteout
    (upper / "var/cache/man").mkdir(parents=True)
    (upper / "var/cache/man/index.db").write_text("x")
    found = changes(upper)
    assert "file: /usr/local/bin/stray" in found
    assert "new directory: /opt/netspectre/" in found
    assert "deleted from the host image: /etc/hostname" in found
    assert any(line.startswith("changed directory: /etc ") for line in found)
    assert not [line for line in found if "/var/cache" in line or line.endswith("/usr/local/bin")]


def _foreign_python() -> str:
    """A python3 that is not the distro's: this test's own interpreter when it is one (pyenv,
    conda, a source build), else the distro's under another name (still caught by the log)."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    if base.is_file() and base.resolve() != Path("/usr/bin/python3").resolve():
        return str(base)
    return "/usr/bin/python3"


def test_a_foreign_python3_first_on_path_is_not_used(root: ThrowawayRoot) -> None:
    """pyenv/conda python3 first on PATH: install.sh builds with the distro's /usr/bin/python3
    (a foreign interpreter with Debian's setuptools wheel dies in pip: `install_layout`).
    Built from the checkout, the way that crashed, when the distro's build wheels are there."""
    root.ok("mkdir -p /usr/local/bin && printf '%s\\n' '#!/bin/sh' "
            "'echo \"$0 $*\" >> /tmp/foreign-python.log' "
            f"'exec {_foreign_python()} \"$@\"' > /usr/local/bin/python3 && "
            "chmod +x /usr/local/bin/python3")
    assert root.ok("command -v python3").stdout.strip() == "/usr/local/bin/python3"
    offline = (list(DISTRO_WHEELS.glob("setuptools-*.whl"))
               and list(DISTRO_WHEELS.glob("wheel-*.whl")))
    out = root.run("./install.sh --no-deps" if offline else f"./install.sh {WHEEL}")
    assert out.returncode == 0, out
    assert "creating /opt/netspectre/venv (/usr/bin/python3)" in out.stdout, out
    assert "python3 on PATH is /usr/local/bin/python3, not the distro" in out.stderr, out
    assert not exists(root, "/tmp/foreign-python.log"), \
        root.run("cat /tmp/foreign-python.log").stdout
    assert "home = /usr/bin" in root.ok("cat /opt/netspectre/venv/pyvenv.cfg").stdout
    assert root.ok("cd / && netspectre --version").stdout.strip() == "netspectre 0.1.0"
