"""A throwaway root: an overlay of the host's / in a private mount and network namespace.

Everything written under it lands in the overlay's upper directory (tmp), never on the host;
`leftovers()` lists what an install + uninstall left there.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC_IN_ROOT = "/tmp/netspectre-src"  # where the checkout copy appears inside the root
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What apt, pip, python, man and our own test steps may legitimately leave in the upper dir.
ALLOWED = (
    "/root/.cache/",  # pip's cache
    "/var/cache/",  # man-db, apt
    "/var/log/",
    "/var/lib/apt/",
    "/var/lib/dpkg/",
    "/var/lib/systemd/",
    "/etc/ld.so.cache",
)


@dataclass
class Result:
    argv: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ {self.argv}\n(exit {self.returncode})\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


@dataclass
class ThrowawayRoot:
    base: Path
    holder: subprocess.Popen[bytes] | None = None
    log: list[Result] = field(default_factory=list)

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def merged(self) -> Path:
        return self.base / "merged"

    def start(self) -> None:
        for name in ("upper", "work", "merged", "src"):
            (self.base / name).mkdir()
        copy_checkout(self.base / "src")
        own = os.readlink("/proc/self/ns/mnt")
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             "sleep", "infinity"])
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == own:
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise RuntimeError("unshare did not create a mount namespace")
            time.sleep(0.01)
        m = self.merged
        layers = f"lowerdir=/,upperdir={self.upper},workdir={self.base / 'work'}"
        self._nsenter(f"""
            set -e
            mount -t overlay netspectre-test -o {layers} {m}
            mount -t proc proc {m}/proc
            mount -t sysfs sysfs {m}/sys
            mount --rbind /dev {m}/dev
            mount -t tmpfs -o mode=0755 tmpfs {m}/run
            mount -t tmpfs -o mode=1777 tmpfs {m}/tmp
            mkdir {m}{SRC_IN_ROOT}
            mount --bind {self.base / 'src'} {m}{SRC_IN_ROOT}
            ip link set lo up
        """)

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            os.kill(self.holder.pid, signal.SIGKILL)  # the namespace and its mounts go with it
            self.holder.wait()

    def _nsenter(self, script: str, *, timeout: float = 300) -> Result:
        assert self.holder is not None
        proc = subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "bash", "-c", script],
            capture_output=True, text=True, timeout=timeout)
        result = Result(script.strip(), proc.returncode, proc.stdout, proc.stderr)
        if proc.returncode != 0 and "set -e" in script:
            raise RuntimeError(f"namespace setup failed\n{result}")
        return result

    def run(self, command: str, *, user: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> Result:
        """Run a shell command chrooted into the overlay (only if it really is the overlay)."""
        m = self.merged
        environ = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "PIP_NO_INDEX": "1",
                   **(env or {})}
        assignments = " ".join(f"{k}={_quote(v)}" for k, v in environ.items())
        inner = f"cd {SRC_IN_ROOT} && {command}"
        drop = "" if user is None else (
            f"setpriv --reuid={user} --regid={user} --clear-groups ")
        script = (
            f'[ "$(findmnt -n -o FSTYPE --mountpoint {m})" = overlay ] '
            f"|| {{ echo 'not the overlay: refusing to run' >&2; exit 99; }}\n"
            f"exec chroot {m} env -i {assignments} {drop}bash -c {_quote(inner)}")
        result = self._nsenter(script, timeout=timeout)
        result.argv = command if user is None else f"({user}) {command}"
        self.log.append(result)
        assert result.returncode != 99, str(result)
        return result

    def ok(self, command: str, **kwargs: object) -> Result:
        result = self.run(command, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, str(result)
        return result

    def leftovers(self, allowed: Iterable[str] = ALLOWED) -> list[str]:
        """What the upper dir holds beyond the directories the host already has: files,
        links, new directories, changed modes/owners, and whiteouts (deleted host files)."""
        return changes(self.upper, allowed)


def copy_checkout(dest: Path) -> None:
    """The work tree as it is (uncommitted changes too), without venv, VCS and build output."""
    shutil.copytree(REPO, dest, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", "build", "dist", "results"))


def changes(upper: Path, allowed: Iterable[str] = ALLOWED) -> list[str]:
    allowed = tuple(allowed)
    found = []
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            host = "/" + str(path.relative_to(upper))
            if host.startswith(allowed) or (host + "/").startswith(allowed):
                continue
            if host == SRC_IN_ROOT:  # the mount point of the checkout copy (on /tmp's tmpfs)
                continue
            st = path.lstat()
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append(f"deleted from the host image: {host}")
            elif stat.S_ISDIR(st.st_mode):
                try:
                    lower = os.lstat(host)
                except FileNotFoundError:
                    found.append(f"new directory: {host}/")
                    continue
                if (st.st_mode, st.st_uid, st.st_gid) != (lower.st_mode, lower.st_uid,
                                                          lower.st_gid):
                    found.append(f"changed directory: {host} ({oct(lower.st_mode)} → "
                                 f"{oct(st.st_mode)})")
            elif stat.S_ISLNK(st.st_mode):
                found.append(f"symlink: {host} → {os.readlink(path)}")
            else:
                found.append(f"file: {host}")
    return found


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
