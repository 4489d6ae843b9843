"""What `watch` yields once a second: typed frames (counters with rates, Tor, refused attempts),
and the tally that aggregates refused packets per (uid, program, class, destination). Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from netspectre.packets import Packet

MAX_ATTEMPTS = 1000  # aggregates kept; the least recently seen go first (bounded memory)


@dataclass(frozen=True)
class Attempt:
    """Refused packets of one (uid, program, class, destination), with their count."""

    uid: int | None  # None: no local socket (forwarded, or a packet without an owner)
    program: str  # "?" when the socket was gone before we looked
    counter: str  # the names.COUNTERS class whose rule refused it
    proto: str
    dst: str
    port: int | None
    label: str
    count: int
    first: float
    last: float

    @property
    def key(self) -> tuple[object, ...]:
        return (self.uid, self.program, self.counter, self.proto, self.dst, self.port)

    def to_json(self) -> dict[str, Any]:
        return {"type": "refused", "uid": self.uid, "program": self.program,
                "class": self.counter, "proto": self.proto, "dst": self.dst, "port": self.port,
                "label": self.label, "count": self.count, "first": self.first,
                "last": self.last}


@dataclass(frozen=True)
class CounterRate:
    name: str
    packets: int
    bytes: int
    rate: float  # packets per second since the previous read

    def to_json(self) -> dict[str, Any]:
        return {"packets": self.packets, "bytes": self.bytes, "rate": round(self.rate, 2)}


@dataclass(frozen=True)
class TorLive:
    """Tor as its control port says now; `error` when it cannot be asked."""

    bootstrap: int | None = None
    summary: str = ""
    circuits: int | None = None  # BUILT circuits
    read: int | None = None  # bytes, traffic/read
    written: int | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "summary": self.summary, "circuits": self.circuits,
                "read": self.read, "written": self.written, "error": self.error}


@dataclass(frozen=True)
class Frame:
    at: float
    backend: str
    counters: tuple[CounterRate, ...]
    tor: TorLive
    attempts: tuple[Attempt, ...]  # every aggregate, the most recent first
    changed: tuple[Attempt, ...]  # new or grown since the previous frame
    summary: bool  # a periodic summary is due (plain and JSON output)
    lost: int = 0  # log messages the kernel dropped (our socket buffer was full)

    @property
    def refused(self) -> int:
        return sum(a.count for a in self.attempts)

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", "at": self.at, "backend": self.backend,
                "counters": {c.name: c.to_json() for c in self.counters},
                "tor": self.tor.to_json(), "refused": self.refused,
                "sources": len(self.attempts), "lost": self.lost}


class Tally:
    """Refused packets → aggregates; `changed()` hands out what grew since it was last asked."""

    def __init__(self, limit: int = MAX_ATTEMPTS) -> None:
        self.limit = limit
        self._attempts: dict[tuple[object, ...], Attempt] = {}
        self._changed: set[tuple[object, ...]] = set()

    def add(self, *, uid: int | None, program: str, counter: str, packet: Packet,
            at: float) -> Attempt:
        new = Attempt(uid=uid, program=program, counter=counter, proto=packet.proto_name,
                      dst=packet.dst, port=packet.dport, label=packet.label, count=1,
                      first=at, last=at)
        old = self._attempts.pop(new.key, None)  # re-inserted: dict order is recency
        attempt = new if old is None else replace(old, count=old.count + 1, last=at)
        self._attempts[attempt.key] = attempt
        self._changed.add(attempt.key)
        while len(self._attempts) > self.limit:
            gone = next(iter(self._attempts))
            del self._attempts[gone]
            self._changed.discard(gone)
        return attempt

    def all(self) -> tuple[Attempt, ...]:
        return tuple(reversed(self._attempts.values()))

    def changed(self) -> tuple[Attempt, ...]:
        found = tuple(a for a in self.all() if a.key in self._changed)
        self._changed.clear()
        return found


def rates(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]],
          seconds: float) -> tuple[CounterRate, ...]:
    """Two counter reads → each counter with its packets per second in between."""
    out = []
    for name, now in after.items():
        then = before.get(name, now)
        delta = max(0, now["packets"] - then["packets"])
        out.append(CounterRate(name, now["packets"], now["bytes"],
                               delta / seconds if seconds > 0 else 0.0))
    return tuple(out)
