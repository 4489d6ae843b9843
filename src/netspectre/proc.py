"""Processes by pid: pid files, "is it alive?", and ending them (SIGTERM, then SIGKILL).

The one implementation for netspectre's managed tor and for the lab's daemons. A pid is only a
hint: the caller's verify(pid) must confirm it is ours before any signal, and signals go through
a pidfd opened before that check, so a recycled pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from netspectre.fsutil import write_atomic

PROC = Path("/proc")


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def rss_kib(pid: int, proc: Path = PROC) -> int:
    """The process's resident memory (VmRSS) in KiB; 0 when it is gone or hidden."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def write_pid(path: Path, pid: int) -> None:
    """Atomically (temp file + rename): a reader never sees half a number."""
    write_atomic(path, f"{pid}\n", mode=0o644, sync=False)


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


def _wait_gone(pidfds: dict[int, int | None], timeout: float) -> set[int]:
    """Wait until none of the pids is alive or `timeout` passed; return those still alive."""
    deadline = time.monotonic() + timeout
    pending = set(pidfds)
    while True:
        # A pidfd turns readable on exit; a child of ours stays a zombie, which alive() ignores.
        pending = {pid for pid in pending if alive(pid)}
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            return pending
        fds = [fd for pid in pending if (fd := pidfds[pid]) is not None]
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.poll(min(left, 0.05) * 1000)
        else:
            time.sleep(min(left, 0.05))


def terminate_all(
    pids: Iterable[int], verify: Callable[[int], bool], *, timeout: float = 10.0,
    kill_timeout: float = 5.0,
) -> set[int]:
    """SIGTERM to each pid for which verify(pid) holds, SIGKILL to those left after `timeout`.

    Returns the pids still running after SIGKILL (or that could not be signalled). A pid that
    is gone, or not ours (a stale pid file naming a recycled pid), counts as done and is left
    alone.
    """
    pidfds: dict[int, int | None] = {}
    try:
        for pid in set(pids):
            try:
                pidfds[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            except OSError:
                pidfds[pid] = None  # kernel without pidfd (< 5.3): plain kill after the check
            if not alive(pid) or not verify(pid):
                fd = pidfds.pop(pid)
                if fd is not None:
                    os.close(fd)
        failed: set[int] = set()

        def send(sig: signal.Signals, targets: Iterable[int]) -> None:
            for pid in targets:
                fd = pidfds[pid]
                try:
                    if fd is not None:
                        signal.pidfd_send_signal(fd, sig)
                    else:
                        os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                except OSError:
                    failed.add(pid)

        send(signal.SIGTERM, pidfds)
        left = _wait_gone(pidfds, timeout)
        send(signal.SIGKILL, left)
        return _wait_gone({pid: pidfds[pid] for pid in left}, kill_timeout) | failed
    finally:
        for fd in pidfds.values():
            if fd is not None:
                os.close(fd)


def terminate(pid: int, verify: Callable[[int], bool], *, timeout: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `timeout`, if verify(pid) holds.

    True when no process of ours is left at `pid`: it is gone, or it is not ours, which is
    left alone.
    """
    return not terminate_all([pid], verify, timeout=timeout)
