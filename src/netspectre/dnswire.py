"""DNS on the wire, just enough for our probes and responders: one-question queries, the
addresses in a reply, a query's question and the reply to it. Pure (bytes in, bytes or values
out); used by `verify`'s probes, the lab's resolver and `netspectre run`'s responder."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
TTL = 60


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


@dataclass(frozen=True)
class Question:
    ident: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    raw: bytes  # the question section as sent (echoed in the answer)


def read_query(packet: bytes) -> Question | None:
    """The one question of a query; None for a reply, garbage or several questions."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount != 1 or (flags >> 11) & 0xF != 0:
        return None
    pos, labels = 12, []
    while True:
        if pos >= len(packet):
            return None
        size = packet[pos]
        if size == 0:
            pos += 1
            break
        if size & 0xC0 or pos + 1 + size > len(packet):
            return None
        labels.append(packet[pos + 1:pos + 1 + size])
        pos += 1 + size
    if pos + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack("!HH", packet[pos:pos + 4])
    try:
        name = b".".join(labels).decode("ascii").lower()
    except UnicodeDecodeError:
        return None
    return Question(ident, flags, name, qtype, qclass, packet[12:pos + 4])


def reply(q: Question, rcode: int, addresses: tuple[str, ...] = (), *,
          authoritative: bool = False) -> bytes:
    """The reply: recursion available, the question echoed byte for byte (resolvers, Tor's
    included, randomise the name's case and check it comes back unchanged), one record per
    address."""
    records = b""
    for text in addresses:
        addr = ipaddress.ip_address(text)
        rtype = TYPE_A if addr.version == 4 else TYPE_AAAA
        records += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(addr.packed))
        records += addr.packed
    flags = 0x8000 | (0x0400 if authoritative else 0) | (q.flags & 0x0100) | 0x0080 | rcode
    return struct.pack("!HHHHHH", q.ident, flags, 1, len(addresses), 0, 0) + q.raw + records
