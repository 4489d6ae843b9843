"""A minimal Tor control-protocol client for the lab's own tors, over their ControlSocket.

Unix sockets ignore network namespaces, so the host side can watch tors inside the lab without
any route into it. (netspectre's managed tor has its own, stem-based, client in tor/control.py.)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from netspectre.errors import TorError


class Control:
    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise TorError(f"cannot connect to tor's control socket {path}: {exc}") from None
        self._buf = b""
        self._events: list[str] = []
        self.command("AUTHENTICATE")

    def __enter__(self) -> Control:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def _line(self, deadline: float | None = None) -> str:
        while b"\r\n" not in self._buf:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise TorError(f"tor closed its control socket {self.path}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _reply(self, deadline: float | None = None) -> tuple[str, list[str]]:
        """Read one reply; return (status code, lines with data blocks joined in)."""
        lines: list[str] = []
        while True:
            line = self._line(deadline)
            code, sep, rest = line[:3], line[3:4], line[4:]
            if sep == "+":
                data = [rest]
                while (more := self._line(deadline)) != ".":
                    data.append(more[1:] if more.startswith("..") else more)
                lines.append("\n".join(data))
            else:
                lines.append(rest)
            if sep == " ":
                return code, lines

    def command(self, line: str) -> list[str]:
        self._sock.sendall(line.encode() + b"\r\n")
        while True:
            code, lines = self._reply()
            if code == "650":
                self._events.extend(lines)
                continue
            if code != "250":
                raise TorError(f"tor control command {line.split()[0]} failed: {code} {lines}")
            return lines

    def getinfo(self, key: str) -> str:
        lines = self.command(f"GETINFO {key}")
        first = lines[0]
        prefix = f"{key}="
        if not first.startswith(prefix):
            raise TorError(f"unexpected GETINFO reply for {key}: {first[:80]!r}")
        value = first[len(prefix) :]
        return value[1:] if value.startswith("\n") else value

    def events(self, *, timeout: float) -> Iterator[str]:
        """Yield asynchronous events (already subscribed with SETEVENTS) until timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while self._events:
                yield self._events.pop(0)
            try:
                code, lines = self._reply(deadline)
            except TimeoutError:
                return
            if code == "650":
                self._events.extend(lines)


def consensus_relays(ns_all: str) -> dict[str, set[str]]:
    """Parse `GETINFO ns/all` into {nickname: flags}."""
    relays: dict[str, set[str]] = {}
    nick = ""
    for line in ns_all.splitlines():
        if line.startswith("r "):
            nick = line.split()[1]
            relays[nick] = set()
        elif line.startswith("s ") and nick:
            relays[nick] = set(line.split()[1:])
    return relays
