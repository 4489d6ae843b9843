"""The integration suite's agent (tests/support/agent.py) with what the lab adds: HTTP
against the lab's web server (one-shot, and kept-alive across `netspectre start`), DNS on a
connected UDP socket kept across `start`, and a loop of HTTP probes (the kill-switch watch).

Run as `ip netns exec NS python -m tests.support.lab_agent [--user NAME]` from the checkout's
root (it imports tests.support.agent); agent.py itself is run by path.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from tests.support import agent
from tests.support.agent import SOCKETS, _timed, dns_parse, dns_query


def _request(sock: socket.socket, host: str, path: str, *, keep_alive: bool) -> None:
    hosthdr = f"[{host}]" if ":" in host else host
    how = "keep-alive" if keep_alive else "close"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nConnection: {how}\r\n\r\n".encode())


def _response(sock: socket.socket) -> dict[str, Any]:
    """One HTTP/1.1 response (Content-Length bodies, as the lab's server sends)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the body")
        body += chunk
    result: dict[str, Any] = {"status": status}
    try:
        result["json"] = json.loads(body)
    except ValueError:
        result["body"] = body[:200].decode(errors="replace")
    return result


def op_http(host: str, port: int = 80, path: str = "/api/ip",
            timeout: float = 2.0) -> dict[str, Any]:
    """GET http://host:port/path; a name is resolved by the system resolver (resolv.conf)."""
    def go() -> dict[str, Any]:
        with socket.create_connection((host, port), timeout=timeout) as s:
            _request(s, host, path, keep_alive=False)
            return _response(s)
    return _timed(go)


def op_http_open(id: str, host: str, port: int = 80, path: str = "/api/ip",
                 timeout: float = 2.0) -> dict[str, Any]:
    """A kept-alive HTTP connection: one request now, more later on the same socket."""
    def go() -> dict[str, Any]:
        s = socket.create_connection((host, port), timeout=timeout)
        _request(s, host, path, keep_alive=True)
        result = _response(s)
        SOCKETS[id] = s
        result["local"] = list(s.getsockname()[:2])
        return result
    return _timed(go)


def op_http_again(id: str, host: str, path: str = "/api/ip",
                  timeout: float = 2.0) -> dict[str, Any]:
    s = SOCKETS[id]

    def go() -> dict[str, Any]:
        s.settimeout(timeout)
        _request(s, host, path, keep_alive=True)
        return _response(s)
    return _timed(go)


def op_dns_open(id: str, dst: str, name: str, port: int = 53,
                timeout: float = 2.0) -> dict[str, Any]:
    """A connected UDP socket to a resolver, kept for more queries later (same 5-tuple)."""
    def go() -> dict[str, Any]:
        s = socket.socket(agent.family(dst), socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect((dst, port))
        qid, query = dns_query(name)
        s.send(query)
        answer = dns_parse(s.recv(4096), qid)
        SOCKETS[id] = s
        return {"answer": answer, "local": list(s.getsockname()[:2])}
    return _timed(go)


def op_dns_again(id: str, name: str, timeout: float = 1.0) -> dict[str, Any]:
    s = SOCKETS[id]

    def go() -> dict[str, Any]:
        s.settimeout(timeout)
        qid, query = dns_query(name)
        s.send(query)
        return {"answer": dns_parse(s.recv(4096), qid)}
    return _timed(go)


WATCH: dict[str, Any] = {}


def _watch(host: str, port: int, timeout: float, pause: float, stop: threading.Event,
           deadline: float, results: list[dict[str, Any]]) -> None:
    while not stop.is_set() and time.monotonic() < deadline:
        began = time.time()
        result = op_http(host, port, timeout=timeout)
        result["began"] = began
        results.append(result)
        stop.wait(pause)


def op_watch_start(host: str, port: int = 80, timeout: float = 2.0, pause: float = 0.05,
                   max_seconds: float = 60.0) -> dict[str, Any]:
    """HTTP probes in a loop (each with a wall-clock start), bounded in time."""
    stop = threading.Event()
    results: list[dict[str, Any]] = []
    thread = threading.Thread(
        target=_watch, daemon=True,
        args=(host, port, timeout, pause, stop, time.monotonic() + max_seconds, results))
    WATCH.clear()
    WATCH.update(stop=stop, thread=thread, results=results)
    thread.start()
    return {"started": True}


def op_watch_stop() -> dict[str, Any]:
    WATCH["stop"].set()
    WATCH["thread"].join(timeout=30)
    return {"results": list(WATCH["results"])}


agent.OPS.update(
    http=op_http,
    http_open=op_http_open,
    http_again=op_http_again,
    dns_open=op_dns_open,
    dns_again=op_dns_again,
    watch_start=op_watch_start,
    watch_stop=op_watch_stop,
)

if __name__ == "__main__":
    agent.main()
