"""A stand-in for Tor's SocksPort: SOCKS5 with username/password, CONNECT and RESOLVE (0xF0).

CONNECT succeeds to anything and then answers, on the stream, one line naming what was asked
(`host port username`) before echoing; RESOLVE answers from a fixed table (unknown names get
Tor's "host unreachable"). Every request is recorded, so a test sees what reached "Tor".
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    command: str  # "connect" or "resolve"
    host: str
    port: int
    username: str


@dataclass
class Stub:
    names: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    log: str | None = None  # also one JSON line per request here (the stub in a subprocess)
    bulk: int = 0  # CONNECT to port 9 ("discard" turned around): this many bytes, then close
    server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self, port: int = 0) -> Stub:
        stub = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                stub._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            request_queue_size = 512  # the default 5 drops SYNs of a burst (1 s retransmits)

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _record(self, request: Request) -> None:
        self.requests.append(request)
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(request.__dict__) + "\n")

    def _serve(self, s: socket.socket) -> None:
        def exactly(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk:
                    raise ConnectionError
                data += chunk
            return data

        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as tor's SocksPort replies
        try:
            _ver, n = exactly(2)
            methods = exactly(n)
            if 2 not in methods:
                s.sendall(b"\x05\xff")
                return
            s.sendall(b"\x05\x02")
            _v, ulen = exactly(2)
            user = exactly(ulen).decode()
            exactly(exactly(1)[0])
            s.sendall(b"\x01\x00")
            _v, cmd, _r, atyp = exactly(4)
            if atyp == 1:
                host = socket.inet_ntoa(exactly(4))
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, exactly(16))
            else:
                host = exactly(exactly(1)[0]).decode()
            port = int.from_bytes(exactly(2), "big")
            kind = {1: "connect", 0xF0: "resolve"}.get(cmd, f"cmd{cmd}")
            self._record(Request(kind, host, port, user))
            if kind == "resolve":
                addr = self.names.get(host)
                if addr is None:
                    s.sendall(b"\x05\x04\x00\x01" + bytes(6))
                    return
                s.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(addr) + b"\x00\x00")
                return
            s.sendall(b"\x05\x00\x00\x01" + bytes(6))
            if port == 9 and self.bulk:
                chunk = bytes(1 << 20)
                for _ in range(self.bulk >> 20):
                    s.sendall(chunk)
                return
            s.sendall(f"{host} {port} {user}\n".encode())
            while data := s.recv(65536):
                s.sendall(data)
        except (ConnectionError, OSError):
            pass
        finally:
            s.close()



def main(argv: list[str]) -> None:
    """`socksstub.py PORT LOG [--bulk MIB] NAME=ADDR...`: serve until killed, one JSON line
    per request (LOG "-": none)."""
    import time

    bulk = 0
    if argv[2:3] == ["--bulk"]:
        bulk, argv = int(argv[3]) << 20, argv[:2] + argv[4:]
    stub = Stub(names=dict(a.split("=", 1) for a in argv[2:]),
                log=None if argv[1] == "-" else argv[1], bulk=bulk).start(int(argv[0]))
    print(f"ready {stub.port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
