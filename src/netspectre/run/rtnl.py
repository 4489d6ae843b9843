"""The run namespace's loopback, policy rules and routes over rtnetlink: what `ip -batch` did
(netsetup.ip_batches, kept as the readable form and the golden), in one socket and no process.
"""

from __future__ import annotations

import os
import socket
import struct

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE = 16, 24, 32
NLMSG_ERROR = 2
IFF_UP = 0x1
RTA_OIF, RTA_PREFSRC, RTA_TABLE = 4, 7, 15
FRA_PRIORITY, FRA_TABLE, FRA_IP_PROTO, FRA_DPORT_RANGE = 6, 15, 22, 24
FR_ACT_TO_TBL = 1
RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST = 3, 0, 253, 1
LO_INDEX = 1  # loopback is always index 1 in a network namespace


def _attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


class Rtnl:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, body: bytes, what: str) -> None:
        self.seq += 1
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if kind != RTM_NEWLINK
                                               else 0)
        self.sock.send(struct.pack("IHHII", 16 + len(body), kind, flags, self.seq, 0) + body)
        while True:
            reply = self.sock.recv(65536)
            _len, rtype, _f, seq = struct.unpack("IHHI", reply[:12])
            if rtype == NLMSG_ERROR and seq == self.seq:
                err = -struct.unpack("i", reply[16:20])[0]
                if err:
                    raise OSError(err, f"{what}: {os.strerror(err)}")
                return

    def link_up(self, index: int = LO_INDEX) -> None:
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        self.request(RTM_NEWLINK, body, "set lo up")

    def rule(self, family: int, proto: int, table: int, pref: int, dport: int | None = None
             ) -> None:
        body = struct.pack("BBBBBBBBI", family, 0, 0, 0, table, 0, 0, FR_ACT_TO_TBL, 0)
        body += _attr(FRA_PRIORITY, struct.pack("I", pref)) + _attr(FRA_TABLE,
                                                                     struct.pack("I", table))
        body += _attr(FRA_IP_PROTO, struct.pack("B", proto))
        if dport is not None:
            body += _attr(FRA_DPORT_RANGE, struct.pack("HH", dport, dport))
        self.request(RTM_NEWRULE, body, f"policy rule (protocol {proto})")

    def default_route(self, family: int, table: int, src: str | None = None) -> None:
        scope = RT_SCOPE_LINK if family == socket.AF_INET else RT_SCOPE_UNIVERSE
        body = struct.pack("BBBBBBBBI", family, 0, 0, 0, table, RTPROT_BOOT, scope, RTN_UNICAST,
                           0)
        body += _attr(RTA_TABLE, struct.pack("I", table)) + _attr(RTA_OIF,
                                                                   struct.pack("I", LO_INDEX))
        if src:
            body += _attr(RTA_PREFSRC, socket.inet_pton(family, src))
        self.request(RTM_NEWROUTE, body, "default route via lo")


def apply(ipv6: bool, table: int, dns_port: int) -> None:
    """netsetup.ip_batches(ipv6), in order."""
    nl = Rtnl()
    try:
        nl.link_up()
        families = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, None)) if ipv6 else (
            (socket.AF_INET, "127.0.0.1"),)
        for family, src in families:
            nl.rule(family, socket.IPPROTO_TCP, table, 100)
            nl.rule(family, socket.IPPROTO_UDP, table, 101, dport=dns_port)
            nl.default_route(family, table, src)
    finally:
        nl.close()
