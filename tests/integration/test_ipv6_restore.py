"""ipv6 = "disable" deletes static IPv6 addresses and routes; `stop` must bring them back."""

from __future__ import annotations

import json

import pytest

from tests.support.topology import BACKENDS, Topology


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
