"""The exit check: GET an IsTor/IP JSON document through Tor's SocksPort (http or https).

The request and response handling is plain functions over bytes (tested without a network);
fetch() adds the socket, SOCKS5 and, for https, TLS with SNI and certificate checks.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from netspectre import __version__
from netspectre.errors import TorError
from netspectre.tor import socks

MAX_RESPONSE = 1 << 20


class CheckError(TorError):
    pass


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CheckError(f"{url}: not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CheckError(f"{url}: bad port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path)


def request(t: Target) -> bytes:
    return (
        f"GET {t.path} HTTP/1.1\r\n"
        f"Host: {t.host_header}\r\n"
        f"User-Agent: netspectre/{__version__}\r\n"
        "Accept: application/json\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, sep, body = body.partition(b"\r\n")
        if not sep:
            raise CheckError("truncated chunked response")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise CheckError("malformed chunked response") from None
        if size == 0:
            return out
        out += body[:size]
        body = body[size + 2 :]


def response(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of an HTTP/1.x response read to EOF."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise CheckError("no complete HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") \
            or not status_line[1].isdigit():
        raise CheckError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in lines[1:])
    }
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif headers.get("content-length", "").isdigit():
        body = body[: int(headers["content-length"])]
    return int(status_line[1]), body


def verdict(body: bytes) -> tuple[bool, str]:
    """{"IsTor": true, "IP": "…"} → (is_tor, ip)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CheckError("the answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("IsTor"), bool) \
            or not isinstance(data.get("IP"), str):
        raise CheckError('the answer lacks {"IsTor": bool, "IP": string}')
    return data["IsTor"], data["IP"]


def fetch(url: str, proxy: tuple[str, int], *, timeout: float) -> tuple[bool, str]:
    t = target(url)
    sock: socket.socket = socks.connect(proxy, t.host, t.port, timeout=timeout)
    try:
        if t.scheme == "https":
            import ssl  # only when needed: it is the heaviest import here

            context = ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=t.host)
            except ssl.SSLError as exc:
                raise CheckError(f"TLS with {t.host} failed: {exc.reason or exc}") from None
        sock.sendall(request(t))
        raw = b""
        while len(raw) <= MAX_RESPONSE:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except TimeoutError:
        raise CheckError(f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise CheckError(f"connection failed: {exc}") from None
    finally:
        sock.close()
    status, body = response(raw)
    if status != 200:
        raise CheckError(f"HTTP {status}")
    return verdict(body)
