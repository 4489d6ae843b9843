"""install.sh on a fresh, minimal Debian (debootstrap --variant=minbase) in a chroot.

The overlay tests start from this machine, where tor, nftables and python3-venv are already
installed. This one starts from a system that has none of them: apt installs them for real
from the Debian registry. Then netspectre must work from PATH, `--uninstall` must remove
everything of ours, and a second install + uninstall must leave the root byte for byte as the
first uninstall left it (only the packages stay). The Debian package gets the same test:
`apt install ./netspectre_*.deb` pulls tor and nftables, an upgrade keeps an edited config,
removal while active is refused, and `apt purge` leaves nothing of ours. Each test works on its
own copy of one debootstrap.

The chroot shares the host's network (apt needs the registry), but nothing in it starts a
daemon (policy-rc.d) or touches a firewall: it installs files and runs only `--version` and
`rules` (which renders without applying).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.install.debpkg import VERSION, build
from tests.install.throwaway import copy_checkout

pytestmark = pytest.mark.root

MINBASE_SECONDS = 300
OURS = ("/opt/netspectre", "/usr/local/bin/netspectre", "/etc/netspectre",
        "/etc/systemd/system/netspectre.service", "/usr/local/share/man/man8/netspectre.8",
        "/usr/local/share/bash-completion/completions/netspectre",
        "/usr/local/share/zsh/site-functions/_netspectre", "/var/lib/netspectre",
        "/run/netspectre")
# Files that change on their own between two identical runs (apt's and dpkg's logs and state).
VOLATILE = ("/var/log/", "/var/cache/", "/var/lib/apt/", "/var/lib/dpkg/", "/tmp/", "/proc/",
            "/dev/", "/run/", "/root/.cache/", "/etc/ld.so.cache")


def _host_release() -> dict[str, str]:
    values = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value.strip('"')
    return values


def _mirror() -> str:
    """The Debian mirror this host's apt uses (the registry CI can reach)."""
    texts = [p.read_text() for p in Path("/etc/apt").glob("sources.list*") if p.is_file()]
    texts += [p.read_text() for p in Path("/etc/apt/sources.list.d").glob("*") if p.is_file()]
    for text in texts:
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] or words[:1] == ["deb"]:  # deb822 or one-line format
                for url in words[1:]:
                    if re.fullmatch(r"https?://\S+/debian/?", url):
                        return url
    return "http://deb.debian.org/debian"


class Chroot:
    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """bash -c script inside the chroot, in a private mount namespace (proc, dev, /run)."""
        p = self.path
        wrapper = (f"mount -t proc proc {p}/proc && mount --rbind /dev {p}/dev && "
                   f"mount --make-rslave {p}/dev && mount -t tmpfs tmpfs {p}/run && "
                   f"exec chroot {p} /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:"
                   "/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "
                   "DEBIAN_FRONTEND=noninteractive /bin/bash -c \"$0\"")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               wrapper, script], capture_output=True, text=True,
                              timeout=timeout)

    def ok(self, script: str, timeout: float = 600) -> str:
        done = self.run(script, timeout)
        assert done.returncode == 0, f"$ {script}\n(exit {done.returncode})\n{done.stdout}\n" \
                                     f"{done.stderr}"
        return done.stdout

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path / path.lstrip("/"))

    def snapshot(self) -> dict[str, str]:
        """path → content hash (or link target / 'dir'), outside the volatile places."""
        seen: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = "/" + os.path.relpath(dirpath, self.path).lstrip(".")
            rel = rel if rel != "/" else ""
            for name in dirnames + filenames:
                path = f"{rel}/{name}"
                if path.startswith(VOLATILE) or (path + "/").startswith(VOLATILE):
                    continue
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    seen[path] = "-> " + os.readlink(full)
                elif os.path.isdir(full):
                    seen[path] = f"dir {os.stat(full).st_mode:o}"
                elif os.path.isfile(full):
                    with open(full, "rb") as f:
                        seen[path] = hashlib.sha256(f.read()).hexdigest()
        return seen


