"""The program `bench/run.py` runs inside `netspectre run` and, for the reference, outside it
talking SOCKS5 itself (stdlib only; it runs as uid 65534 with the system's python3).

argv: MODE HOST PORT [N] [SOCKSPORT]   MODE: bulk | setup | concurrent, each with `socks-`
before it for the direct reference; http-bulk (bench/lab.py: GET /bytes/N of the lab's web
server, inside `netspectre run`). Prints one JSON object.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import threading
import time


def _exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def open_conn(host: str, port: int, socks_port: int | None) -> socket.socket:
    if socks_port is None:
        return socket.create_connection((host, port), timeout=30)
    s = socket.create_connection(("127.0.0.1", socks_port), timeout=30)
    s.sendall(b"\x05\x01\x02")
    _exactly(s, 2)
    s.sendall(b"\x01\x05bench\x02pw")
    _exactly(s, 2)
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + port.to_bytes(2, "big"))
    _exactly(s, 10)
    return s


def bulk(host: str, port: int, socks_port: int | None) -> dict[str, float]:
    t0 = time.perf_counter()
    total = 0
    with open_conn(host, port, socks_port) as s:
        buf = bytearray(1 << 18)
        while n := s.recv_into(buf):
            total += n
    seconds = time.perf_counter() - t0
    return {"bytes": total, "seconds": seconds, "mib_per_s": total / seconds / (1 << 20)}


def http_bulk(host: str, port: int, n: int) -> dict[str, float]:
    """GET /bytes/n from the lab's web server; the rate counts from the first body byte."""
    with socket.create_connection((host, port), timeout=120) as s:
        s.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                  .encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        t0 = time.perf_counter()
        total = len(buf.partition(b"\r\n\r\n")[2])
        chunk = bytearray(1 << 18)
        while got := s.recv_into(chunk):
            total += got
    seconds = time.perf_counter() - t0
    return {"bytes": total, "seconds": seconds, "mb_per_s": total / seconds / 1e6}


def setup(host: str, port: int, n: int, socks_port: int | None) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with open_conn(host, port, socks_port) as s:
            s.recv(200)  # the stand-in's first line: the stream is open end to end
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": sorted(times)[int(n * 0.9)]}


def concurrent(host: str, port: int, n: int, socks_port: int | None) -> dict[str, float]:
    ok, barrier = [], threading.Barrier(n)

    def one() -> None:
        barrier.wait()
        with open_conn(host, port, socks_port) as s:
            s.recv(200)
            s.sendall(b"x" * 1000)
            got = b""
            while len(got) < 1000:
                got += s.recv(1000)
            ok.append(1)
            time.sleep(0.5)  # all open at once

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"ok": len(ok), "seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    sp = int(sys.argv[5]) if len(sys.argv) > 5 and mode.startswith("socks-") else None
    kind = mode.removeprefix("socks-")
    result = (bulk(host, port, sp) if kind == "bulk" else setup(host, port, n, sp)
              if kind == "setup" else http_bulk(host, port, n) if kind == "http-bulk"
              else concurrent(host, port, n, sp))
    print(json.dumps(result))
