"""Does an nftables table exist? One netlink request to the kernel (no `nft` process).

`start` asks before committing: a table that is not there needs no replace prelude, and the
prelude's `delete table` costs the kernel 13-20 ms of a ~90 ms start (bench/perf.py).
"""

from __future__ import annotations

import errno
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NFTA_TABLE_NAME = 1
FAMILIES = {"inet": 1, "ip": 2, "ip6": 10, "netdev": 5, "arp": 3, "bridge": 7}

NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, 0 here)
NLA = struct.Struct("=HH")


def request(family: str, name: str, seq: int = 1) -> bytes:
    """The NFT_MSG_GETTABLE message for one table. Pure."""
    value = name.encode() + b"\0"
    attr = NLA.pack(NLA.size + len(value), NFTA_TABLE_NAME) + value
    attr += b"\0" * (-len(attr) % 4)
    body = NFGENMSG.pack(FAMILIES[family], 0, 0) + attr
    kind = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
    return NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def answer(data: bytes, seq: int = 1) -> bool | None:
    """True: the kernel sent the table; False: ENOENT; None: anything else. Pure."""
    found = False
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, _, got_seq, _ = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or got_seq != seq:
            return None
        if kind == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, offset + NLMSG.size)[0]
            if code == 0:
                return found
            return False if code == errno.ENOENT else None
        found = True  # NFT_MSG_NEWTABLE: the table's description
        offset += (length + 3) & ~3
    return None


def table_exists(family: str, name: str) -> bool | None:
    """None when the kernel cannot be asked (no nf_tables, not permitted): callers assume yes."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                           NETLINK_NETFILTER) as sock:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            sock.send(request(family, name))
            data = b""
            while True:
                chunk = sock.recv(65536)
                data += chunk
                verdict = answer(data)
                if verdict is not None or not chunk:
                    return verdict
                if _complete(data):
                    return None
    except OSError:
        return None


def _complete(data: bytes) -> bool:
    """The buffer holds an NLMSG_ERROR (ack or error): nothing more will come."""
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, *_ = NLMSG.unpack_from(data, offset)
        if kind == NLMSG_ERROR or length < NLMSG.size:
            return True
        offset += (length + 3) & ~3
    return False


