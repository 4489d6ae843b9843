"""The lab's processes: start tor and the Python servers as daemons inside a namespace, find
them again (pid files, and every process left in a lab namespace), measure and stop them by PID.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import netspectre
from netspectre import system
from netspectre.errors import Error, TorError
from netspectre.lab.network import ns_argv
from netspectre.lab.spec import LabSpec

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class Proc:
    pid: int
    name: str  # the pid file's stem or directory ("auth1", "web", ...), or the command
    rss_kib: int
    ns: str  # the lab namespace it runs in, "" if none


def start_tor(ns: str, torrc: Path, *, defaults: Path) -> None:
    """tor with RunAsDaemon returns once its child has opened every listener, or fails."""
    tor = system.require("tor")
    result = system.run(
        ns_argv(ns, [tor, "--defaults-torrc", str(defaults), "-f", str(torrc)]), check=False
    )
    if result.returncode != 0:
        # tor explains itself on stdout, in [warn] and [err] lines after a notice banner.
        out = (result.stdout + result.stderr).splitlines()
        why = [ln.split("] ", 1)[-1] for ln in out if "[warn]" in ln or "[err]" in ln]
        raise TorError(
            f"tor failed to start with {torrc} (exit {result.returncode}): "
            + ("; ".join(why[-3:]) or (out[-1] if out else "no output")),
            f"see {torrc.parent / 'notice.log'}",
        )


def python_argv(module: str, args: Sequence[str]) -> list[str]:
    """`python -m netspectre.lab.<module> ARGS` with this very netspectre importable."""
    src = str(Path(netspectre.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return ["env", f"PYTHONPATH={path}", sys.executable, "-m", f"netspectre.lab.{module}", *args]


def start_python(ns: str, module: str, args: Sequence[str]) -> None:
    """A lab server, which detaches once its sockets are bound."""
    system.run(ns_argv(ns, python_argv(module, args)))


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_files(spec: LabSpec) -> dict[str, Path]:
    """{name: pid file}: <dir>/<name>.pid for the servers, <dir>/<name>/tor.pid for tors."""
    found: dict[str, Path] = {}
    if spec.dir.is_dir():
        for p in sorted(spec.dir.glob("*.pid")):
            found[p.stem] = p
        for p in sorted(spec.dir.glob("*/tor.pid")):
            found[p.parent.name] = p
    return found


def _ns_inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace"
        )
    except OSError:
        return ""


def namespace_pids(ns: str) -> list[int]:
    if not (NETNS_DIR / ns).exists():
        return []
    out = system.run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def find(spec: LabSpec) -> list[Proc]:
    """Every live process of the lab: those in its namespaces, and those named by its pid files
    that still run our lab's commands (so a recycled pid is never taken for ours)."""
    inodes = {ino: ns for ns in spec.namespaces if (ino := _ns_inode(NETNS_DIR / ns))}
    names = {pid: name for name, f in pid_files(spec).items() if (pid := read_pid(f))}
    procs: dict[int, Proc] = {}
    for ns in spec.namespaces:
        for pid in namespace_pids(ns):
            if _alive(pid):
                procs[pid] = Proc(pid, names.get(pid, _cmdline(pid)[:60]), _rss_kib(pid), ns)
    for pid, name in names.items():
        if pid in procs or not _alive(pid):
            continue
        ino = _ns_inode(Path(f"/proc/{pid}/ns/net"))
        if (ino is not None and ino in inodes) or str(spec.dir) in _cmdline(pid):
            procs[pid] = Proc(pid, name, _rss_kib(pid), inodes.get(ino or -1, ""))
    return sorted(procs.values(), key=lambda p: p.pid)


def stop(pids: Iterable[int], *, grace: float = 5.0) -> list[Error]:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; by PID only."""
    failures: list[Error] = []
    pending = set(pids)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except OSError as exc:
            failures.append(Error(f"cannot signal pid {pid}: {exc}"))
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if _alive(p)}
        if pending:
            time.sleep(0.05)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except OSError as exc:
            failures.append(Error(f"cannot kill pid {pid}: {exc}"))
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if _alive(p)}
        if pending:
            time.sleep(0.05)
    failures += [Error(f"pid {pid} is still running after SIGKILL") for pid in pending]
    return failures
