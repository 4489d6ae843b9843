"""SOCKS5 framing and the exit check, against a fake SOCKS5 + HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netspectre.tor import exitcheck, socks
from netspectre.tor.exitcheck import CheckError
from netspectre.tor.socks import SocksError


def test_request_framing() -> None:
    assert socks.greeting() == b"\x05\x01\x00"
    assert socks.connect_request("check.torproject.org", 443) == (
        b"\x05\x01\x00\x03\x14check.torproject.org\x01\xbb")
    assert socks.connect_request("203.0.113.7", 80) == b"\x05\x01\x00\x01\xcb\x00\x71\x07\x00\x50"
    assert socks.connect_request("[2001:db8::1]", 80)[3] == 4
    with pytest.raises(SocksError, match="not a valid hostname"):
        socks.connect_request("a" * 300, 80)
    with pytest.raises(SocksError, match="too long"):
        socks.connect_request(".".join(["a" * 60] * 5), 80)


def test_reply_framing_and_tor_errors() -> None:
    assert socks.reply_rest(b"\x05\x00\x00\x01\x7f") == 5
    assert socks.reply_rest(b"\x05\x00\x00\x04\x20") == 17
    assert socks.reply_rest(b"\x05\x00\x00\x03\x0b") == 13
    with pytest.raises(SocksError, match="onion service descriptor cannot be found"):
        socks.reply_rest(b"\x05\xf0\x00\x01\x00")
    with pytest.raises(SocksError, match="TTL expired"):
        socks.reply_rest(b"\x05\x06\x00\x01\x00")
    with pytest.raises(SocksError, match="not a SOCKS5 proxy"):
        socks.check_method(b"HT")
    with pytest.raises(SocksError, match="wants authentication"):
        socks.check_method(b"\x05\x02")


@dataclass
class FakeProxy:
    """SOCKS5 server that, after CONNECT, plays the destination: one HTTP response, then close."""

    response: bytes = b""
    rep: int = 0
    tls: ssl.SSLContext | None = None
    requests: list[tuple[str, int, bytes]] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                try:
                    self.one(conn)
                except (OSError, ValueError):
                    continue

    def one(self, conn: socket.socket) -> None:
        conn.recv(3)
        conn.sendall(b"\x05\x00")
        head = conn.recv(5)
        name = conn.recv(head[4]).decode()
        port = int.from_bytes(conn.recv(2), "big")
        conn.sendall(bytes([5, self.rep, 0, 1, 0, 0, 0, 0, 0, 0]))
        if self.rep:
            return
        stream: socket.socket = conn
        if self.tls is not None:
            stream = self.tls.wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = stream.recv(4096)
            if not chunk:
                break
            data += chunk
        self.requests.append((name, port, data))
        stream.sendall(self.response)
        if stream is not conn:
            stream.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy() -> Iterator[FakeProxy]:
    fake = FakeProxy()
    yield fake
    fake.close()


def ok(body: dict[str, object], *, chunked: bool = False) -> bytes:
    text = json.dumps(body).encode()
    if chunked:
        half = len(text) // 2
        payload = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, text[:half], len(text) - half,
                                                          text[half:])
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + payload
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)


@pytest.mark.parametrize("chunked", [False, True])
def test_fetch_http_through_socks(proxy: FakeProxy, chunked: bool) -> None:
    proxy.response = ok({"IsTor": True, "IP": "203.0.113.66"}, chunked=chunked)
    got = exitcheck.fetch("http://check.lab.example:8080/api/ip?x=1", ("127.0.0.1", proxy.port),
                      timeout=5)
    assert got == (True, "203.0.113.66")
    name, port, request = proxy.requests[0]
    assert (name, port) == ("check.lab.example", 8080)  # the name goes to Tor, not to DNS
    assert request.startswith(b"GET /api/ip?x=1 HTTP/1.1\r\nHost: check.lab.example:8080\r\n")


def test_fetch_reports_tor_refusals(proxy: FakeProxy) -> None:
    proxy.rep = 4
    with pytest.raises(SocksError, match="host unreachable"):
        exitcheck.fetch("http://check.lab.example/", ("127.0.0.1", proxy.port), timeout=5)


def test_fetch_rejects_bad_answers(proxy: FakeProxy) -> None:
    proxy.response = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(CheckError, match="HTTP 503"):
        exitcheck.fetch("http://check.lab.example/", ("127.0.0.1", proxy.port), timeout=5)
    proxy.response = ok({"IsTor": "yes", "IP": "203.0.113.66"})
    with pytest.raises(CheckError, match="lacks"):
        exitcheck.fetch("http://check.lab.example/", ("127.0.0.1", proxy.port), timeout=5)


def test_no_proxy_listening() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(SocksError, match="cannot reach Tor's SocksPort"):
        exitcheck.fetch("http://check.lab.example/", ("127.0.0.1", port), timeout=2)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_https_sends_sni_and_verifies_the_certificate(proxy: FakeProxy, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=check.lab.example", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    server.sni_callback = lambda sock, name, ctx: proxy.sni.append(name)
    proxy.tls = server
    proxy.response = ok({"IsTor": False, "IP": "203.0.113.9"})
    # A self-signed certificate must fail verification: the check trusts only real CAs.
    with pytest.raises(CheckError, match="TLS with check.lab.example failed"):
        exitcheck.fetch("https://check.lab.example/api/ip", ("127.0.0.1", proxy.port), timeout=5)
    assert proxy.sni == ["check.lab.example"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"garbage", "no complete HTTP response"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunked"),
    ],
)
def test_response_parsing_errors(raw: bytes, error: str) -> None:
    with pytest.raises(CheckError, match=error):
        exitcheck.response(raw)


def test_urls() -> None:
    t = exitcheck.target("https://check.torproject.org/api/ip")
    assert (t.scheme, t.host, t.port, t.path, t.host_header) == (
        "https", "check.torproject.org", 443, "/api/ip", "check.torproject.org")
    assert exitcheck.target("http://[2001:db8::2]:81").host_header == "[2001:db8::2]:81"
    with pytest.raises(CheckError, match="not an http"):
        exitcheck.target("ftp://example.org/")
    with pytest.raises(CheckError, match="not JSON"):
        exitcheck.verdict(b"<html>")
