"""Static IPv6 addresses/routes lost by disable_ipv6: parsing and the plan to re-add them."""

from __future__ import annotations

import json

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
