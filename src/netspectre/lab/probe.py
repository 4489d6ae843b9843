"""Small clients run inside the lab's namespaces (`ip netns exec NS python -m
netspectre.lab.probe ...`): an HTTP GET, directly or through a SOCKS5 proxy resolving the name
remotely, and a DNS query. They print one JSON object; exit 1 on failure. No curl/dig needed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from netspectre import dnswire
from netspectre.dnswire import TYPE_A, TYPE_AAAA
from netspectre.errors import Error
from netspectre.lab.web import parse_listen
from netspectre.tor import socks


def socks5_connect(proxy: tuple[str, int], host: str, port: int, timeout: float) -> socket.socket:
    """Connect through a SOCKS5 proxy, letting it resolve host (socks5h): netspectre's own."""
    return socks.connect(proxy, host, port, timeout=timeout)


def http_get(url: str, *, socks: tuple[str, int] | None, timeout: float) -> dict[str, object]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 80
    path = parts.path or "/"
    start = time.monotonic()
    if socks:
        sock = socks5_connect(socks, host, port, timeout)
    else:
        sock = socket.create_connection((host, port), timeout=timeout)
    connected = time.monotonic()
    with sock:
        hosthdr = f"[{host}]" if ":" in host else host
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    done = time.monotonic()
    result: dict[str, object] = {
        "status": status,
        "bytes": len(body),
        "connect_s": round(connected - start, 3),
        "total_s": round(done - start, 3),
    }
    if len(body) <= 4096:
        text = body.decode("utf-8", "replace")
        try:
            result["json"] = json.loads(text)
        except ValueError:
            result["body"] = text
    return result


def dns_query(
    host: str, name: str, qtype: int, *, port: int = 53, timeout: float
) -> dict[str, object]:
    ident = int.from_bytes(os.urandom(2), "big")
    query = dnswire.query(name, ident, qtype)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (host, port))
        reply, _ = sock.recvfrom(4096)
    parsed = dnswire.parse(reply, ident)
    if parsed is None:
        return {"error": f"not a DNS reply to our query: {reply[:16].hex()}"}
    return {"rcode": parsed.rcode, "answers": parsed.answers}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netspectre.lab.probe")
    sub = ap.add_subparsers(dest="what", required=True)
    h = sub.add_parser("http")
    h.add_argument("url")
    h.add_argument("--socks", help="HOST:PORT of a SOCKS5 proxy (name resolved by the proxy)")
    h.add_argument("--timeout", type=float, default=30.0)
    d = sub.add_parser("dns")
    d.add_argument("server", help="the server's address")
    d.add_argument("--port", type=int, default=53)
    d.add_argument("name")
    d.add_argument("--type", choices=("A", "AAAA"), default="A")
    d.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    try:
        if args.what == "http":
            socks = parse_listen(args.socks) if args.socks else None
            result = http_get(args.url, socks=socks, timeout=args.timeout)
        else:
            qtype = TYPE_A if args.type == "A" else TYPE_AAAA
            result = dns_query(
                args.server, args.name, qtype, port=args.port, timeout=args.timeout
            )
    except (OSError, ValueError, Error) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
