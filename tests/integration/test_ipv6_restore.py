"""ipv6 = "disable" deletes static IPv6 addresses and routes; `stop` must bring them back."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.topology import BACKENDS, GW6, SRC, Topology


def _v6(t: Topology) -> tuple[set[str], set[str]]:
    addrs = json.loads(t.client.run(["ip", "-j", "-6", "addr", "show"]).stdout)
    routes = json.loads(t.client.run(["ip", "-j", "-6", "route", "show"]).stdout)
    return ({f"{link['ifname']} {a['local']}/{a['prefixlen']}" for link in addrs
             for a in link["addr_info"] if a.get("scope") == "global"},
            {f"{r['dst']} {r.get('gateway', '')} {r['dev']}" for r in routes
             if r.get("protocol") != "kernel"})


@pytest.mark.parametrize("backend", BACKENDS[:1])
def test_static_ipv6_addresses_and_routes_come_back(clean: Topology, backend: str) -> None:
    t = clean
    before_addrs, before_routes = _v6(t)
    assert before_addrs, "the topology gives the client static IPv6 addresses"
    cfg = t.config(backend, ipv6="disable")
    t.start(cfg)
    assert _v6(t) == (set(), set())  # disable_ipv6 took them away
    t.stop(cfg)
    assert _v6(t) == (before_addrs, before_routes)


SNAPSHOT_VS_IP = """
import json, subprocess
from netspectre import ipv6
ip = {"addrs": ipv6.parse_addrs(subprocess.run(["ip", "-j", "-6", "addr", "show"],
                                               capture_output=True, text=True).stdout),
      "routes": ipv6.parse_routes(subprocess.run(["ip", "-j", "-6", "route", "show", "table",
                                                  "all"], capture_output=True, text=True).stdout)}
print(json.dumps([ipv6.snapshot(), ip]))
"""
EXTRA = [
    ("addr", "add", "2001:db8:1::20/64", "dev", "up0", "nodad", "noprefixroute"),
    ("addr", "add", "2001:db8:1::21/64", "dev", "up0", "nodad", "mngtmpaddr"),
    ("addr", "add", "2001:db8:1::22/64", "dev", "up0", "valid_lft", "600",
     "preferred_lft", "300"),
    ("route", "add", "2001:db8:98::/48", "via", GW6, "dev", "up0", "proto", "static",
     "metric", "77"),
    ("route", "add", "default", "via", GW6, "dev", "up0", "table", "100", "pref", "high"),
    ("route", "add", "unreachable", "2001:db8:97::/48"),
]


def test_the_netlink_snapshot_is_what_ip_prints(clean: Topology) -> None:
    """`start` records the snapshot from netlink; `stop` must read the same words `ip` prints
    (and older state files hold `ip`'s): compared on a namespace with flags, a lifetime, a
    protocol, another table, a preference and a non-unicast route."""
    t = clean
    try:
        for extra in EXTRA:
            t.client.ip("-6", *extra)
        out = t.client.run(["env", f"PYTHONPATH={SRC}", sys.executable, "-c",
                            SNAPSHOT_VS_IP]).stdout
        ours, theirs = json.loads(out)
        assert ours == theirs
        assert {"dev": "up0", "local": "2001:db8:1::20", "prefixlen": 64,
                "flags": ["nodad", "noprefixroute"]} in ours["addrs"]
        assert "2001:db8:1::22" not in {a["local"] for a in ours["addrs"]}  # has a lifetime
        assert {r.get("table") for r in ours["routes"]} >= {"100"}
    finally:
        for extra in reversed(EXTRA):
            undo = extra[2:5] if extra[0] == "addr" else extra[2:]
            t.client.ip("-6", extra[0], "del", *undo, check=False)
