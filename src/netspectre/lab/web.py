"""The lab's web server: `GET /api/ip` answers like check.torproject.org
(`{"IP": "<source>", "IsTor": <source is an exit>}`), `GET /bytes/<n>` sends n bytes for bulk
tests. Run as `python -m netspectre.lab.web --listen ADDR:PORT ... --exit ADDR ...`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from netspectre.lab.daemon import detach

MAX_BYTES = 1 << 30
_CHUNK = b"\0" * 65536


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    exits: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()


class _Server6(_Server):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "netspectre-lab"
    sys_version = ""

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/ip":
            source = ipaddress.ip_address(self.client_address[0])
            if isinstance(source, ipaddress.IPv6Address) and source.ipv4_mapped:
                source = source.ipv4_mapped
            body = json.dumps({"IP": str(source), "IsTor": source in self.server.exits})
            self._send(200, body.encode(), "application/json")
        elif path.startswith("/bytes/") and path[7:].isdigit():
            n = int(path[7:])
            if n > MAX_BYTES:
                self._send(400, b"too many bytes\n")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0 and self.command != "HEAD":
                piece = _CHUNK[: min(n, len(_CHUNK))]
                self.wfile.write(piece)
                n -= len(piece)
        elif path == "/":
            self._send(200, b"netspectre lab web server\n")
        else:
            self._send(404, b"not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(listen: Sequence[tuple[str, int]], exits: Sequence[str]) -> list[_Server]:
    exit_set = frozenset(ipaddress.ip_address(e) for e in exits)
    servers: list[_Server] = []
    for host, port in listen:
        cls = _Server6 if ":" in host else _Server
        server = cls((host, port), Handler)
        server.exits = exit_set
        servers.append(server)
    return servers


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netspectre.lab.web")
    ap.add_argument("--listen", action="append", required=True, help="ADDR:PORT or [ADDR6]:PORT")
    ap.add_argument("--exit", action="append", default=[], help="an exit relay's address")
    ap.add_argument("--pidfile", type=Path)
    ap.add_argument("--log", type=Path, default=Path("/dev/null"))
    args = ap.parse_args(argv)
    servers = serve([parse_listen(x) for x in args.listen], args.exit)
    if args.pidfile:
        detach(pidfile=args.pidfile, log=args.log)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers[1:]]
    for t in threads:
        t.start()
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
