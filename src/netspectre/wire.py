"""ICMP on the wire, just enough for our probes: an echo request and what a reply says about it.
Pure (bytes in, bytes or values out), beside dnswire; used by `verify`'s probes and the lab's.
"""

from __future__ import annotations

import struct
from enum import Enum

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = (0, 129)
UNREACHABLE = (3, 1)  # ICMP destination unreachable, ICMPv6 destination unreachable


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): a packet carrying it sums to 0."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, payload: bytes, *, seq: int = 1) -> bytes:
    """An ICMP (family 4) or ICMPv6 (6) echo request. The kernel computes the ICMPv6 checksum
    itself (it covers a pseudo-header only it knows), so only the IPv4 one is filled in."""
    body = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, ident, seq) + payload
    if family == 4:
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    return body


class Echo(Enum):
    REPLY = "reply"  # our echo came back
    UNREACHABLE = "unreachable"  # someone refused it


def icmp_message(data: bytes, family: int) -> bytes:
    """The ICMP message in what a raw socket received: IPv4 raw sockets include the IP header."""
    if family == 6 or not data:
        return data
    return data[(data[0] & 0x0F) * 4:]


def classify(message: bytes, ident: int, *, quoted: bool = False) -> Echo | None:
    """What an ICMP message says about our echo `ident`: its reply, an unreachable, or nothing
    (another's echo, garbage). quoted: an unreachable counts only if it quotes our ident."""
    if len(message) < 8:
        return None
    if message[0] in ECHO_REPLY and struct.unpack("!H", message[4:6])[0] == ident:
        return Echo.REPLY
    if message[0] in UNREACHABLE and (not quoted or ident.to_bytes(2, "big") in message[8:]):
        return Echo.UNREACHABLE
    return None
