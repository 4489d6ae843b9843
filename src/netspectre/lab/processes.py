"""The lab's processes: start tor and the Python servers as daemons inside a namespace, find
them again (pid files, and every process left in a lab namespace), measure and stop them by PID.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netspectre import proc, system
from netspectre.errors import Error, TorError
from netspectre.lab.network import ns_argv
from netspectre.lab.spec import LabSpec
from netspectre.proc import alive
from netspectre.proc import read_pid as read_pid

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


def self_command(*args: str, module: str) -> list[str]:
    """system.self_argv as one argv (`env PYTHONPATH=… python -P -m MODULE ARGS`), for
    ns_argv: the logged command stays one a user can copy and run."""
    argv, env = system.self_argv(*args, module=module)
    return ["env", f"PYTHONPATH={env['PYTHONPATH']}", *argv]


def python_argv(module: str, args: Sequence[str]) -> list[str]:
    """`python -m netspectre.lab.<module> ARGS` with this very netspectre importable."""
    return self_command(*args, module=f"netspectre.lab.{module}")


def start_python(ns: str, module: str, args: Sequence[str]) -> None:
    """A lab server, which detaches once its sockets are bound."""
    system.run(ns_argv(ns, python_argv(module, args)))


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
            if alive(pid):
                procs[pid] = Proc(pid, names.get(pid, _cmdline(pid)[:60]), proc.rss_kib(pid), ns)
    for pid, name in names.items():
        if pid in procs or not alive(pid):
            continue
        ino = _ns_inode(Path(f"/proc/{pid}/ns/net"))
        if (ino is not None and ino in inodes) or str(spec.dir) in _cmdline(pid):
            procs[pid] = Proc(pid, name, proc.rss_kib(pid), inodes.get(ino or -1, ""))
    return sorted(procs.values(), key=lambda p: p.pid)


def stop(pids: Iterable[int], *, grace: float = 5.0) -> list[Error]:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; by PID only (find() chose them)."""
    left = proc.terminate_all(pids, lambda _: True, timeout=grace, kill_timeout=2.0)
    return [Error(f"pid {pid} is still running after SIGKILL") for pid in sorted(left)]
