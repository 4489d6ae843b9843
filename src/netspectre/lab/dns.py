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
from collections.abc import Mapping, Sequence
from pathlib import Path

from netspectre import dnswire
from netspectre.dnswire import CLASS_IN, TYPE_A, TYPE_AAAA
from netspectre.lab.daemon import detach
from netspectre.lab.web import parse_listen

WHOAMI = "resolver.test"

Records = Mapping[str, Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]]


def answer(
    packet: bytes,
    records: Records,
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
) -> bytes | None:
    """The authoritative response to one query, or None for garbage."""
    q = dnswire.read_query(packet)
    if q is None:
        return None
    known = dict(records)
    if local is not None:
        known[WHOAMI] = [local]
    if q.name not in known:
        return dnswire.reply(q, 3, authoritative=True)
    wanted = {TYPE_A: 4, TYPE_AAAA: 6}.get(q.qtype) if q.qclass == CLASS_IN else None
    found = tuple(str(a) for a in known[q.name] if a.version == wanted)
    return dnswire.reply(q, 0, found, authoritative=True)


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