def _debootstrap(target: Path, suite: str) -> None:
    argv = ["debootstrap", "--variant=minbase", suite, str(target), _mirror()]
    for _attempt in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MINBASE_SECONDS)
        if done.returncode == 0:
            return
        shutil.rmtree(target, ignore_errors=True)
    said = done.stdout[-1500:] + done.stderr[-1500:]
    if re.search(r"Failed getting release file|Couldn't download|Temporary failure|"
                 r"Could not resolve", said):
        pytest.skip(f"the Debian registry did not answer debootstrap: {said[-300:]}")
    raise AssertionError(f"debootstrap failed:\n{said}")


def _unmount_and_remove(base: Path, target: Path) -> None:
    # A mount left by an interrupted run would make rmtree walk into /dev or /proc.
    for sub in ("dev", "proc", "run"):
        subprocess.run(["umount", "-R", str(target / sub)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def minbase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One debootstrap per module, never used directly: each test gets a copy (`fresh`)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot, mount namespaces)")
    release = _host_release()
    if release.get("ID") != "debian" or not release.get("VERSION_CODENAME"):
        pytest.skip(f"debootstrap of Debian runs on Debian hosts (this is {release.get('ID')})")
    assert shutil.which("debootstrap"), "debootstrap missing (scripts/test installs it)"
    base = tmp_path_factory.mktemp("debootstrap")
    target = base / "root"
    try:
        _debootstrap(target, release["VERSION_CODENAME"])
        # Nothing in the chroot may start a daemon (tor's postinst would), and apt needs DNS.
        policy = target / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shutil.copy("/etc/resolv.conf", target / "etc/resolv.conf")
        yield target
    finally:
        _unmount_and_remove(base, target)


@pytest.fixture
def fresh(minbase: Path, tmp_path_factory: pytest.TempPathFactory,
          wheel: Path) -> Iterator[Chroot]:
    """A copy of the minbase root (a few seconds), with the checkout and its wheel in
    /root/netspectre."""
    base = tmp_path_factory.mktemp("minbase-copy")
    target = base / "root"
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(minbase), str(target)], check=True,
                       timeout=MINBASE_SECONDS)
        src = target / "root/netspectre"
        copy_checkout(src)
        (src / "dist").mkdir()
        shutil.copy(wheel, src / "dist")
        yield Chroot(target)
    finally:
        _unmount_and_remove(base, target)


def test_fresh_debian_install_works_and_uninstall_leaves_only_the_packages(
        fresh: Chroot) -> None:
    c = fresh
    assert c.run("command -v tor || command -v nft").returncode != 0, \
        "minbase already has tor or nft: this would not test the package step"
    files = ("find /opt /usr/local -mindepth 1 ! -type d; "
             "find /etc/systemd -name 'netspectre*'")
    before = c.ok(files).split()
    out = c.ok("cd /root/netspectre && ./install.sh --wheel dist/netspectre-*.whl")
    assert re.search(r"apt: installing .*tor.*nftables", out), out
    assert c.ok("tor --version | head -1").startswith("Tor version")
    assert c.ok("nft --version").startswith("nftables")
    assert c.ok("cd / && netspectre --version").strip() == "netspectre 0.1.0"
    assert "table inet netspectre {" in c.ok("cd / && netspectre rules --backend nft")
    for path in OURS[:7]:
        assert c.exists(path), f"{path} not installed\n{out}"

    out = c.ok("cd /root/netspectre && ./install.sh --uninstall")
    for path in OURS:
        assert not c.exists(path), f"{path} left after --uninstall\n{out}"
    assert c.ok(files).split() == before, "files left in /opt, /usr/local or systemd's dirs"
    after_first = c.snapshot()

    # Again, now that the packages are there: install + uninstall must be an exact no-op.
    c.ok("cd /root/netspectre && ./install.sh --wheel dist/netspectre-*.whl && "
         "./install.sh --uninstall")
    after_second = c.snapshot()
    added = sorted(set(after_second) - set(after_first))
    removed = sorted(set(after_first) - set(after_second))
    changed = sorted(p for p in set(after_first) & set(after_second)
                     if after_first[p] != after_second[p])
    assert (added, removed, changed) == ([], [], []), (
        f"install + uninstall changed the root:\nadded {added[:20]}\nremoved {removed[:20]}\n"
        f"changed {changed[:20]}")


