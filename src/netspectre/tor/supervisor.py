"""The long-running `netspectre _supervise`: runs tor as its child and brings it back when it dies.

It never touches the firewall: while tor is down the kill switch simply holds (nothing leaves).
It waits on signals (SIGCHLD, SIGTERM, …) through a wakeup pipe, so a dead tor is noticed at
once and a stop request interrupts any backoff; there are no polling sleeps.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from typing import IO

from netspectre import system
from netspectre.tor import process
from netspectre.tor.layout import Files

FIRST_BACKOFF = 0.2  # seconds before the first restart: a killed tor comes back at once
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a tor that ran this long resets the backoff
STOP_TIMEOUT = 10.0


def tor_argv(tor: str, files: Files) -> list[str]:
    # --defaults-torrc /dev/null: the distribution's defaults (Debian's sets User, a
    # ControlSocket, SocksPort 9050 …) must not leak into the tor we configure.
    return [tor, "-f", str(files.torrc), "--defaults-torrc", os.devnull]


class _Signals:
    """Python handlers write each signal number to a pipe; select() on it wakes us."""

    WATCHED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        for sig in self.WATCHED:
            signal.signal(sig, lambda signum, frame: None)

    def wait(self, timeout: float | None) -> set[int]:
        """Signals received within `timeout` (None: until one arrives)."""
        ready, _, _ = select.select([self.read_fd], [], [], timeout)
        if not ready:
            return set()
        try:
            return set(os.read(self.read_fd, 512))
        except BlockingIOError:
            return set()


def _stop_child(child: subprocess.Popen[bytes], signals: _Signals) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    while child.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            child.kill()
            child.wait()
            return
        signals.wait(left)


def run(
    files: Files,
    *,
    tor: str,
    log: IO[str],
    prepare: Callable[[], None] = lambda: None,
) -> int:
    """Supervise until SIGTERM/SIGINT; then stop tor and return 0.

    `prepare` runs before every start of tor (launch uses it to re-check directory access).
    """
    def note(message: str) -> None:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor[{os.getpid()}]: {message}\n")
        log.flush()

    signals = _Signals()
    process.write_pid(files.supervisor_pid, os.getpid())
    backoff = FIRST_BACKOFF
    child: subprocess.Popen[bytes] | None = None
    note("started")
    try:
        while True:
            try:
                prepare()
            except Exception as exc:  # logged; tor reports its own error next
                note(f"preparing tor's directories failed: {exc}")
            child = system.spawn(tor_argv(tor, files), stdout=log, stderr=subprocess.STDOUT)
            process.write_pid(files.tor_pid, child.pid)
            started = time.monotonic()
            note(f"tor started (pid {child.pid})")
            stop = False
            while child.poll() is None and not stop:
                got = signals.wait(None)
                stop = bool(got & {signal.SIGTERM, signal.SIGINT})
                if signal.SIGHUP in got and child.poll() is None:
                    child.send_signal(signal.SIGHUP)  # tor re-reads its torrc
            if stop:
                break
            ran = time.monotonic() - started
            if ran >= STABLE_AFTER:
                backoff = FIRST_BACKOFF
            process.remove(files.tor_pid)
            code = child.returncode
            how = f"signal {-code}" if code < 0 else f"status {code}"
            note(f"tor (pid {child.pid}) exited with {how} after {ran:.1f} s; "
                 f"restarting in {backoff:g} s (the firewall keeps blocking meanwhile)")
            deadline = time.monotonic() + backoff
            while (left := deadline - time.monotonic()) > 0:
                if signals.wait(left) & {signal.SIGTERM, signal.SIGINT}:
                    stop = True
                    break
            if stop:
                break
            backoff = min(backoff * 2, MAX_BACKOFF)
    finally:
        if child is not None:
            _stop_child(child, signals)
            note(f"tor (pid {child.pid}) stopped")
        process.remove(files.tor_pid)
        if process.read_pid(files.supervisor_pid) == os.getpid():
            process.remove(files.supervisor_pid)
        note("exiting")
        with contextlib.suppress(OSError):
            os.close(signals.read_fd)
    return 0
