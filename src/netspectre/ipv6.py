"""Static IPv6 addresses and routes: disabling IPv6 deletes them and re-enabling does not bring
them back (only link-local and autoconfigured ones return), so `start` records them and `stop`
re-adds what is missing. Parsing and planning are pure; the snapshot is one netlink dump of
addresses and one of routes (in the shape `ip -j -6` prints), restore runs `ip`.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from netspectre import system
from netspectre.errors import Error

ADDR_FLAGS = ("nodad", "noprefixroute", "mngtmpaddr", "optimistic", "home")
# Routes the kernel or router advertisements recreate by themselves.
AUTOMATIC_PROTOCOLS = ("kernel", "ra")


def parse_addrs(ip_json: str) -> list[dict[str, Any]]:
    """`ip -j -6 addr show` → static global addresses ({dev, local, prefixlen, flags})."""
    return select_addrs(json.loads(ip_json or "[]"))


def select_addrs(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Links as `ip -j -6 addr show` has them → the static global addresses."""
    found = []
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("family") != "inet6" or a.get("scope") not in ("global", "site"):
                continue
            if a.get("dynamic") or a.get("valid_life_time", 0) != 4294967295:
                continue  # SLAAC/DHCPv6: their daemon or the kernel brings them back
            found.append({
                "dev": link["ifname"],
                "local": a["local"],
                "prefixlen": int(a["prefixlen"]),
                "flags": [f for f in ADDR_FLAGS if a.get(f)],
            })
    return found


def parse_routes(ip_json: str) -> list[dict[str, Any]]:
    """`ip -j -6 route show table all` → routes someone configured (not kernel/RA, unicast)."""
    return select_routes(json.loads(ip_json or "[]"))


