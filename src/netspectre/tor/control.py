"""A small typed client for Tor's control port: connect, authenticate, GETINFO/GETCONF, events.

Our own, not stem: stem is not installed here and is untyped (mypy --strict would need it
walled off), it would be netspectre's only dependency, and it imports far more than the
supervisor's memory budget and `status`'s start-up time allow. The protocol we need is a few
line-oriented commands (control-spec §2-§3), which fit in this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time
from collections import deque
from pathlib import Path
from types import TracebackType

from netspectre.errors import TorError
from netspectre.tor.protocol import Parser, ProtocolError, Reply, keyvalues, split_args

_SERVER_KEY = b"Tor safe cookie authentication server-to-controller hash"
_CLIENT_KEY = b"Tor safe cookie authentication controller-to-server hash"


class ControlError(TorError):
    """Tor answered a command with an error (5xx), or the connection failed."""


class Controller:
    """One control connection. Events (650) that arrive between replies are queued."""

    def __init__(self, sock: socket.socket, *, address: str) -> None:
        self._sock = sock
        self._parser = Parser()
        self._pending: deque[Reply] = deque()
        self.events: deque[Reply] = deque()
        self.address = address

    @classmethod
    def connect(cls, address: str | Path, *, timeout: float = 5.0) -> Controller:
        """A path (ControlSocket) or host:port (ControlPort)."""
        text = str(address)
        try:
            if text.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(text)
                except OSError:
                    sock.close()
                    raise
            else:
                host, _, port = text.rpartition(":")
                if not host or not port.isdigit():
                    raise ControlError(
                        f"tor.control = {text!r} is neither a socket path nor host:port",
                        "set tor.control to e.g. /run/tor/control or 127.0.0.1:9051",
                    )
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except OSError as exc:
            raise ControlError(
                f"cannot connect to tor's control port {text}: {exc.strerror or exc}",
                "is tor running? (`netspectre status`)",
            ) from None
        return cls(sock, address=text)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- framing ----------------------------------------------------------------------------

    def _receive(self, timeout: float | None) -> bool:
        """Read once; False on timeout. Raises ControlError when tor closes the connection."""
        self._sock.settimeout(timeout)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            return False
        except OSError as exc:
            raise ControlError(f"control connection to tor failed: {exc}") from None
        if not chunk:
            raise ControlError("tor closed the control connection", "is tor still running?")
        try:
            replies = self._parser.feed(chunk)
        except ProtocolError as exc:
            raise ControlError(f"{self.address} does not speak Tor's control protocol: {exc}") \
                from None
        for reply in replies:
            (self.events if reply.is_event else self._pending).append(reply)
        return True

    def request(self, line: str, *, timeout: float = 10.0) -> Reply:
        """Send one command; return its reply (any status). Events meanwhile are queued."""
        if any(c in line for c in "\r\n"):
            raise ValueError("a control command is one line")
        try:
            self._sock.sendall(line.encode() + b"\r\n")
        except OSError as exc:
            raise ControlError(f"control connection to tor failed: {exc}") from None
        deadline = time.monotonic() + timeout
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not self._receive(left):
                raise ControlError(f"tor did not answer {line.split()[0]} within {timeout:g} s")
        return self._pending.popleft()

    def command(self, line: str, *, timeout: float = 10.0) -> Reply:
        """Like request(), but a non-2xx reply raises ControlError with tor's message."""
        reply = self.request(line, timeout=timeout)
        if not reply.ok:
            raise ControlError(f"tor refused {line.split()[0]}: {reply.status} {reply.text}")
        return reply

    def next_event(self, timeout: float) -> Reply | None:
        """The next queued or arriving event, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0 or not self._receive(left):
                return None
        return self.events.popleft()

    # -- commands ---------------------------------------------------------------------------

    def protocolinfo(self) -> tuple[list[str], str | None]:
        """(auth methods, cookie file) from PROTOCOLINFO."""
        methods: list[str] = []
        cookiefile: str | None = None
        for line in self.command("PROTOCOLINFO 1").lines:
            words, pairs = split_args(line.text)
            if words[:1] == ["AUTH"]:
                methods = [m for m in pairs.get("METHODS", "").split(",") if m]
                cookiefile = pairs.get("COOKIEFILE")
        return methods, cookiefile

    def authenticate(self, cookie: Path | None = None) -> str:
        """Authenticate with what tor offers (NULL, SAFECOOKIE, COOKIE); return the method.

        `cookie` overrides the COOKIEFILE tor names (ours is known; a system tor tells).
        """
        methods, cookiefile = self.protocolinfo()
        if "NULL" in methods:
            self.command("AUTHENTICATE")
            return "NULL"
        path = cookie or (Path(cookiefile) if cookiefile else None)
        if path is None or not ({"SAFECOOKIE", "COOKIE"} & set(methods)):
            raise ControlError(
                f"tor's control port {self.address} wants "
                + (",".join(methods) or "an unknown method")
                + " authentication; netspectre supports cookie or none",
                "enable CookieAuthentication 1 in that tor's torrc",
            )
        try:
            # O_NOFOLLOW: the cookie's directory may belong to the tor account; a symlink
            # planted there must not make root read (and send) another file.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                secret = os.read(fd, 64)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ControlError(
                f"cannot read tor's control cookie {path}: {exc.strerror}",
                "run as root (or a member of the tor group)",
            ) from None
        if len(secret) != 32:
            raise ControlError(f"{path} is not a tor control cookie (expected 32 bytes)")
        if "SAFECOOKIE" in methods:
            # The server proves it knows the cookie before we reveal anything derived from it.
            nonce = os.urandom(32)
            reply = self.command(f"AUTHCHALLENGE SAFECOOKIE {nonce.hex()}")
            _, pairs = split_args(reply.text)
            try:
                server_hash = bytes.fromhex(pairs["SERVERHASH"])
                server_nonce = bytes.fromhex(pairs["SERVERNONCE"])
            except (KeyError, ValueError):
                raise ControlError(f"malformed AUTHCHALLENGE reply: {reply.text}") from None
            message = secret + nonce + server_nonce
            expected = hmac.new(_SERVER_KEY, message, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, server_hash):
                raise ControlError(
                    f"{self.address} failed the safe-cookie check: it is not the tor "
                    f"that wrote {path}"
                )
            client = hmac.new(_CLIENT_KEY, message, hashlib.sha256).hexdigest()
            self.command(f"AUTHENTICATE {client}")
            return "SAFECOOKIE"
        self.command(f"AUTHENTICATE {secret.hex()}")
        return "COOKIE"

    def getinfo(self, *keys: str) -> dict[str, str]:
        values = keyvalues(self.command("GETINFO " + " ".join(keys)))
        return {k: v[0] if v else "" for k, v in values.items()}

    def getconf(self, *keys: str) -> dict[str, list[str]]:
        """Each option → its values; an empty list when unset (tor's default applies)."""
        return keyvalues(self.command("GETCONF " + " ".join(keys)))

    def setevents(self, *names: str) -> None:
        self.command("SETEVENTS " + " ".join(names))

    def signal(self, name: str) -> None:
        self.command(f"SIGNAL {name}")
