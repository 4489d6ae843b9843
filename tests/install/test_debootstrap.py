"""install.sh on a fresh, minimal Debian (debootstrap --variant=minbase) in a chroot.

The overlay tests start from this machine, where tor, nftables and python3-venv are already
installed. This one starts from a system that has none of them: apt installs them for real
from the Debian registry. Then netspectre must work from PATH, `--uninstall` must remove
everything of ours, and a second install + uninstall must leave the root byte for byte as the
first uninstall left it (only the packages stay).

The chroot shares the host's network (apt needs the registry), but nothing in it starts a
daemon (policy-rc.d) or touches a firewall: it installs files and runs only `--version` and
`rules` (which renders without applying).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Chroot]:
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
        src = target / "root/netspectre"
        copy_checkout(src)
        (src / "dist").mkdir()
        shutil.copy(wheel, src / "dist")
        yield Chroot(target)
    finally:
        # A mount left by an interrupted run would make rmtree walk into /dev or /proc.
        for sub in ("dev", "proc", "run"):
            subprocess.run(["umount", "-R", str(target / sub)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


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
