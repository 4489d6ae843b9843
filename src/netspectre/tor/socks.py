"""A minimal SOCKS5 client (RFC 1928, no auth, CONNECT) for talking through Tor's SocksPort.

Hostnames go to Tor as ATYP 3 (domain), so Tor resolves them at the exit: no DNS query ever
leaves this machine for a name we connect to. Tor's extended error codes (prop. 304,
`ExtendedErrors` on the SocksPort) are mapped to readable messages.
"""

from __future__ import annotations

import ipaddress
import socket

from netspectre.errors import TorError

REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable (Tor could not resolve or reach it)",
    0x05: "connection refused by the destination",
    0x06: "TTL expired (Tor timed out building a circuit)",
    0x07: "command not supported",
    0x08: "address type not supported",
    0xF0: "onion service descriptor cannot be found",
    0xF1: "onion service descriptor is invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service needs client authorization",
    0xF5: "onion service client authorization is wrong",
    0xF6: "invalid onion address",
    0xF7: "onion service introduction timed out",
}


class SocksError(TorError):
    pass


def greeting() -> bytes:
    return b"\x05\x01\x00"  # version 5, one method: no authentication


def auth_greeting() -> bytes:
    return b"\x05\x01\x02"  # version 5, one method: username/password (RFC 1929)


def auth_request(username: bytes, password: bytes) -> bytes:
    """Tor does not check the credentials: it isolates streams by them (IsolateSOCKSAuth)."""
    return b"\x01" + bytes([len(username)]) + username + bytes([len(password)]) + password


def resolve_request(name: str) -> bytes:
    """Tor's RESOLVE extension (command 0xF0): the exit resolves the name."""
    return b"\x05\xf0" + connect_request(name, 0)[2:]


def connect_request(host: str, port: int) -> bytes:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            name = host.encode("idna")
        except UnicodeError:
            raise SocksError(f"{host[:80]!r} is not a valid hostname") from None
        if not 0 < len(name) < 256:
            raise SocksError(f"hostname {host!r} is too long for SOCKS5") from None
        address = b"\x03" + bytes([len(name)]) + name
    else:
        address = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    return b"\x05\x01\x00" + address + port.to_bytes(2, "big")


def check_method(reply: bytes) -> None:
    if len(reply) != 2 or reply[0] != 5:
        raise SocksError(f"not a SOCKS5 proxy (answered {reply!r})")
    if reply[1] != 0:
        raise SocksError("the SOCKS5 proxy wants authentication", "use Tor's SocksPort")


def reply_rest(head: bytes) -> int:
    """Given the first 5 bytes of a CONNECT reply: how many bytes follow (address + port).

    Raises SocksError for a refusal, with Tor's reason.
    """
    if len(head) != 5 or head[0] != 5:
        raise SocksError(f"malformed SOCKS5 reply {head!r}")
    if head[1] != 0:
        raise SocksError(
            f"Tor could not connect: {REPLIES.get(head[1], f'SOCKS5 error {head[1]:#x}')}"
        )
    atyp = head[3]
    if atyp == 1:
        return 4 - 1 + 2
    if atyp == 4:
        return 16 - 1 + 2
    if atyp == 3:
        return head[4] + 2
    raise SocksError(f"malformed SOCKS5 reply (address type {atyp})")


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SocksError("the SOCKS5 proxy closed the connection")
        data += chunk
    return data


def connect(proxy: tuple[str, int], host: str, port: int, *, timeout: float) -> socket.socket:
    """A TCP connection to host:port through the SOCKS5 proxy; the caller closes it."""
    try:
        sock = socket.create_connection(proxy, timeout=timeout)
    except OSError as exc:
        raise SocksError(
            f"cannot reach Tor's SocksPort {proxy[0]}:{proxy[1]}: {exc.strerror or exc}",
            "is tor running? (`netspectre status`)",
        ) from None
    try:
        sock.sendall(greeting())
        check_method(_exactly(sock, 2))
        sock.sendall(connect_request(host, port))
        _exactly(sock, reply_rest(_exactly(sock, 5)))
    except TimeoutError:
        sock.close()
        raise SocksError(f"Tor did not connect to {host}:{port} within {timeout:g} s") from None
    except OSError as exc:
        sock.close()
        raise SocksError(f"SOCKS5 exchange with Tor failed: {exc}") from None
    except SocksError:
        sock.close()
        raise
    return sock
