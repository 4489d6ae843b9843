"""Who holds a socket: /proc/net/{tcp,udp,…}{,6} → socket inode → the pid whose fd points at it
(needs root to see every process). tor/process asks for a port's listeners, watch for the
program behind a refused packet (`Programs`, cached, best effort).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from netspectre.proc import PROC

TCP_LISTEN, UDP_BOUND = "0A", "07"
# The tables per IP protocol number; ICMP echo sockets list the echo id as their port, raw
# sockets their protocol.
TABLES = {6: ("tcp", "tcp6"), 17: ("udp", "udp6"), 1: ("icmp",), 58: ("icmp6",)}


@dataclass(frozen=True)
class Entry:
    table: str
    local: str  # hex as the kernel prints it
    port: int
    state: str
    inode: str


def entries(tables: Iterable[str], proc: Path = PROC) -> list[Entry]:
    found: list[Entry] = []
    for table in tables:
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, _, port = fields[1].rpartition(":")
            try:
                found.append(Entry(table, local, int(port, 16), fields[3], fields[9]))
            except ValueError:
                continue
    return found


def hex_address(address: bytes) -> str:
    """Packed address bytes → the kernel's /proc/net spelling (host-order 32-bit words)."""
    words = struct.unpack(f"={len(address) // 4}I", address)
    return "".join(f"{w:08X}" for w in words)


def owners(inodes: Iterable[str], proc: Path = PROC) -> dict[str, int]:
    """{socket inode: a pid holding it}, in one walk over /proc/*/fd."""
    wanted = {f"socket:[{i}]": i for i in inodes if i != "0"}
    found: dict[str, int] = {}
    if not wanted:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                inode = wanted.get(os.readlink(entry / "fd" / fd))
            except OSError:
                continue
            if inode is not None and inode not in found:
                found[inode] = int(entry.name)
                if len(found) == len(wanted):
                    return found
    return found


def listeners(port: int, *, udp: bool, proc: Path = PROC) -> list[int]:
    """Pids holding a listening (TCP) or bound (UDP) socket on `port`."""
    tables = ("udp", "udp6") if udp else ("tcp", "tcp6")
    state = UDP_BOUND if udp else TCP_LISTEN
    inodes = [e.inode for e in entries(tables, proc) if e.port == port and e.state == state]
    return sorted(set(owners(inodes, proc).values()))


def comm(pid: int, proc: Path = PROC) -> str | None:
    try:
        return (proc / str(pid) / "comm").read_text().strip() or None
    except OSError:
        return None


UNKNOWN = "?"


class Programs:
    """The program behind a local (protocol, address, port), cached for `ttl` seconds.

    Best effort: a socket closed before we look (a refused TCP connect is gone once the reset
    arrives) or an unreadable /proc gives "?".
    """

    def __init__(self, *, proc: Path = PROC, ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc = proc
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[tuple[int, str, int], tuple[str, float]] = {}

    def lookup(self, proto: int, address: bytes, port: int | None) -> str:
        if port is None or proto not in TABLES:
            return UNKNOWN
        key = (proto, address.hex(), port)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        name = self._find(proto, address, port)
        if len(self._cache) > 4096:
            self._cache = {k: v for k, v in self._cache.items() if now - v[1] < self.ttl}
        # A miss is kept for a moment only: the same port may belong to a new socket soon.
        self._cache[key] = (name, now if name != UNKNOWN else now - self.ttl + 1.0)
        return name

    def _find(self, proto: int, address: bytes, port: int) -> str:
        candidates = [e for e in entries(TABLES[proto], self.proc) if e.port == port]
        if not candidates:
            return UNKNOWN
        spelled = {hex_address(address)}
        if len(address) == 4:  # an IPv6 socket sending IPv4 lists ::ffff:a.b.c.d
            spelled.add(hex_address(b"\0" * 10 + b"\xff\xff" + address))
        candidates.sort(key=lambda e: e.local not in spelled)  # the exact address first
        found = owners([e.inode for e in candidates], self.proc)
        for e in candidates:
            if e.inode in found:
                return comm(found[e.inode], self.proc) or UNKNOWN
        return UNKNOWN
