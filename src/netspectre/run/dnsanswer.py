"""The run's DNS responder, on the wire: read one question, build the answer. Pure.

What it answers (the relay asks Tor, see relay.py): A with the address Tor's exit resolved;
`.onion` A with an address from the run's own map (the relay connects by name); AAAA with no
data (Tor's SOCKS resolve gives IPv4 first; IPv6 literals still go through Tor); NOTIMP for
every other type, as Tor's DNSPort does.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from netspectre.dnswire import CLASS_IN, TYPE_A, TYPE_AAAA

NOERROR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 2, 3, 4, 5
TTL = 60


@dataclass(frozen=True)
class Question:
    ident: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    raw: bytes  # the question section as sent (echoed in the answer)


def read(packet: bytes) -> Question | None:
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


def answer(q: Question, rcode: int, addresses: tuple[str, ...] = ()) -> bytes:
    """The reply: recursion available, the question echoed, one record per address."""
    records = b""
    for text in addresses:
        addr = ipaddress.ip_address(text)
        rtype = TYPE_A if addr.version == 4 else TYPE_AAAA
        records += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(addr.packed))
        records += addr.packed
    flags = 0x8000 | (q.flags & 0x0100) | 0x0080 | rcode
    return struct.pack("!HHHHHH", q.ident, flags, 1, len(addresses), 0, 0) + q.raw + records


def wanted(q: Question) -> str:
    """What the responder does with a question: "a", "onion", "empty" or "notimp"."""
    if q.qclass != CLASS_IN:
        return "notimp"
    if q.qtype == TYPE_A:
        return "onion" if q.name.endswith(".onion") else "a"
    if q.qtype == TYPE_AAAA:
        return "empty"
    return "notimp"
