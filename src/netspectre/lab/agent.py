"""The lab's clients, run inside one of its namespaces: HTTP (direct or via SOCKS5, the name
resolved by the proxy), TCP connect, UDP datagram, ICMP echo, DNS over UDP/TCP. No curl/dig.

`python -m netspectre.lab.agent '<JSON list>'` runs a batch at once and prints one JSON list of
results, in order; every failure to reach the target is a result ({"error": ...}), not a crash
(`lab demo`, bench/lab.py). `python -m netspectre.lab.agent http URL [--socks H:P]` and
`... dns SERVER NAME` run one probe and print its JSON object; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from netspectre import dnswire, wire
from netspectre.dnswire import TYPE_A, TYPE_AAAA
from netspectre.errors import Error
from netspectre.lab.web import parse_listen
from netspectre.tor import socks

Probe = dict[str, Any]


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def http(p: Probe) -> dict[str, Any]:
    """GET url; the peer address shows where the name went (an .onion: the virtual network)."""
    parts = urlsplit(p["url"])
    host, port, path = parts.hostname or "", parts.port or 80, parts.path or "/"
    timeout = float(p.get("timeout", 10.0))
    start = time.monotonic()
    if p.get("socks_user"):
        sock = _socks_as(parse_listen(p["socks"]), p["socks_user"], host, port, timeout)
    elif p.get("socks"):
        sock = socks.connect(parse_listen(p["socks"]), host, port, timeout=timeout)
    else:
        sock = socket.create_connection((host, port), timeout=timeout)
    connected = time.monotonic()
    with sock:
        peer = sock.getpeername()[0]
        hosthdr = f"[{host}]" if ":" in host else host
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nConnection: close\r\n\r\n"
                     .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        first_byte = time.monotonic()
        size, keep = len(body), [body]
        while chunk := sock.recv(1 << 18):
            size += len(chunk)
            if size <= 4096:
                keep.append(chunk)
    done = time.monotonic()
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    result: dict[str, Any] = {
        "status": status, "bytes": size, "peer": peer,
        "connect_s": round(connected - start, 4), "first_byte_s": round(first_byte - start, 4),
        "total_s": round(done - start, 4),
    }
    if size <= 4096:
        text = b"".join(keep).decode("utf-8", "replace")
        try:
            result["json"] = json.loads(text)
        except ValueError:
            result["body"] = text
    return result


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        if not (chunk := sock.recv(n - len(data))):
            raise ConnectionError("the SOCKS5 proxy closed the connection")
        data += chunk
    return data


def _socks_as(proxy: tuple[str, int], user: str, host: str, port: int,
              timeout: float) -> socket.socket:
    """SOCKS5 CONNECT with username/password (RFC 1929): Tor isolates circuits by them."""
    sock = socket.create_connection(proxy, timeout=timeout)
    try:
        sock.sendall(b"\x05\x01\x02")
        if _recv_exactly(sock, 2) != b"\x05\x02":
            raise ConnectionError("the SOCKS5 proxy refused username/password")
        name = user.encode()
        sock.sendall(b"\x01" + bytes([len(name)]) + name + b"\x01x")
        if _recv_exactly(sock, 2)[1] != 0:
            raise ConnectionError("the SOCKS5 proxy rejected the credentials")
        sock.sendall(socks.connect_request(host, port))
        _recv_exactly(sock, socks.reply_rest(_recv_exactly(sock, 5)))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp(p: Probe) -> dict[str, Any]:
    with socket.create_connection((p["dst"], int(p["port"])), timeout=float(p.get("timeout", 3))):
        return {"connected": True}


def udp(p: Probe) -> dict[str, Any]:
    """One datagram on a connected socket: a local reject shows up as ECONNREFUSED at once."""
    with socket.socket(_family(p["dst"]), socket.SOCK_DGRAM) as s:
        s.settimeout(float(p.get("timeout", 2.0)))
        s.connect((p["dst"], int(p["port"])))
        s.send(bytes.fromhex(p.get("payload", "")) or b"netspectre-probe")
        return {"reply": s.recv(4096).hex()}


def icmp(p: Probe) -> dict[str, Any]:
    """An echo request on a raw socket (root); only our echo's reply or error counts."""
    dst, timeout = p["dst"], float(p.get("timeout", 2.0))
    family = 6 if ":" in dst else 4
    ident = int.from_bytes(os.urandom(2), "big") or 1
    proto = socket.IPPROTO_ICMPV6 if family == 6 else socket.IPPROTO_ICMP
    with socket.socket(_family(dst), socket.SOCK_RAW, proto) as s:
        s.sendto(wire.echo_request(family, ident, b"netspectre-probe"), (dst, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            msg = wire.icmp_message(s.recv(2048), family)
            said = wire.classify(msg, ident, quoted=True)
            if said is wire.Echo.REPLY:
                return {"reply": True}
            if said is wire.Echo.UNREACHABLE:
                return {"error": f"ICMP unreachable (type {msg[0]} code {msg[1]})"}
        raise TimeoutError("no reply")


def dns(p: Probe) -> dict[str, Any]:
    """A query over UDP (a connected socket, so a reject is seen at once) or TCP."""
    qtype = TYPE_AAAA if p.get("type") == "AAAA" else TYPE_A
    timeout = float(p.get("timeout", 3.0))
    ident = int.from_bytes(os.urandom(2), "big")
    query = dnswire.query(p["name"], ident, qtype)
    server, port = p["server"], int(p.get("port", 53))
    if p.get("tcp"):
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(query)) + query)
            reply = s.recv(4096)[2:]
    else:
        with socket.socket(_family(server), socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((server, port))
            s.send(query)
            while (reply := s.recv(4096))[:2] != query[:2]:
                pass
    parsed = dnswire.parse(reply, ident)
    if parsed is None:
        return {"error": f"not a DNS reply to our query: {reply[:16].hex()}"}
    return {"rcode": parsed.rcode, "answers": parsed.answers}


KINDS: dict[str, Callable[[Probe], dict[str, Any]]] = {
    "http": http, "tcp": tcp, "udp": udp, "icmp": icmp, "dns": dns,
}
FAILURES = (OSError, ValueError, IndexError, struct.error, Error)


def run_one(p: Probe) -> dict[str, Any]:
    """One probe; with retry_for=S, repeat it until it succeeds or S seconds have passed."""
    start = time.monotonic()
    retry_for = float(p.get("retry_for", 0))
    attempts = 0
    while True:
        attempts += 1
        try:
            result = KINDS[p["kind"]](p)
        except FAILURES as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
            code = getattr(exc, "errno", None)
            if isinstance(code, int) and code in errno.errorcode:
                result["errno"] = errno.errorcode[code]
        if "error" not in result or time.monotonic() - start >= retry_for:
            break
        time.sleep(0.05)
    result["elapsed"] = round(time.monotonic() - start, 4)
    result["done_at"] = time.time()  # wall clock: compare with events outside the namespace
    if retry_for:
        result["attempts"] = attempts
    return result


def run(probes: Sequence[Probe]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        return list(pool.map(run_one, probes))


def _batch(text: str) -> int:
    probes = json.loads(text)
    for p in probes:
        if p.get("kind") not in KINDS:
            print(json.dumps({"error": f"unknown probe kind {p.get('kind')!r}"}))
            return 2
        for key in ("dst", "server"):
            if key in p:
                ipaddress.ip_address(p[key])  # addresses only: no name lookups by surprise
    print(json.dumps(run(probes)))
    sys.stdout.flush()
    return 0


def _single(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m netspectre.lab.agent")
    sub = ap.add_subparsers(dest="kind", required=True)
    h = sub.add_parser("http")
    h.add_argument("url")
    h.add_argument("--socks", help="HOST:PORT of a SOCKS5 proxy (name resolved by the proxy)")
    h.add_argument("--socks-user", help="SOCKS5 username (Tor: its own circuits)")
    h.add_argument("--timeout", type=float, default=30.0)
    d = sub.add_parser("dns")
    d.add_argument("server", help="the server's address")
    d.add_argument("--port", type=int, default=53)
    d.add_argument("name")
    d.add_argument("--type", choices=("A", "AAAA"), default="A")
    d.add_argument("--timeout", type=float, default=5.0)
    probe = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    try:
        result = KINDS[probe["kind"]](probe)
    except FAILURES as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    sys.stdout.flush()
    return 1 if "error" in result else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in ("http", "dns", "-h", "--help"):
        return _single(args)
    if len(args) != 1:
        print(json.dumps({"error": "usage: python -m netspectre.lab.agent '<JSON list>'"}))
        return 2
    return _batch(args[0])


if __name__ == "__main__":
    raise SystemExit(main())
