"""A batch of probes run at once inside one lab namespace (`ip netns exec NS python -m
netspectre.lab.leaks '<JSON list>'`): HTTP (direct or via SOCKS5), TCP connect, UDP datagram,
ICMP echo, DNS over UDP/TCP. Prints one JSON list of results, in order; every failure to reach
the target is a result ({"error": ...}), not a crash. Used by `lab demo` and bench/lab.py.
"""

from __future__ import annotations

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

from netspectre import dnswire
from netspectre.dnswire import TYPE_A, TYPE_AAAA
from netspectre.errors import Error
from netspectre.lab.probe import socks5_connect
from netspectre.lab.web import parse_listen

Probe = dict[str, Any]


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def http(p: Probe) -> dict[str, Any]:
    """GET url; the peer address shows where the name went (an .onion: the virtual network)."""
    parts = urlsplit(p["url"])
    host, port, path = parts.hostname or "", parts.port or 80, parts.path or "/"
    timeout = float(p.get("timeout", 10.0))
    start = time.monotonic()
    if p.get("socks"):
        sock = socks5_connect(parse_listen(p["socks"]), host, port, timeout)
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


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp(p: Probe) -> dict[str, Any]:
    """An echo request on a raw socket (root); only our echo's reply or error counts."""
    dst, timeout = p["dst"], float(p.get("timeout", 2.0))
    v6 = ":" in dst
    ident = int.from_bytes(os.urandom(2), "big") or 1
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with socket.socket(_family(dst), socket.SOCK_RAW, proto) as s:
        body = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, 1) + b"netspectre-probe"
        if not v6:  # the kernel computes the ICMPv6 checksum itself
            body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
        s.sendto(body, (dst, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            data = s.recv(2048)
            msg = data if v6 else data[(data[0] & 0x0F) * 4:]
            if msg[0] in (0, 129) and struct.unpack("!H", msg[4:6])[0] == ident:
                return {"reply": True}
            if msg[0] in (1, 3) and ident.to_bytes(2, "big") in msg[8:]:
                return {"error": f"ICMP unreachable (type {msg[0]} code {msg[1]})"}
        raise TimeoutError("no reply")


def dns(p: Probe) -> dict[str, Any]:
    """A query over UDP (a connected socket, so a reject is seen at once) or TCP."""
    qtype = TYPE_AAAA if p.get("type") == "AAAA" else TYPE_A
    timeout = float(p.get("timeout", 3.0))
    ident = int.from_bytes(os.urandom(2), "big")
    query = dnswire.query(p["name"], ident, qtype)
    server = p["server"]
    if p.get("tcp"):
        with socket.create_connection((server, 53), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(query)) + query)
            reply = s.recv(4096)[2:]
    else:
        with socket.socket(_family(server), socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((server, int(p.get("port", 53))))
            s.send(query)
            while (reply := s.recv(4096))[:2] != query[:2]:
                pass
    return _reply(reply, ident)


def _reply(reply: bytes, ident: int) -> dict[str, Any]:
    parsed = dnswire.parse(reply, ident)
    if parsed is None:
        return {"error": f"not a DNS reply to our query: {reply[:16].hex()}"}
    return {"rcode": parsed.rcode, "answers": parsed.answers}


KINDS: dict[str, Callable[[Probe], dict[str, Any]]] = {
    "http": http, "tcp": tcp, "udp": udp, "icmp": icmp, "dns": dns,
}


def run_one(p: Probe) -> dict[str, Any]:
    """One probe; with retry_for=S, repeat it until it succeeds or S seconds have passed."""
    start = time.monotonic()
    retry_for = float(p.get("retry_for", 0))
    attempts = 0
    while True:
        attempts += 1
        try:
            result = KINDS[p["kind"]](p)
        except (OSError, ValueError, IndexError, struct.error, Error) as exc:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(json.dumps({"error": "usage: python -m netspectre.lab.leaks '<JSON list>'"}))
        return 2
    probes = json.loads(args[0])
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


if __name__ == "__main__":
    raise SystemExit(main())