def select_routes(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Routes as `ip -j -6 route show table all` has them → the ones someone configured."""
    found: list[dict[str, Any]] = []
    for r in routes:
        if r.get("protocol") in AUTOMATIC_PROTOCOLS or r.get("type", "unicast") != "unicast":
            continue
        if "dev" not in r:
            continue
        found.append({k: r[k] for k in ("dst", "gateway", "dev", "metric", "table", "protocol",
                                         "pref") if k in r})
    return found


def _addr_key(a: dict[str, Any]) -> tuple[str, str, int]:
    return (a["dev"], a["local"], a["prefixlen"])


def _route_key(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (r["dst"], r.get("gateway", ""), r["dev"], str(r.get("table", "main")))


def plan(saved: dict[str, Any], current: dict[str, Any]) -> list[list[str]]:
    """`ip` commands that put back the saved addresses, then routes, missing from `current`."""
    have_addrs = {_addr_key(a) for a in current.get("addrs", [])}
    have_routes = {_route_key(r) for r in current.get("routes", [])}
    argvs = []
    for a in saved.get("addrs", []):
        if _addr_key(a) not in have_addrs:
            argvs.append(["ip", "-6", "addr", "add", f"{a['local']}/{a['prefixlen']}",
                          "dev", a["dev"], *a["flags"]])
    for r in saved.get("routes", []):
        if _route_key(r) in have_routes:
            continue
        argv = ["ip", "-6", "route", "replace", r["dst"]]
        if "gateway" in r:
            argv += ["via", r["gateway"]]
        argv += ["dev", r["dev"]]
        for key, word in (("metric", "metric"), ("table", "table"), ("protocol", "proto"),
                          ("pref", "pref")):
            if key in r:
                argv += [word, str(r[key])]
        argvs.append(argv)
    return argvs


# --- netlink: the kernel's answer in the shape `ip -j -6` prints (pure) ------------------------

AF_INET6 = 10
NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
#                                      type, flags
RTA = struct.Struct("=HH")
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 6, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE, RTA_PREF = 1, 4, 5, 6, 15, 20
IFA_F_PERMANENT = 0x80
IFA_F_BITS = {"nodad": 0x02, "optimistic": 0x04, "home": 0x10, "mngtmpaddr": 0x100,
              "noprefixroute": 0x200}
RTM_F_CLONED = 0x200  # route cache exceptions: `ip route show` hides them too
RTN_UNICAST = 1
# iproute2's built-in names (lib/rt_names.c); anything else it prints as a number.
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
TABLES = {253: "default", 254: "main", 255: "local"}
PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated",
             9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk",
             16: "dhcp", 18: "keepalived", 42: "babel", 186: "bgp", 187: "isis", 188: "ospf",
             189: "rip", 192: "eigrp"}
RTN_TYPES = {2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
             7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
PREFS = {0: "medium", 1: "high", 3: "low"}
RTPROT_BOOT, RT_TABLE_MAIN = 3, 254


def messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    off = 0
    while off + NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG.unpack_from(data, off)
        if length < NLMSG.size:
            break
        yield kind, data[off + NLMSG.size:off + length]
        off += (length + 3) & ~3


def attrs(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    off = 0
    while off + RTA.size <= len(data):
        length, kind = RTA.unpack_from(data, off)
        if length < RTA.size:
            break
        found[kind & 0x3FFF] = data[off + RTA.size:off + length]
        off += (length + 3) & ~3
    return found


def _u32(raw: bytes) -> int:
    return int(struct.unpack("=I", raw[:4])[0])


def addr_links(payloads: list[bytes], *, name: Callable[[int], str]) -> list[dict[str, Any]]:
    """RTM_NEWADDR payloads → [{ifname, addr_info: [...]}] in ifindex order, as `ip` groups them."""
    links: dict[int, list[dict[str, Any]]] = {}
    for payload in payloads:
        family, prefixlen, flags8, scope, index = IFADDRMSG.unpack_from(payload)
        if family != AF_INET6:
            continue
        a = attrs(payload[IFADDRMSG.size:])
        raw = a.get(IFA_LOCAL, a.get(IFA_ADDRESS))
        if raw is None:
            continue
        flags = _u32(a[IFA_FLAGS]) if IFA_FLAGS in a else flags8
        info: dict[str, Any] = {"family": "inet6",
                                "local": socket.inet_ntop(socket.AF_INET6, raw[:16]),
                                "prefixlen": prefixlen, "scope": SCOPES.get(scope, str(scope))}
        if not flags & IFA_F_PERMANENT:
            info["dynamic"] = True
        info.update({word: True for word, bit in IFA_F_BITS.items() if flags & bit})
        if IFA_CACHEINFO in a:
            info["valid_life_time"] = _u32(a[IFA_CACHEINFO][4:8])
        links.setdefault(index, []).append(info)
    return [{"ifname": name(index), "addr_info": infos} for index, infos in sorted(links.items())]


def route_list(payloads: list[bytes], *, name: Callable[[int], str]) -> list[dict[str, Any]]:
    """RTM_NEWROUTE payloads → routes with the keys and words `ip -j -6 route show table all`
    prints (dst, gateway, dev, protocol unless boot, metric, table unless main, pref, type
    unless unicast)."""
    routes = []
    for payload in payloads:
        (family, dst_len, _src, _tos, table8, proto, _scope, kind,
         flags) = RTMSG.unpack_from(payload)
        if family != AF_INET6 or flags & RTM_F_CLONED:
            continue
        a = attrs(payload[RTMSG.size:])
        r: dict[str, Any] = {}
        if kind != RTN_UNICAST:
            r["type"] = RTN_TYPES.get(kind, str(kind))
        if RTA_DST in a:
            dst = socket.inet_ntop(socket.AF_INET6, a[RTA_DST][:16])
            r["dst"] = dst if dst_len == 128 else f"{dst}/{dst_len}"
        else:
            r["dst"] = f"::/{dst_len}" if dst_len else "default"
        if RTA_GATEWAY in a:
            r["gateway"] = socket.inet_ntop(socket.AF_INET6, a[RTA_GATEWAY][:16])
        if RTA_OIF in a:
            r["dev"] = name(_u32(a[RTA_OIF]))
        if proto != RTPROT_BOOT:
            r["protocol"] = PROTOCOLS.get(proto, str(proto))
        if RTA_PRIORITY in a:
            r["metric"] = _u32(a[RTA_PRIORITY])
        table = _u32(a[RTA_TABLE]) if RTA_TABLE in a else table8
        if table != RT_TABLE_MAIN:
            r["table"] = TABLES.get(table, str(table))
        if RTA_PREF in a:
            r["pref"] = PREFS.get(a[RTA_PREF][0], a[RTA_PREF][0])
        routes.append(r)
    return routes


# --- shell ---------------------------------------------------------------------------------


def _ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"  # gone since the dump: what `ip` prints for it


def _dump(sock: socket.socket, kind: int, body: bytes) -> list[bytes]:
    """One NLM_F_DUMP request → the payloads of every answer up to NLMSG_DONE."""
    seq = kind  # one request per kind on this socket
    sock.send(NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
              + body)
    payloads: list[bytes] = []
    while True:
        for msg_kind, payload in messages(sock.recv(1 << 18)):
            if msg_kind == NLMSG_DONE:
                return payloads
            if msg_kind == NLMSG_ERROR:
                errno = -struct.unpack_from("=i", payload)[0]
                if errno:
                    raise OSError(errno, f"netlink dump {kind}")
                continue
            if msg_kind in (RTM_NEWADDR, RTM_NEWROUTE):
                payloads.append(payload)



def snapshot() -> dict[str, Any]:
    """The static addresses and configured routes now; {} where IPv6 or netlink is absent.

    Read from the kernel directly: two `ip -j` runs cost a process start each on every
    `start` (about 2 × 3 ms), one netlink socket costs well under a millisecond.
    """
    if system.which("ip") is None:  # restore needs `ip`: without it there is nothing to do
        return {}
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                           socket.NETLINK_ROUTE) as sock:
            sock.bind((0, 0))
            links = addr_links(_dump(sock, RTM_GETADDR, IFADDRMSG.pack(AF_INET6, 0, 0, 0, 0)),
                               name=_ifname)
            routes = route_list(_dump(sock, RTM_GETROUTE, RTMSG.pack(AF_INET6, *[0] * 8)),
                                name=_ifname)
    except OSError:  # no netlink here (or no IPv6): what `ip` printing nothing gave
        links, routes = [], []
    return {"addrs": select_addrs(links), "routes": select_routes(routes)}


def restore(saved: dict[str, Any]) -> list[Error]:
    if not saved.get("addrs") and not saved.get("routes"):
        return []
    failures: list[Error] = []
    for argv in plan(saved, snapshot()):
        try:
            system.run(argv)
        except Error as exc:  # an interface that is gone: report, restore the rest
            failures.append(exc)
    return failures