# The Debian package (scripts/build-deb): what it installs, and what netspectre and
# `netspectre enable` write; after `apt purge` none of it may be left.
DEB_PATHS = ("/usr/lib/python3/dist-packages/netspectre", "/usr/bin/netspectre",
             "/etc/netspectre", "/usr/lib/systemd/system/netspectre.service",
             "/etc/systemd/system/netspectre.service", "/usr/share/man/man8/netspectre.8.gz",
             "/usr/share/bash-completion/completions/netspectre",
             "/usr/share/zsh/vendor-completions/_netspectre", "/usr/share/doc/netspectre",
             "/var/lib/netspectre")
WANTS = "/etc/systemd/system/sysinit.target.wants/netspectre.service"  # `netspectre enable`
# Each run() gets a fresh /run: a state file there makes netspectre "active" for that command.
ACTIVE = "mkdir -p /run/netspectre && echo '{}' > /run/netspectre/state.json && "
# What netspectre writes while running (Tor's data, runtime dirs): purge removes it.
RAN = ("mkdir -p /var/lib/netspectre/tor /run/netspectre/tor /run/netspectre-tor && "
       "echo consensus > /var/lib/netspectre/tor/cached-consensus && ")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """This version's package, and a newer build of the same tree (to upgrade to)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not found")
    out = tmp_path_factory.mktemp("debs")
    return build(out), build(out, local="test1")


def _new_packages(apt_output: str) -> set[str]:
    found = re.search(r"The following NEW packages will be installed:\n((?:  .*\n)+)",
                      apt_output)
    assert found, apt_output
    return set(found.group(1).split())


def _diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted({p for p in before.keys() | after.keys() if before.get(p) != after.get(p)})


def test_the_deb_installs_upgrades_refuses_removal_while_active_and_purges_clean(
        fresh: Chroot, debs: tuple[Path, Path]) -> None:
    c = fresh
    (c.path / "root/debs").mkdir()
    for deb in debs:
        shutil.copy(deb, c.path / "root/debs")
    old, new = (f"/root/debs/{deb.name}" for deb in debs)
    # What the checks below need (man, completions, systemctl for `enable`), not netspectre.
    c.ok("apt-get update -qq && apt-get install -y -qq --no-install-recommends "
         "man-db zsh bash-completion systemd", timeout=900)
    assert c.run("command -v tor || command -v nft").returncode != 0, \
        "tor or nft already there: this would not test the dependencies"
    pristine = c.snapshot()

    # apt pulls tor and nftables from the registry; nothing starts, nothing is enabled.
    out = c.ok(f"apt-get install -y --no-install-recommends {old} && test ! -e /run/netspectre",
               timeout=900)
    assert {"netspectre", "tor", "nftables"} <= _new_packages(out), out
    assert c.ok("tor --version | head -1").startswith("Tor version")
    assert c.ok("nft --version").startswith("nftables")
    assert c.ok("command -v netspectre").strip() == "/usr/bin/netspectre"
    assert c.ok("cd / && netspectre --version").strip() == f"netspectre {VERSION}"
    assert c.ok("cd / && python3 -c 'import netspectre; print(netspectre.__file__)'").startswith(
        "/usr/lib/python3/dist-packages/netspectre/")
    assert "table inet netspectre {" in c.ok("cd / && netspectre rules --backend nft")
    man = c.ok("man -P cat 8 netspectre")
    assert re.search(r"NAME\s+netspectre", man) and "start" in man, man[:500]
    assert "netspectre" in c.ok(
        "bash -c '. /usr/share/bash-completion/bash_completion; "
        "__load_completion netspectre && complete -p netspectre'")
    assert c.ok("zsh -c 'autoload -Uz compinit && compinit -u && "
                "print -r -- ${_comps[netspectre]}'").strip() == "_netspectre"
    assert c.run("systemctl is-enabled netspectre.service").stdout.strip() == "disabled"
    assert not c.exists("/etc/systemd/system/netspectre.service") and not c.exists(WANTS)

    # `netspectre enable` works with the packaged command; an upgrade keeps an edited config
    # and the enabled unit, and goes ahead while active (refusing would push users to lift
    # the kill switch just to upgrade).
    config = c.path / "etc/netspectre/netspectre.toml"
    c.ok("sed -i 's/^trans_port = 9040$/trans_port = 9041/' /etc/netspectre/netspectre.toml")
    edited = config.read_text()
    assert "trans_port = 9041" in edited
    c.ok("cd / && netspectre enable")
    unit = (c.path / "etc/systemd/system/netspectre.service").read_text()
    assert re.search(r"^ExecStart=/usr/bin/netspectre .*start --boot$", unit, re.M), unit
    assert os.path.islink(c.path / WANTS.lstrip("/"))
    c.ok(f"apt-get install -y --no-install-recommends {new}")
    version = "dpkg-query -W -f='${Status} ${Version}' netspectre"
    assert c.ok(version) == f"install ok installed {VERSION}+test1"
    assert config.read_text() == edited, "the upgrade replaced the edited config"
    assert os.path.islink(c.path / WANTS.lstrip("/")), "the upgrade disabled the unit"
    c.ok(f"{ACTIVE}apt-get install -y --reinstall {new} && test -f /run/netspectre/state.json")

    # Removal while active is refused, and leaves everything as it was.
    refused = c.run(f"{ACTIVE}apt-get remove -y netspectre")
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "netspectre is active" in said and "sudo netspectre stop" in said, said
    assert c.ok(version) == f"install ok installed {VERSION}+test1"
    assert c.ok("cd / && netspectre --version").strip() == f"netspectre {VERSION}"
    assert os.path.islink(c.path / WANTS.lstrip("/")) and config.read_text() == edited

    # Purge (inactive): disables the unit, removes every file of ours.
    installed = c.ok("dpkg-query -L netspectre").split("\n")
    out = c.ok(f"{RAN}apt-get purge -y netspectre && "
               "! ls -d /run/netspectre /run/netspectre-tor 2>/dev/null")
    assert "netspectre disable" in out, out
    candidates = [p for p in (*installed, *DEB_PATHS, WANTS)
                  if p not in ("", "/.") and c.exists(p) and p not in pristine]
    # Directories another package owns stay (python3's dist-packages): only ours count.
    unowned = "".join(f"dpkg-query -S {shlex.quote(p)} >/dev/null 2>&1 || echo {shlex.quote(p)}; "
                      for p in candidates)
    left = c.ok(unowned or "true").split()
    assert not left, f"left after apt purge: {left}"
    after_first = c.snapshot()
    ours = [p for p in _diff(pristine, after_first) if "netspectre" in p]
    assert not ours, f"apt install + purge changed: {ours}"

    # Again, now that tor and nftables are there: install + purge is an exact no-op.
    c.ok(f"apt-get install -y --no-install-recommends {old} && cd / && netspectre enable && "
         f"{RAN}apt-get purge -y netspectre")
    after_second = c.snapshot()
    assert _diff(after_first, after_second) == [], (
        f"apt install + purge changed the root: {_diff(after_first, after_second)[:20]}")


def test_the_snapshot_sees_added_removed_and_changed_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/a").write_text("1")
    (tmp_path / "etc/b").write_text("1")
    (tmp_path / "var/log").mkdir(parents=True)
    first = Chroot(tmp_path).snapshot()
    (tmp_path / "etc/a").write_text("2")
    (tmp_path / "etc/b").unlink()
    (tmp_path / "etc/c").symlink_to("a")
    (tmp_path / "var/log/x").write_text("volatile")
    second = Chroot(tmp_path).snapshot()
    assert sorted(set(second) - set(first)) == ["/etc/c"]
    assert sorted(set(first) - set(second)) == ["/etc/b"]
    assert [p for p in first if p in second and first[p] != second[p]] == ["/etc/a"]
