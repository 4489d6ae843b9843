"""The run's relay, outside the sandbox: TCP to Tor's SocksPort, DNS answered through Tor.

It serves the listening sockets the sandbox created inside its namespace (accept() works on a
socket of another namespace; SO_ORIGINAL_DST gives the program's real destination). Every
stream and every resolve carries the run's SOCKS credentials, so Tor keeps the run on circuits
of its own. A failure resets the program's connection at once (SO_LINGER 0), never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from netspectre.run import dnsanswer, linux
from netspectre.tor import socks

CHUNK = 1 << 20  # at most what the pipe holds (its size is raised to this where allowed)
SPLICE_F_MOVE, SPLICE_F_NONBLOCK = 1, 2
F_SETPIPE_SZ = 1031
SOCKS_TIMEOUT = 120.0  # Tor's own circuit timeouts come first


@dataclass(frozen=True)
class Tor:
    """Where the relay finds Tor, and the run's credentials."""

    host: str
    port: int
    username: bytes
    password: bytes


@dataclass
class OnionMap:
    """`.onion` names the responder handed out, by the address it gave (and back)."""

    network: ipaddress.IPv4Network
    by_name: dict[str, str] = field(default_factory=dict)
    by_address: dict[str, str] = field(default_factory=dict)

    def address(self, name: str) -> str:
        if name not in self.by_name:
            addr = str(self.network[1 + len(self.by_name) % (self.network.num_addresses - 2)])
            self.by_address.pop(addr, None)
            self.by_name[name], self.by_address[addr] = addr, name
        return self.by_name[name]


async def _exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise socks.SocksError("Tor closed the SOCKS connection")
        data += chunk
    return data


async def _socks(tor: Tor, request: bytes) -> tuple[socket.socket, bytes]:
    """A SOCKS5 exchange with the run's credentials; the connected socket and the reply's
    address bytes (after the 4-byte head)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in tor.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (tor.host, tor.port))
        # One message at a time: tor keeps one reply per read, so a pipelined greeting and
        # authentication get only the second answer.
        await loop.sock_sendall(sock, socks.auth_greeting())
        method = await _exactly(loop, sock, 2)
        if method != b"\x05\x02":
            raise socks.SocksError(f"Tor's SocksPort refused username/password ({method!r})")
        await loop.sock_sendall(sock, socks.auth_request(tor.username, tor.password))
        if (await _exactly(loop, sock, 2))[1] != 0:
            raise socks.SocksError("Tor's SocksPort refused the run's credentials")
        await loop.sock_sendall(sock, request)
        head = await _exactly(loop, sock, 5)
        rest = await _exactly(loop, sock, socks.reply_rest(head))
    except BaseException:
        sock.close()
        raise
    return sock, head[3:] + rest


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _ready(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    add, remove = ((loop.add_writer, loop.remove_writer) if writable
                   else (loop.add_reader, loop.remove_reader))
    add(fd, ready.set)
    try:
        await ready.wait()
    finally:
        remove(fd)


async def _pump(src: socket.socket, dst: socket.socket) -> None:
    """src → dst through a pipe with splice(2): the bytes never enter this process, so a
    stream costs no buffer here and no copy."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # fewer trips through the loop per MiB
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
    flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
    try:
        while True:
            try:
                n = os.splice(src.fileno(), w, CHUNK, flags=flags)
            except BlockingIOError:
                await _ready(src.fileno(), writable=False)
                continue
            if n == 0:
                break
            while n:
                try:
                    n -= os.splice(r, dst.fileno(), n, flags=flags)
                except BlockingIOError:
                    await _ready(dst.fileno(), writable=True)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
    except OSError:
        _reset(dst)
        _reset(src)
    finally:
        os.close(r)
        os.close(w)


class Relay:
    def __init__(self, tor: Tor, onions: OnionMap, listeners: frozenset[tuple[str, int]],
                 notice: Callable[[str], None] = lambda _line: None):
        self.tor, self.onions, self.listeners = tor, onions, listeners
        self.notice = notice  # one line per refused stream (the CLI prints it, as torsocks does)
        self.tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def serve_tcp(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            conn, _ = await loop.sock_accept(listener)
            self._spawn(self._stream(conn))

    async def _stream(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            host, port = linux.original_destination(conn)
        except OSError:
            _reset(conn)
            return
        if (host, port) in self.listeners:  # a direct connection to the relay itself
            _reset(conn)
            return
        target = self.onions.by_address.get(host, host)
        try:
            upstream, _ = await asyncio.wait_for(
                _socks(self.tor, socks.connect_request(target, port)), SOCKS_TIMEOUT)
        except socks.SocksError as exc:
            self.notice(f"{target}:{port}: {exc.message}")
            _reset(conn)
            return
        except (OSError, TimeoutError) as exc:
            self.notice(f"{target}:{port}: Tor's SocksPort {self.tor.host}:{self.tor.port}: "
                        f"{getattr(exc, 'strerror', None) or exc or 'timed out'}")
            _reset(conn)
            return
        for s in (conn, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(_pump(conn, upstream), _pump(upstream, conn))
        finally:
            conn.close()
            upstream.close()

    async def resolve(self, packet: bytes) -> bytes | None:
        q = dnsanswer.read(packet)
        if q is None:
            return None
        what = dnsanswer.wanted(q)
        if what == "notimp":
            return dnsanswer.answer(q, dnsanswer.NOTIMP)
        if what == "empty":
            return dnsanswer.answer(q, dnsanswer.NOERROR)
        if what == "onion":
            return dnsanswer.answer(q, dnsanswer.NOERROR, (self.onions.address(q.name),))
        try:
            sock, reply = await asyncio.wait_for(
                _socks(self.tor, socks.resolve_request(q.name)), SOCKS_TIMEOUT)
        except socks.SocksError:
            return dnsanswer.answer(q, dnsanswer.NXDOMAIN)
        except (OSError, TimeoutError):
            return dnsanswer.answer(q, dnsanswer.SERVFAIL)
        sock.close()
        if reply[0] == 1:
            return dnsanswer.answer(q, dnsanswer.NOERROR, (socket.inet_ntoa(reply[1:5]),))
        return dnsanswer.answer(q, dnsanswer.NOERROR)

    async def serve_udp(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        while True:
            packet, peer = await loop.sock_recvfrom(sock, 4096)
            self._spawn(self._datagram(sock, packet, peer))

    async def _datagram(self, sock: socket.socket, packet: bytes, peer: tuple[str, int]) -> None:
        reply = await self.resolve(packet)
        if reply is not None:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_sendto(sock, reply, peer)

    async def serve_dns_tcp(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        while True:
            conn, _ = await loop.sock_accept(listener)
            self._spawn(self._dns_stream(conn))

    async def _dns_stream(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        try:
            while True:
                size = struct.unpack("!H", await _exactly(loop, conn, 2))[0]
                reply = await self.resolve(await _exactly(loop, conn, size))
                if reply is None:
                    break
                await loop.sock_sendall(conn, struct.pack("!H", len(reply)) + reply)
        except (OSError, socks.SocksError):
            pass
        finally:
            conn.close()
