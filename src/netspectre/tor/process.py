"""The managed tor's processes: pid files, "is this pid ours?", ending them, who holds a port.

A pid file is only a hint: before any signal, /proc/<pid> must show our supervisor (its cwd is
our tor_run) or our tor (its argv names our torrc), so a stale file never kills a stranger.
Signals go through a pidfd opened before that check, so a recycled pid cannot be hit either.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from netspectre.tor.layout import Files

PROC = Path("/proc")


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def write_pid(path: Path, pid: int) -> None:
    """Atomically (temp file + rename): a reader never sees half a number."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def alive(pid: int, proc: Path = PROC) -> bool:
    """Exists and is not a zombie."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()
    return bool(state) and state[0] not in ("Z", "X")


def cmdline(pid: int, proc: Path = PROC) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_our_tor(pid: int, files: Files, proc: Path = PROC) -> bool:
    argv = cmdline(pid, proc)
    torrc = str(files.torrc)
    return any(a == "-f" and b == torrc for a, b in zip(argv, argv[1:], strict=False))


def is_our_supervisor(pid: int, files: Files, proc: Path = PROC) -> bool:
    argv = cmdline(pid, proc)
    if "_supervise" not in argv or not any("netspectre" in a for a in argv):
        return False
    try:
        return os.readlink(proc / str(pid) / "cwd") == os.path.realpath(files.run)
    except OSError:
        return False


def ours(files: Files, proc: Path = PROC) -> dict[str, int]:
    """Live, verified processes of this tor_run: {"supervisor": pid, "tor": pid}."""
    found: dict[str, int] = {}
    sup = read_pid(files.supervisor_pid)
    if sup is not None and alive(sup, proc) and is_our_supervisor(sup, files, proc):
        found["supervisor"] = sup
    for path in (files.tor_pid, files.daemon_pid):
        pid = read_pid(path)
        if pid is not None and alive(pid, proc) and is_our_tor(pid, files, proc):
            found["tor"] = pid
            break
    return found


def _wait_gone(pid: int, pidfd: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(max(0.0, timeout) * 1000)
    # A pidfd turns readable on exit; a child of ours stays a zombie, which alive() ignores.
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(
    pid: int, verify: Callable[[int], bool], *, timeout: float = 10.0
) -> bool:
    """SIGTERM, then SIGKILL after `timeout`, if verify(pid) holds.

    True when no process of ours is left at `pid`: it is gone, or it is not ours (a stale pid
    file naming a recycled pid), which is left alone.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        pidfd = None  # kernel without pidfd (< 5.3): plain kill after the same check
    try:
        if not alive(pid) or not verify(pid):
            return True

        def send(sig: signal.Signals) -> None:
            with contextlib.suppress(ProcessLookupError):
                if pidfd is not None:
                    signal.pidfd_send_signal(pidfd, sig)
                else:
                    os.kill(pid, sig)

        send(signal.SIGTERM)
        if _wait_gone(pid, pidfd, timeout):
            return True
        send(signal.SIGKILL)
        return _wait_gone(pid, pidfd, 5.0)
    finally:
        if pidfd is not None:
            os.close(pidfd)


# -- who holds a port (for clash reports) ------------------------------------------------------


def _inodes(port: int, tables: Iterable[str], proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in tables:
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            listening = state == "0A" if table.startswith("tcp") else state == "07"
            if listening and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def port_owners(port: int, *, udp: bool, proc: Path = PROC) -> list[int]:
    """Pids holding a listening (TCP) or bound (UDP) socket on `port`; needs root to see all."""
    inodes = _inodes(port, ("udp", "udp6") if udp else ("tcp", "tcp6"), proc)
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    pids: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(pids)


def describe(pid: int, proc: Path = PROC) -> str:
    """'tor (pid 812, uid 105)' for a clash message."""
    try:
        comm = (proc / str(pid) / "comm").read_text().strip()
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return f"pid {pid}"
    uid = next((ln.split()[2] for ln in status.splitlines() if ln.startswith("Uid:")), "?")
    return f"{comm} (pid {pid}, uid {uid})"
