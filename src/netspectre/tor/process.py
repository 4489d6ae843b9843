"""The managed tor's processes: pid files, "is this pid ours?", ending them, who holds a port.

A pid file is only a hint: before any signal, /proc/<pid> must show our supervisor (its cwd is
our tor_run) or our tor (its argv names our torrc), so a stale file never kills a stranger.
Signals go through a pidfd opened before that check, so a recycled pid cannot be hit either.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from netspectre import sockets
from netspectre.proc import PROC, alive
from netspectre.proc import read_pid as read_pid
from netspectre.proc import remove as remove
from netspectre.proc import terminate as terminate
from netspectre.proc import write_pid as write_pid
from netspectre.tor.layout import Files


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


# -- who holds a port (for clash reports) ------------------------------------------------------


def port_owners(port: int, *, udp: bool, proc: Path = PROC) -> list[int]:
    """Pids holding a listening (TCP) or bound (UDP) socket on `port`; needs root to see all."""
    return sockets.listeners(port, udp=udp, proc=proc)


def describe(pid: int, proc: Path = PROC) -> str:
    """'tor (pid 812, uid 105)' for a clash message."""
    try:
        comm = (proc / str(pid) / "comm").read_text().strip()
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return f"pid {pid}"
    uid = next((ln.split()[2] for ln in status.splitlines() if ln.startswith("Uid:")), "?")
    return f"{comm} (pid {pid}, uid {uid})"


def port_in_use(port: int, *, udp: bool, host: str = "127.0.0.1") -> bool:
    """Would tor fail to bind host:port? (SO_REUSEADDR like tor, so TIME_WAIT does not count.)

    A bind test, not a connect: a connection to the TransPort makes tor try to reach itself
    through an exit and log "No Tor server allows exit to …:9040" on every `status`.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        return True
    finally:
        s.close()
    return False
