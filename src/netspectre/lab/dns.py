"""A tiny authoritative UDP DNS responder for the lab: A/AAAA for a few names (`echo.test` →
the web server), NXDOMAIN for the rest. Serves the exits (the "internet" resolver) and the LAN
resolver. `resolver.test` answers the address the query arrived on, so a test can tell which
resolver answered (the LAN's, or the exit's through Tor).
Run as `python -m netspectre.lab.dns --listen ADDR:PORT ... --name NAME=ADDR ...`.
"""

from __future__ import annotations

import argparse
import ipaddress
import selectors
import socket
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from netspectre.dnswire import CLASS_IN, TYPE_A, TYPE_AAAA
from netspectre.lab.daemon import detach
from netspectre.lab.web import parse_listen

TTL = 60
WHOAMI = "resolver.test"

Records = Mapping[str, Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]]


def _question(packet: bytes) -> tuple[str, int, int, int] | None:
    """Parse the first question: (lowercased name, qtype, qclass, end offset)."""
    pos, labels = 12, []
    while True:
        if pos >= len(packet):
            return None
        n = packet[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(packet):
            return None
        labels.append(packet[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    if pos + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack("!HH", packet[pos : pos + 4])
    return ".".join(labels).lower(), qtype, qclass, pos + 4


def answer(
    packet: bytes,
    records: Records,
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
) -> bytes | None:
    """The response to one query, or None for garbage. The question is echoed byte for byte:
    resolvers (Tor's included) randomise the name's case and check it comes back unchanged.
    """
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    q = _question(packet)
    if q is None:
        return None
    name, qtype, qclass, end = q
    rd = flags & 0x0100
    answers: list[bytes] = []
    rcode = 0
    known = dict(records)
    if local is not None:
        known[WHOAMI] = [local]
    if name not in known:
        rcode = 3
    elif qclass == CLASS_IN:
        for addr in known[name]:
            rtype = TYPE_A if addr.version == 4 else TYPE_AAAA
            if rtype == qtype:
                rdata = addr.packed
                answers.append(
                    struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(rdata)) + rdata
                )
    header = struct.pack(
        "!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, len(answers), 0, 0
    )
    return header + packet[12:end] + b"".join(answers)


def serve(listen: Sequence[tuple[str, int]]) -> list[socket.socket]:
    socks = []
    for host, port in listen:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((host, port))
        socks.append(s)
    return socks


def loop(socks: Sequence[socket.socket], records: Records) -> None:
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ, ipaddress.ip_address(s.getsockname()[0]))
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                packet, peer = sock.recvfrom(4096)
            except OSError:
                continue
            reply = answer(packet, records, key.data)
            if reply is not None:
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass


def parse_name(text: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    name, _, addr = text.partition("=")
    return name.lower().rstrip("."), ipaddress.ip_address(addr)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netspectre.lab.dns")
    ap.add_argument("--listen", action="append", required=True, help="ADDR:PORT or [ADDR6]:PORT")
    ap.add_argument("--name", action="append", default=[], help="NAME=ADDR (repeatable)")
    ap.add_argument("--pidfile", type=Path)
    ap.add_argument("--log", type=Path, default=Path("/dev/null"))
    args = ap.parse_args(argv)
    records: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
    for item in args.name:
        name, addr = parse_name(item)
        records.setdefault(name, []).append(addr)
    socks = serve([parse_listen(x) for x in args.listen])
    if args.pidfile:
        detach(pidfile=args.pidfile, log=args.log)
    loop(socks, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
