"""The lab's view of its own tors' ControlSockets: tor/control.py's Controller, authenticated,
plus the event stream and the consensus parsing the lab needs. Errors are TorError.

Unix sockets ignore network namespaces, so the host side can watch tors inside the lab without
any route into it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from netspectre.tor.control import Controller


def connect(path: Path, *, timeout: float = 10.0) -> Controller:
    """An authenticated connection to a lab tor (NULL or cookie auth, as its torrc says);
    a context manager that closes it."""
    ctl = Controller.connect(path, timeout=timeout)
    try:
        ctl.authenticate()
    except BaseException:
        ctl.close()
        raise
    return ctl


def getinfo(path: Path, key: str, *, timeout: float = 10.0) -> str:
    """One GETINFO value, on a connection of its own."""
    with connect(path, timeout=timeout) as ctl:
        return ctl.getinfo(key)[key]


def events(ctl: Controller, *, timeout: float) -> Iterator[str]:
    """Yield asynchronous events (already subscribed with SETEVENTS) until timeout."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = ctl.next_event(left)
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
