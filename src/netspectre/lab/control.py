"""The lab's view of its own tors' ControlSockets: netspectre's control client
(tor/control.py) with the few calls the lab makes, errors as TorError.

Unix sockets ignore network namespaces, so the host side can watch tors inside the lab without
any route into it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from netspectre.tor.control import Controller


class Control:
    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = path
        self._timeout = timeout
        self._ctl = Controller.connect(path, timeout=timeout)
        try:
            self._ctl.authenticate()
        except BaseException:
            self._ctl.close()
            raise

    def __enter__(self) -> Control:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._ctl.close()

    def command(self, line: str) -> list[str]:
        return [ln.text for ln in self._ctl.command(line, timeout=self._timeout).lines]

    def getinfo(self, key: str) -> str:
        return self._ctl.getinfo(key)[key]

    def events(self, *, timeout: float) -> Iterator[str]:
        """Yield asynchronous events (already subscribed with SETEVENTS) until timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self._ctl.next_event(left)
            if event is None:
                return
            yield event.text


def consensus_relays(ns_all: str) -> dict[str, set[str]]:
    """Parse `GETINFO ns/all` into {nickname: flags}."""
    relays: dict[str, set[str]] = {}
    nick = ""
    for line in ns_all.splitlines():
        if line.startswith("r "):
            nick = line.split()[1]
            relays[nick] = set()
        elif line.startswith("s ") and nick:
            relays[nick] = set(line.split()[1:])
    return relays
