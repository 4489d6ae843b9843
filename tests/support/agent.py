"""A helper process run inside a test namespace: servers, a fake Tor, and probes.

Started as `ip netns exec NS python agent.py [--user NAME]`; reads one JSON request per line on
stdin, answers one JSON line on stdout. With --user it drops to that account before doing
anything, so every socket it opens belongs to that user (what `meta skuid` matches).

The fake Tor is a TCP listener on 127.0.0.1:<trans_port> that tells each client the original
destination of its connection (SO_ORIGINAL_DST), and a DNS responder on 127.0.0.1:<dns_port>.
"""

from __future__ import annotations

import argparse
import encodings.idna  # noqa: F401 - getaddrinfo needs it after we dropped to another user
import errno
import ipaddress
import json
import os
import pwd
import random
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

SO_ORIGINAL_DST = 80
EVENTS: list[dict[str, Any]] = []
EVENTS_LOCK = threading.Lock()
SOCKETS: dict[str, socket.socket] = {}


def record(**event: Any) -> None:
    event["ts"] = time.time()
    with EVENTS_LOCK:
        EVENTS.append(event)


def errname(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


# --- DNS ------------------------------------------------------------------------------------


def dns_query(name: str) -> tuple[int, bytes]:
    qid = random.randrange(1, 0xFFFF)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid, struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def _qname(msg: bytes) -> tuple[str, int]:
    labels, pos = [], 12
    while pos < len(msg) and msg[pos] != 0:
        n = msg[pos]
        labels.append(msg[pos + 1:pos + 1 + n].decode(errors="replace"))
        pos += 1 + n
    return ".".join(labels), pos + 1 + 4


def dns_answer(query: bytes, answer: str) -> bytes:
    name, end = _qname(query)
    header = struct.pack("!HHHHHH", struct.unpack("!H", query[:2])[0], 0x8180, 1, 1, 0, 0)
    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + ipaddress.IPv4Address(answer).packed
    return header + query[12:end] + rr


def dns_parse(reply: bytes, qid: int) -> str | None:
    if len(reply) < 12 or struct.unpack("!H", reply[:2])[0] != qid:
        return None
    _, pos = _qname(reply)
    if struct.unpack("!H", reply[6:8])[0] < 1 or pos + 12 > len(reply):
        return None
    rtype, _, _, rdlen = struct.unpack("!HHIH", reply[pos + 2:pos + 12])
    rdata = reply[pos + 12:pos + 12 + rdlen]
    return str(ipaddress.IPv4Address(rdata)) if rtype == 1 and rdlen == 4 else None


# --- servers --------------------------------------------------------------------------------


def _thread(target: Any, *args: Any) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


class _TcpLoop:
    """Every TCP server of this agent in one selector thread (a storm makes thousands of
    short connections: a thread each would starve the commands we are timing)."""

    def __init__(self) -> None:
        self.sel = selectors.EpollSelector()  # epoll: registering while select() waits is fine
        self.lock = threading.Lock()
        _thread(self.run)

    def add(self, listener: socket.socket, role: str, fake_tor: bool) -> None:
        listener.setblocking(False)
        with self.lock:
            self.sel.register(listener, selectors.EVENT_READ, ("listen", (role, fake_tor)))

    def run(self) -> None:
        while True:
            events = self.sel.select()
            with self.lock:
                for key, _ in events:
                    kind, data = key.data
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if kind == "listen":
                        self._accept(sock, *data)
                    else:
                        self._read(sock, *data)

    def _accept(self, listener: socket.socket, role: str, fake_tor: bool) -> None:
        try:
            conn, peer = listener.accept()
        except OSError:
            return
        if fake_tor:
            try:
                orig = original_dst(conn)
            except OSError as exc:
                orig = (f"error:{errname(exc)}", 0)
            info = {"peer": list(peer[:2]), "orig": list(orig)}
            banner = f"TOR {orig[0]} {orig[1]}\n".encode()
        else:
            local = conn.getsockname()
            info = {"peer": list(peer[:2]), "local": list(local[:2])}
            banner = f"SERVER {local[0]} {local[1]}\n".encode()
        record(role=role, event="connect", **info)
        conn.setblocking(False)
        try:
            conn.send(banner)
        except OSError:
            conn.close()
            return
        self.sel.register(conn, selectors.EVENT_READ, ("conn", (role, info)))

    def _read(self, conn: socket.socket, role: str, info: dict[str, Any]) -> None:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(conn)
            conn.close()
            return
        record(role=role, event="data", data=data.decode(errors="replace"), **info)
        try:
            conn.send(b"ECHO " + data)
        except OSError:
            pass


_LOOP: list[_TcpLoop] = []


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going: SO_ORIGINAL_DST (IPv4) or
    IP6T_SO_ORIGINAL_DST (IPv6, the same number at SOL_IPV6), as tor asks."""
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return str(ipaddress.IPv6Address(raw[8:24])), struct.unpack("!H", raw[2:4])[0]
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return str(ipaddress.IPv4Address(raw[4:8])), struct.unpack("!H", raw[2:4])[0]


def _socket(addr: str, kind: socket.SocketKind) -> socket.socket:
    """IPv6 sockets are V6ONLY, like tor's: 0.0.0.0 and [::] on one port do not clash."""
    s = socket.socket(family(addr), kind)
    if s.family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return s


ONION_MAPPED = "10.192.0.77"  # inside the default VirtualAddrNetwork 10.192.0.0/10


def serve_tcp(addr: str, port: int, role: str = "server", fake_tor: bool = False) -> None:
    s = _socket(addr, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(512)
    if not _LOOP:
        _LOOP.append(_TcpLoop())
    _LOOP[0].add(s, role, fake_tor)


def _udp_loop(s: socket.socket, role: str, answer: str | None, discard: bool) -> None:
    while True:
        try:
            data, peer = s.recvfrom(4096)
        except OSError:
            return
        if answer is not None:
            name, _ = _qname(data)
            record(role=role, event="dns", name=name, peer=list(peer[:2]))
            # Like Tor's AutomapHostsOnResolve: a .onion name maps into VirtualAddrNetwork.
            onion = role.startswith("tor-dns") and name.endswith(".onion")
            mapped = ONION_MAPPED if onion else answer
            reply = dns_answer(data, mapped)
        else:
            record(role=role, event="udp", peer=list(peer[:2]), data=data[:64].hex())
            if discard:
                continue
            reply = b"ECHO " + data
        try:
            s.sendto(reply, peer)
        except OSError:
            pass


def serve_udp(addr: str, port: int, role: str = "server", answer: str | None = None,
              discard: bool = False) -> None:
    s = _socket(addr, socket.SOCK_DGRAM)
    s.bind((addr, port))
    _thread(_udp_loop, s, role, answer, discard)


def _dns_tcp_conn(conn: socket.socket, role: str, answer: str) -> None:
    try:
        conn.settimeout(10)
        n = struct.unpack("!H", _recv_exact(conn, 2))[0]
        query = _recv_exact(conn, n)
        record(role=role, event="dns-tcp", name=_qname(query)[0])
        reply = dns_answer(query, answer)
        conn.sendall(struct.pack("!H", len(reply)) + reply)
    except OSError:
        pass
    finally:
        conn.close()


def _dns_tcp_loop(s: socket.socket, role: str, answer: str) -> None:
    while True:
        try:
            conn, _ = s.accept()
        except OSError:
            return
        _thread(_dns_tcp_conn, conn, role, answer)


def serve_dns_tcp(addr: str, port: int, role: str, answer: str) -> None:
    s = _socket(addr, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    _thread(_dns_tcp_loop, s, role, answer)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("short read")
        buf += chunk
    return buf


# --- probes ---------------------------------------------------------------------------------


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        result = fn()
        result.setdefault("error", None)
    except Exception as exc:  # noqa: BLE001 - every failure is a probe result
        result = {"error": errname(exc)}
    result["elapsed"] = time.monotonic() - t0
    return result


def probe_tcp(dst: str, port: int, timeout: float = 2.0, data: str = "",
              bind: str | None = None) -> dict[str, Any]:
    def go() -> dict[str, Any]:
        source = (bind, 0) if bind else None
        with socket.create_connection((dst, port), timeout=timeout,
                                      source_address=source) as s:
            result: dict[str, Any] = {"connected": True}
            line = b""
            while not line.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                line += chunk
            result["banner"] = line.decode(errors="replace").strip()
            if data:
                s.sendall(data.encode())
                result["echo"] = s.recv(4096).decode(errors="replace")
            return result
    return _timed(go)


def probe_udp(dst: str, port: int, timeout: float = 1.0, data: str = "probe") -> dict[str, Any]:
    def go() -> dict[str, Any]:
        with socket.socket(family(dst), socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((dst, port))
            s.send(data.encode())
            return {"reply": s.recv(4096).decode(errors="replace")}
    return _timed(go)


def probe_dns(dst: str, name: str, port: int = 53, tcp: bool = False,
              timeout: float = 1.0) -> dict[str, Any]:
    qid, query = dns_query(name)

    def go() -> dict[str, Any]:
        if tcp:
            with socket.create_connection((dst, port), timeout=timeout) as s:
                s.sendall(struct.pack("!H", len(query)) + query)
                n = struct.unpack("!H", _recv_exact(s, 2))[0]
                return {"answer": dns_parse(_recv_exact(s, n), qid)}
        with socket.socket(family(dst), socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((dst, port))
            s.send(query)
            return {"answer": dns_parse(s.recv(4096), qid)}
    return _timed(go)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _quotes_our_echo(icmp: bytes, ident: int, v6: bool) -> bool:
    """An ICMP error is ours only if the packet it quotes is our echo request: a raw ICMP
    socket also receives errors caused by other probes (protocol unreachable for GRE…)."""
    inner = icmp[8:]
    if v6:
        return len(inner) >= 46 and inner[6] == 58 and inner[40] == 128 and \
            struct.unpack("!H", inner[44:46])[0] == ident
    if len(inner) < 20 or inner[9] != socket.IPPROTO_ICMP:
        return False
    quoted = inner[(inner[0] & 0x0F) * 4:]
    return len(quoted) >= 6 and quoted[0] == 8 and struct.unpack("!H", quoted[4:6])[0] == ident


def probe_icmp(dst: str, timeout: float = 1.0) -> dict[str, Any]:
    v6 = ":" in dst
    ident = random.randrange(1, 0xFFFF)

    def go() -> dict[str, Any]:
        proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        with socket.socket(family(dst), socket.SOCK_RAW, proto) as s:
            s.settimeout(timeout)
            kind = 128 if v6 else 8
            body = struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"netspectre-probe"
            if not v6:  # the kernel fills in the ICMPv6 checksum itself
                body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
            s.sendto(body, (dst, 0))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                s.settimeout(left)
                data = s.recv(2048)
                icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
                if icmp[0] in (0, 129) and struct.unpack("!H", icmp[4:6])[0] == ident:
                    return {"reply": True}
                if icmp[0] in (3, 1) and _quotes_our_echo(icmp, ident, v6):
                    return {"reply": False, "error": f"icmp-unreach-{icmp[1]}"}
    return _timed(go)


def probe_rawip(dst: str, proto: int, data: str = "netspectre-raw") -> dict[str, Any]:
    def go() -> dict[str, Any]:
        with socket.socket(family(dst), socket.SOCK_RAW, proto) as s:
            s.sendto(data.encode(), (dst, 0))
            return {"sent": True}
    return _timed(go)


def probe_tcpflags(dst: str, port: int, flags: int, sport: int = 0) -> dict[str, Any]:
    """One hand-made TCP segment with the given flags (no handshake, no socket state)."""
    def go() -> dict[str, Any]:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as s:
            s.connect((dst, port))
            src = s.getsockname()[0]
            sp = sport or random.randrange(20000, 60000)
            header = struct.pack("!HHIIBBHHH", sp, port, random.randrange(1 << 32), 0,
                                 5 << 4, flags, 65535, 0, 0)
            pseudo = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
                      + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header)))
            header = header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:]
            s.send(header)
            return {"sent": True, "sport": sp}
    return _timed(go)


# --- persistent sockets (flows opened before `start`, incoming listeners) --------------------


def op_open(id: str, kind: str, dst: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    def go() -> dict[str, Any]:
        if kind == "tcp":
            s = socket.create_connection((dst, port), timeout=timeout)
            line = b""
            while not line.endswith(b"\n"):
                chunk = s.recv(256)
                if not chunk:
                    break
                line += chunk
            SOCKETS[id] = s
            return {"banner": line.decode().strip(), "local": list(s.getsockname()[:2])}
        s = socket.socket(family(dst), socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect((dst, port))
        s.send(b"open")
        reply = s.recv(4096)
        SOCKETS[id] = s
        return {"reply": reply.decode(errors="replace"), "local": list(s.getsockname()[:2])}
    return _timed(go)


def op_send(id: str, data: str, timeout: float = 1.0) -> dict[str, Any]:
    s = SOCKETS[id]

    def go() -> dict[str, Any]:
        s.settimeout(timeout)
        s.send(data.encode())
        return {"reply": s.recv(4096).decode(errors="replace")}
    return _timed(go)


def op_sendto(dst: str, port: int, data: str) -> dict[str, Any]:
    """Fire and forget: one UDP datagram (markers that flush the capture)."""
    with socket.socket(family(dst), socket.SOCK_DGRAM) as s:
        s.sendto(data.encode(), (dst, port))
    return {"sent": True}


def op_close(id: str, linger0: bool = False) -> dict[str, Any]:
    s = SOCKETS.pop(id)
    if linger0:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return {"closed": True}


def op_listen(addr: str, port: int) -> dict[str, Any]:
    serve_tcp(addr, port, role="listener")
    return {"listening": True}


# --- storm ----------------------------------------------------------------------------------

STORM: dict[str, Any] = {}


def _storm(targets: list[dict[str, Any]], stop: threading.Event, deadline: float,
           max_rounds: int, pause: float) -> None:
    counts = {"tcp": 0, "udp": 0, "icmp": 0, "errors": 0, "rounds": 0}
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ping = struct.pack("!BBHHH", 8, 0, 0, 0x4E53, 1) + b"storm"
    ping = ping[:2] + struct.pack("!H", _checksum(ping)) + ping[4:]
    linger = struct.pack("ii", 1, 0)
    while not stop.is_set() and time.monotonic() < deadline and counts["rounds"] < max_rounds:
        for t in targets:
            try:
                if t["kind"] == "tcp":
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    s.connect_ex((t["dst"], t["port"]))
                    s.close()
                elif t["kind"] == "udp":
                    # "hex": a payload of the target's own (a real tor must get well-formed DNS)
                    udp.sendto(bytes.fromhex(t["hex"]) if "hex" in t else b"storm",
                               (t["dst"], t["port"]))
                else:
                    icmp.sendto(ping, (t["dst"], 0))
                counts[t["kind"]] += 1
            except OSError:
                counts["errors"] += 1
        counts["rounds"] += 1
        time.sleep(pause)
    icmp.close()
    udp.close()
    STORM["counts"] = counts


def op_storm_start(targets: list[dict[str, Any]], max_seconds: float = 60.0,
                   max_rounds: int = 100_000, pause: float = 0.001) -> dict[str, Any]:
    stop = threading.Event()
    thread = threading.Thread(
        target=_storm, args=(targets, stop, time.monotonic() + max_seconds, max_rounds, pause),
        daemon=True)
    STORM.clear()
    STORM.update(stop=stop, thread=thread)
    thread.start()
    return {"started": True}


def op_storm_stop() -> dict[str, Any]:
    STORM["stop"].set()
    STORM["thread"].join(timeout=30)
    return {"counts": STORM.get("counts")}


# --- dispatch -------------------------------------------------------------------------------


def op_events(clear: bool = True) -> dict[str, Any]:
    with EVENTS_LOCK:
        events = list(EVENTS)
        if clear:
            EVENTS.clear()
    return {"events": events}


def op_batch(probes: list[dict[str, Any]]) -> list[Any]:
    """Several probes at once, each in its own thread: the slowest sets the pace."""
    results: list[Any] = [None] * len(probes)

    def one(i: int, request: dict[str, Any]) -> None:
        request = dict(request)
        op = request.pop("op")
        try:
            results[i] = OPS[op](**request)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            results[i] = {"error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(probes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _serving(serve: Callable[..., None]) -> Callable[..., dict[str, Any]]:
    """A server op: start it (it runs in its own thread) and answer at once."""
    def op(**kwargs: Any) -> dict[str, Any]:
        serve(**kwargs)
        return {"serving": True}
    return op


def op_fake_tor(trans_port: int, dns_port: int, answer: str) -> dict[str, Any]:
    serve_tcp("127.0.0.1", trans_port, role="tor", fake_tor=True)
    serve_udp("127.0.0.1", dns_port, role="tor-dns", answer=answer)
    return {"serving": True}


# Values of every shape (dicts, lists of probe results): the JSON line carries them as they are.
OPS: dict[str, Callable[..., Any]] = {
    "ping": lambda: {"pong": True, "uid": os.getuid()},
    "serve_tcp": _serving(serve_tcp),
    "serve_udp": _serving(serve_udp),
    "serve_dns_tcp": _serving(serve_dns_tcp),
    "fake_tor": op_fake_tor,
    "events": op_events,
    "tcp": probe_tcp,
    "udp": probe_udp,
    "dns": probe_dns,
    "icmp": probe_icmp,
    "rawip": probe_rawip,
    "tcpflags": probe_tcpflags,
    "open": op_open,
    "send": op_send,
    "close": op_close,
    "sendto": op_sendto,
    "batch": op_batch,
    "listen": op_listen,
    "storm_start": op_storm_start,
    "storm_stop": op_storm_stop,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user")
    args = parser.parse_args()
    if args.user:
        pw = pwd.getpwnam(args.user)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        try:
            result = {"ok": True, "result": OPS[op](**request)}
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
