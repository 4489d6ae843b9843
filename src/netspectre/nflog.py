"""The refused packets our log rules send to an nfnetlink_log group, read over netlink.

Pure message building and parsing (`config_request`, `parse`) and one `Listener` socket that
blocks in the kernel until a message or its timeout: no busy loop, no daemon, no kernel log.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from netspectre.errors import Error

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4

# enum nfulnl_attr_config
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH = 1, 2, 5
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
# enum nfulnl_attr_type (only what we read)
NFULA_PACKET_HDR, NFULA_PAYLOAD, NFULA_PREFIX, NFULA_UID, NFULA_GID = 1, 9, 10, 11, 14
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

# IPv6 header (40) + a few extension headers + the transport header: enough to classify.
COPY_RANGE = 128

NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (the group, big endian)
NLA = struct.Struct("=HH")


@dataclass(frozen=True)
class Logged:
    """One packet a log rule of ours sent: the rule's prefix (a counter name) and the socket
    owner the kernel knew (None: no local full socket, e.g. forwarded or a TIME_WAIT reply)."""

    prefix: str
    family: int  # 4 or 6
    uid: int | None
    gid: int | None
    payload: bytes  # from the IP header, at most COPY_RANGE bytes


def _attr(kind: int, value: bytes) -> bytes:
    raw = NLA.pack(NLA.size + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def config_request(group: int, attrs: bytes, seq: int) -> bytes:
    """An NFULNL_MSG_CONFIG message for one group, acknowledged. Pure."""
    body = NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(group)) + attrs
    kind = NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG
    return NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_requests(group: int) -> tuple[bytes, ...]:
    """Bind the group; copy the packet's first COPY_RANGE bytes; send each packet at once
    (a queue threshold of 1: the kernel's default batches up to a second). The socket's uid
    and gid come without asking: the kernel adds NFULA_UID/GID whenever it knows the socket."""
    return (
        config_request(group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), 1),
        config_request(group, _attr(NFULA_CFG_MODE, struct.pack(
            "!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0)), 2),
        config_request(group, _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)), 3),
    )


def acks(data: bytes) -> dict[int, int]:
    """{seq: errno (0 = ok)} for the NLMSG_ERROR messages in a buffer. Pure."""
    found: dict[int, int] = {}
    for kind, seq, body in _messages(data):
        if kind == NLMSG_ERROR and len(body) >= 4:
            found[seq] = -struct.unpack_from("=i", body)[0]
    return found


def _messages(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, _, seq, _ = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or offset + length > len(data):
            break
        out.append((kind, seq, data[offset + NLMSG.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def _attrs(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + NLA.size <= len(data):
        length, kind = NLA.unpack_from(data, offset)
        if length < NLA.size or offset + length > len(data):
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + NLA.size:offset + length])
        offset += (length + 3) & ~3
    return found


def parse(data: bytes) -> list[Logged]:
    """The NFULNL_MSG_PACKET messages in one datagram from the kernel. Pure."""
    packets: list[Logged] = []
    for kind, _, body in _messages(data):
        if kind != (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET) or len(body) < NFGENMSG.size:
            continue
        family, _, _ = NFGENMSG.unpack_from(body)
        attrs = _attrs(body[NFGENMSG.size:])
        if family not in (socket.AF_INET, socket.AF_INET6) or NFULA_PAYLOAD not in attrs:
            continue
        uid, gid = attrs.get(NFULA_UID), attrs.get(NFULA_GID)
        packets.append(Logged(
            prefix=attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace"),
            family=4 if family == socket.AF_INET else 6,
            uid=struct.unpack("!I", uid[:4])[0] if uid and len(uid) >= 4 else None,
            gid=struct.unpack("!I", gid[:4])[0] if gid and len(gid) >= 4 else None,
            payload=attrs[NFULA_PAYLOAD],
        ))
    return packets


class Listener:
    """Our group's netlink socket. `receive` blocks until packets come or the timeout ends."""

    def __init__(self, group: int, *, rcvbuf: int = 1 << 18) -> None:
        self.group = group
        self.lost = 0  # messages the kernel dropped because our buffer was full (ENOBUFS)
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       NETLINK_NETFILTER)
        except OSError as exc:
            raise Error(f"cannot open a netfilter netlink socket: {exc.strerror or exc}",
                        "watch needs root and a kernel with nfnetlink") from None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, 0))
            self._configure(bind_requests(group))
        except BaseException:
            self._sock.close()
            raise

    def _configure(self, requests: tuple[bytes, ...]) -> None:
        self._sock.settimeout(2.0)
        for seq, request in enumerate(requests, start=1):
            self._sock.send(request)
            while True:
                try:
                    answer = acks(self._sock.recv(65536))
                except OSError as exc:
                    raise Error(f"nflog group {self.group}: no answer from the kernel: "
                                f"{exc.strerror or exc}", "is nfnetlink_log available?") from None
                if seq in answer:
                    break
            code = answer[seq]
            if code == errno.EBUSY:
                raise Error(f"nflog group {self.group} is already read by another process",
                            "another `netspectre watch` (or ulogd) is running; end it first")
            if code:
                name = errno.errorcode.get(code, str(code))
                raise Error(f"nflog group {self.group}: the kernel refused ({name})",
                            "is the nfnetlink_log module available? (modprobe nfnetlink_log)")

    def receive(self, timeout: float) -> list[Logged]:
        """What arrived within `timeout` seconds (blocks in the kernel meanwhile)."""
        self._sock.settimeout(max(timeout, 0.001))
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return []
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.lost += 1
                return []
            raise
        found = parse(data)
        # Drain what is already queued without blocking again.
        self._sock.setblocking(False)
        try:
            while len(found) < 1000:
                found += parse(self._sock.recv(65536))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            self.lost += 1
        return found

    def close(self) -> None:
        try:
            self._sock.setblocking(True)
            self._sock.settimeout(0.5)
            unbind = config_request(self.group, _attr(NFULA_CFG_CMD,
                                                      bytes([NFULNL_CFG_CMD_UNBIND])), 9)
            self._sock.send(unbind)
        except OSError:
            pass  # closing the socket unbinds too
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
