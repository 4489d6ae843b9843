"""DNS on the wire, just enough for our probes: one-question queries and the addresses in a
reply. Pure (bytes in, bytes or values out); used by `verify`'s probes and the lab's."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1


def query(name: str, ident: int, qtype: int = TYPE_A) -> bytes:
    """A recursive query for one name."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return (struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0"
            + struct.pack("!HH", qtype, CLASS_IN))


@dataclass(frozen=True)
class Reply:
    rcode: int
    answers: list[str]  # the A and AAAA addresses, in order


def parse(reply: bytes, ident: int) -> Reply | None:
    """The reply to query `ident`; None for anything else (another id, a query, garbage)."""
    if len(reply) < 12:
        return None
    rid, flags, qdcount, ancount = struct.unpack("!HHHH", reply[:8])
    if rid != ident or not flags & 0x8000:
        return None
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(reply, pos) + 4
    answers = []
    for _ in range(ancount):
        pos = _skip_name(reply, pos)
        if pos + 10 > len(reply):
            break
        rtype, _cls, _ttl, size = struct.unpack("!HHIH", reply[pos:pos + 10])
        pos += 10
        data = reply[pos:pos + size]
        if (rtype, size) in ((TYPE_A, 4), (TYPE_AAAA, 16)) and len(data) == size:
            answers.append(str(ipaddress.ip_address(data)))
        pos += size
    return Reply(flags & 0xF, answers)


def _skip_name(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        if size & 0xC0 == 0xC0:
            return pos + 2
        if size == 0:
            return pos + 1
        pos += size + 1
    return pos
