"""Static IPv6 addresses/routes lost by disable_ipv6: parsing and the plan to re-add them."""

from __future__ import annotations

import json
import socket
import struct

from netspectre import ipv6

ADDRS = json.dumps([
    {"ifname": "lo", "addr_info": [
        {"family": "inet6", "local": "::1", "prefixlen": 128, "scope": "host",
         "valid_life_time": 4294967295}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet6", "local": "2001:db8:5::2", "prefixlen": 64, "scope": "global",
         "nodad": True, "valid_life_time": 4294967295},
        {"family": "inet6", "local": "2001:db8:5:0:aa:bb:cc:dd", "prefixlen": 64,
         "scope": "global", "dynamic": True, "mngtmpaddr": True, "valid_life_time": 86400},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link",
         "valid_life_time": 4294967295}]},
])
ROUTES = json.dumps([
    {"dst": "2001:db8:5::/64", "dev": "eth0", "protocol": "kernel", "metric": 256},
    {"dst": "2001:db8:6::/48", "gateway": "2001:db8:5::1", "dev": "eth0", "metric": 1024},
    {"dst": "default", "gateway": "fe80::1", "dev": "eth0", "protocol": "ra", "metric": 1024},
    {"type": "local", "dst": "2001:db8:5::2", "dev": "eth0", "table": "local",
     "protocol": "kernel"},
    {"dst": "default", "gateway": "2001:db8:5::1", "dev": "eth0", "protocol": "static",
     "metric": 1024, "table": "100"},
])


def test_only_static_addresses_and_configured_routes_are_kept() -> None:
    assert ipv6.parse_addrs(ADDRS) == [
        {"dev": "eth0", "local": "2001:db8:5::2", "prefixlen": 64, "flags": ["nodad"]}]
    assert [r["dst"] for r in ipv6.parse_routes(ROUTES)] == ["2001:db8:6::/48", "default"]


def test_plan_re_adds_only_what_is_missing_addresses_before_routes() -> None:
    saved = {"addrs": ipv6.parse_addrs(ADDRS), "routes": ipv6.parse_routes(ROUTES)}
    assert ipv6.plan(saved, {"addrs": [], "routes": []}) == [
        ["ip", "-6", "addr", "add", "2001:db8:5::2/64", "dev", "eth0", "nodad"],
        ["ip", "-6", "route", "replace", "2001:db8:6::/48", "via", "2001:db8:5::1", "dev",
         "eth0", "metric", "1024"],
        ["ip", "-6", "route", "replace", "default", "via", "2001:db8:5::1", "dev", "eth0",
         "metric", "1024", "table", "100", "proto", "static"],
    ]
    assert ipv6.plan(saved, saved) == []


# The same kernel state as the `ip -j` fixtures above, as the netlink answers `snapshot` reads.
ETH0, LO = 2, 1
NAMES = {LO: "lo", ETH0: "eth0"}.__getitem__


def _rta(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _a6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def _addr(index: int, local: str, prefixlen: int, scope: int, flags: int, valid: int) -> bytes:
    return (ipv6.IFADDRMSG.pack(ipv6.AF_INET6, prefixlen, flags & 0xFF, scope, index)
            + _rta(ipv6.IFA_ADDRESS, _a6(local)) + _rta(ipv6.IFA_FLAGS, struct.pack("=I", flags))
            + _rta(ipv6.IFA_CACHEINFO, struct.pack("=IIII", valid, valid, 0, 0)))


def _route(dst: str | None, dst_len: int, *, gateway: str | None = None, table: int = 254,
           proto: int = 3, kind: int = 1, metric: int = 1024, flags: int = 0,
           pref: int | None = None) -> bytes:
    body = ipv6.RTMSG.pack(ipv6.AF_INET6, dst_len, 0, 0, min(table, 255), proto, 0, kind, flags)
    if dst is not None:
        body += _rta(ipv6.RTA_DST, _a6(dst))
    if gateway is not None:
        body += _rta(ipv6.RTA_GATEWAY, _a6(gateway))
    if pref is not None:  # the kernel always sends it; the fixtures above leave it out
        body += _rta(ipv6.RTA_PREF, bytes([pref]))
    return (body + _rta(ipv6.RTA_OIF, struct.pack("=I", ETH0))
            + _rta(ipv6.RTA_PRIORITY, struct.pack("=I", metric))
            + _rta(ipv6.RTA_TABLE, struct.pack("=I", table)))


FOREVER = 0xFFFFFFFF
ADDR_MSGS = [
    _addr(LO, "::1", 128, 254, 0x80, FOREVER),
    _addr(ETH0, "2001:db8:5::2", 64, 0, 0x80 | 0x02, FOREVER),
    _addr(ETH0, "2001:db8:5:0:aa:bb:cc:dd", 64, 0, 0x100, 86400),  # SLAAC: not permanent
    _addr(ETH0, "fe80::1", 64, 253, 0x80, FOREVER),
]
ROUTE_MSGS = [
    _route("2001:db8:5::", 64, proto=2, metric=256),
    _route("2001:db8:6::", 48, gateway="2001:db8:5::1"),
    _route(None, 0, gateway="fe80::1", proto=9),
    _route("2001:db8:5::2", 128, table=255, proto=2, kind=2, metric=0),
    _route(None, 0, gateway="2001:db8:5::1", table=100, proto=4),
    _route("2001:db8:7::", 64, gateway="2001:db8:5::1", flags=0x200),  # cache: not listed
]


def test_the_netlink_answers_read_as_ip_prints_them() -> None:
    links = ipv6.addr_links(ADDR_MSGS, name=NAMES)
    assert ipv6.select_addrs(links) == ipv6.parse_addrs(ADDRS)
    routes = ipv6.route_list(ROUTE_MSGS, name=NAMES)
    assert ipv6.select_routes(routes) == ipv6.parse_routes(ROUTES)
    assert routes[1] == {"dst": "2001:db8:6::/48", "gateway": "2001:db8:5::1", "dev": "eth0",
                         "metric": 1024}  # proto boot: `ip` does not print it either
    assert routes[3]["dst"] == "2001:db8:5::2" and routes[3]["table"] == "local"
    assert routes[4]["table"] == "100" and routes[4]["protocol"] == "static"
    assert len(routes) == 5
    high = ipv6.route_list([_route("2001:db8:6::", 48, pref=1)], name=NAMES)
    assert high[0]["pref"] == "high"


def test_a_datagram_splits_into_messages_and_attributes() -> None:
    def msg(kind: int, payload: bytes) -> bytes:
        raw = ipv6.NLMSG.pack(16 + len(payload), kind, 2, 1, 0) + payload
        return raw + b"\0" * (-len(raw) % 4)

    data = msg(ipv6.RTM_NEWADDR, ADDR_MSGS[1]) + msg(ipv6.NLMSG_DONE, b"\0" * 4)
    assert [k for k, _ in ipv6.messages(data)] == [ipv6.RTM_NEWADDR, ipv6.NLMSG_DONE]
    _, payload = next(ipv6.messages(data))
    assert ipv6.attrs(payload[ipv6.IFADDRMSG.size:])[ipv6.IFA_ADDRESS] == _a6("2001:db8:5::2")
