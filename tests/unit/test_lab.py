"""The lab's pure parts: layout, range checks, torrc text, DNS answers, voting arithmetic."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest

from netspectre import dnswire
from netspectre.errors import ConfigError
from netspectre.lab import consensus, dns, network, torrc, watch
from netspectre.lab.spec import LabSpec, Role, from_mapping, layout, validate

TEST_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24",
                                                "2001:db8::/32")]


def test_default_layout_uses_only_documentation_addresses() -> None:
    lay = layout(LabSpec())
    addrs = [lay.web4, lay.web6, lay.dns4, lay.dns6, lay.gateway4, lay.gateway6, lay.resolver4,
             lay.resolver6, lay.client4, lay.client6, lay.guest_gw4, lay.guest_gw6, lay.guest4,
             lay.guest6, lay.bridge.v4, lay.bridge.v6, lay.ct_gw4, lay.ct_gw6]
    addrs += [a for r in lay.relays for a in (r.v4, r.v6)]
    addrs += [a for c in lay.containers for a in (c.v4, c.v6)]
    assert len(set(addrs)) == len(addrs)
    for a in addrs:
        assert any(a in n for n in TEST_NETS), a
    assert not any(a in ipaddress.ip_network("192.0.2.0/24") for a in addrs)
    assert [r.role for r in lay.relays].count(Role.AUTHORITY) == 3
    assert str(lay.web4) == "203.0.113.80" and str(lay.web6) == "2001:db8:4c41::80"


def test_ranges_that_overlap_a_host_route_are_refused() -> None:
    spec = LabSpec(internet4=ipaddress.IPv4Network("192.0.2.0/24"))
    routes = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("fd00::/64")]
    with pytest.raises(ConfigError, match="overlaps the host's route to 192.0.2.0/24"):
        network.check_ranges(spec, routes)
    network.check_ranges(LabSpec(), routes)  # TEST-NET-2/3 and 2001:db8:: are free


@pytest.mark.parametrize("table, message", [
    ({"lan4": "203.0.113.0/24"}, "overlap"),
    ({"lan4": "198.51.100.0/25"}, "too small"),
    ({"internet6": "2001:db8::/64", "lan6": "2001:db8::/56"}, "overlap"),
    ({"prefix": "Bad Prefix"}, "prefix"),
    ({"exits": 0}, "between 1 and 9"),
    ({"containers": 10}, "between 0 and 9"),
    ({"lan6": "2001:db8:4c41:100::/63"}, "too small"),  # uplink, guest, containers: 3 /64s
    ({"lan4": "2001:db8::/48"}, "IPv4"),
    ({"colour": "blue"}, "unknown key"),
])
def test_bad_lab_settings_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(table)


def test_lab_settings_parse() -> None:
    spec = from_mapping({"prefix": "mylab-", "internet4": "198.18.0.0/24", "middles": 2})
    assert validate(spec).inet_ns == "mylab-inet"
    assert len(layout(spec).relays) == 7  # 3 authorities, 2 middles, 2 exits (the default)
    assert from_mapping({"containers": 0}).namespaces == ("nslab-inet", "nslab-client",
                                                          "nslab-guest")


def _auths() -> list[torrc.Authority]:
    lay = layout(LabSpec())
    return [torrc.Authority(r, v3ident="A" * 40, fingerprint=f"{i}" * 40)
            for i, r in enumerate(lay.authorities)]


def test_client_lines_are_what_a_client_needs() -> None:
    lines = torrc.client_lines(_auths())
    assert lines[0] == "TestingTorNetwork 1"
    assert lines[1] == (f"DirAuthority auth1 orport=9001 no-v2 v3ident={'A' * 40} "
                        f"203.0.113.11:9030 {'0' * 40}")


def test_exit_torrc_binds_its_own_address_and_uses_the_lab_resolver(tmp_path: object) -> None:
    from pathlib import Path

    lay = layout(LabSpec())
    text = torrc.relay(lay.exits[0], data=Path("/x/exit1"), authorities=_auths(),
                       resolv_conf=Path("/x/resolv.conf"), bandwidths=Path("/x/bw"), offset=3,
                       empty=Path("/x/empty"))
    for line in ("OutboundBindAddress 203.0.113.31", "OutboundBindAddress [2001:db8:4c41::31]",
                 "ExitPolicy accept *:80, accept *:443, reject *:*", "DirCache 0",
                 "ServerDNSResolvConfFile /x/resolv.conf", "RefuseUnknownExits 0",
                 "TestingTorNetwork 1"):
        assert line in text.splitlines()
    assert "V3AuthVotingInterval" not in text  # authorities only
    auth = torrc.relay(lay.authorities[0], data=Path("/x/auth1"), authorities=_auths(),
                       resolv_conf=Path("/x/resolv.conf"), bandwidths=Path("/x/bw"), offset=3,
                       empty=Path("/x/empty"))
    assert "TestingV3AuthVotingStartOffset 3" in auth.splitlines()
    assert "V3BandwidthsFile /x/bw" in auth.splitlines()
    assert "DirCache 0" not in auth


def test_bandwidth_file() -> None:
    text = torrc.bandwidths(["AB" * 20], now=1700000000.5)
    assert text == f"1700000000\nnode_id=${'AB' * 20} bw=1000\n"


def _query(name: str, qtype: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_dns_answers_echo_test_and_keeps_the_question_case() -> None:
    records = {"echo.test": [ipaddress.ip_address("203.0.113.80"),
                             ipaddress.ip_address("2001:db8:4c41::80")]}
    q = _query("eChO.TeSt", dnswire.TYPE_A)
    reply = dns.answer(q, records)
    assert reply is not None
    ident, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    assert (ident, flags & 0x8000, flags & 0xF, qd, an) == (0x1234, 0x8000, 0, 1, 1)
    assert reply[12:12 + len(q) - 12] == q[12:]
    assert reply.endswith(ipaddress.ip_address("203.0.113.80").packed)
    aaaa = dns.answer(_query("echo.test", dnswire.TYPE_AAAA), records)
    assert aaaa is not None and aaaa.endswith(ipaddress.ip_address("2001:db8:4c41::80").packed)
    nx = dns.answer(_query("other.test", dnswire.TYPE_A), records)
    assert nx is not None and struct.unpack("!H", nx[2:4])[0] & 0xF == 3
    assert dns.answer(b"\x00" * 5, records) is None
    who = dns.answer(_query("resolver.test", dnswire.TYPE_A), records,
                     ipaddress.ip_address("198.51.100.53"))
    assert who is not None and who.endswith(ipaddress.ip_address("198.51.100.53").packed)


def test_voting_arithmetic() -> None:
    assert consensus.next_boundary(100.5, interval=10, offset=3) == 103
    assert consensus.next_boundary(103.0, interval=10, offset=3) == 113
    now = 1_000_000.4
    offset = consensus.initial_offset(now, lead=7)
    boundary = consensus.next_boundary(now, interval=10, offset=offset)
    assert 6 < boundary - now <= 7


def test_watch_reads_hsdir_names() -> None:
    assert watch.hsdir_nick("$" + "A" * 40 + "~auth1") == "auth1"
    assert watch.hsdir_nick("$" + "A" * 40 + "=auth2") == "auth2"
    assert watch.hsdir_nick("$" + "B" * 40) == "B" * 40


def test_judge_verify() -> None:
    from netspectre.lab import checks

    good: dict[str, Any] = {"ok": True, "checks": [
        {"check": "state: active", "ok": True, "detail": "active"},
        {"check": "TCP", "ok": True, "outcome": "torified", "detail": ""},
        {"check": "UDP", "ok": True, "outcome": "refused", "detail": ""}]}
    assert checks.judge_verify(good, 0) == (
        True, "3 checks passed; 2 probes: 1 torified, 1 refused")
    bad = {"ok": False, "checks": [*good["checks"][:2],
                                   {"check": "UDP", "ok": False, "outcome": "leak",
                                    "detail": "leak: the packet left"}]}
    assert checks.judge_verify(bad, 1) == (False, "UDP: leak: the packet left")
    assert checks.judge_verify({}, 7)[0] is False


def test_default_lab_has_two_exits_a_bridge_and_two_containers() -> None:
    spec = LabSpec()
    lay = layout(spec)
    assert [r.nick for r in lay.exits] == ["exit1", "exit2"]
    assert lay.bridge.role is Role.BRIDGE and lay.bridge not in lay.relays
    assert [c.ns for c in lay.containers] == ["nslab-ct1", "nslab-ct2"]
    assert spec.namespaces[-2:] == ("nslab-ct1", "nslab-ct2")
    # the containers' subnet: the top quarter of lan4, its own /64 of lan6, disjoint from
    # the uplink and the guest link
    assert str(lay.ctnet4) == "198.51.100.192/26" and str(lay.ct_gw4) == "198.51.100.193"
    assert [str(c.v4) for c in lay.containers] == ["198.51.100.194", "198.51.100.195"]
    assert str(lay.ctnet6) == "2001:db8:4c41:102::/64"
    for net in (lay.uplink4, lay.guestnet4):
        assert not net.overlaps(lay.ctnet4)
    for net6 in (lay.uplink6, lay.guestnet6):
        assert not net6.overlaps(lay.ctnet6)
    assert all(c.v4 in lay.ctnet4 and c.v6 in lay.ctnet6 for c in lay.containers)
    assert str(lay.guest4) == "198.51.100.130"  # unchanged by the containers' subnet


def test_bridge_torrc_serves_obfs4_unpublished(tmp_path: object) -> None:
    from pathlib import Path

    lay = layout(LabSpec())
    text = torrc.relay(lay.bridge, data=Path("/x/bridge"), authorities=_auths(),
                       resolv_conf=Path("/x/resolv.conf"), bandwidths=Path("/x/bw"), offset=3,
                       empty=Path("/x/empty"), obfs4proxy="/usr/bin/obfs4proxy").splitlines()
    for line in ("BridgeRelay 1", "PublishServerDescriptor 0",
                 "ServerTransportPlugin obfs4 exec /usr/bin/obfs4proxy",
                 "ServerTransportListenAddr obfs4 203.0.113.40:9443", "ExitPolicy reject *:*"):
        assert line in text
    assert "DirCache 0" not in text  # the client fetches the consensus from the bridge


CERT = "4+xhNdOCN9HqBrQMxLFZ584AjQgiMZz8OlERN9kR+1Kw7uAL7nS+QUJl2OzDpgpoQupWdQ"
BRIDGELINE_TXT = f"""# obfs4 torrc client bridge line
#
# Before distributing this Bridge, edit the placeholder fields
#  <IP ADDRESS>  - The public IP address of your obfs4 bridge.

Bridge obfs4 <IP ADDRESS>:<PORT> <FINGERPRINT> cert={CERT} iat-mode=0
"""


def test_obfs4_bridge_line_is_accepted_by_netspectre() -> None:
    from netspectre.tor import bridges

    lay = layout(LabSpec())
    line = torrc.obfs4_bridge_line(lay.bridge, "EE" * 20, BRIDGELINE_TXT)
    assert line == f"obfs4 203.0.113.40:9443 {'EE' * 20} cert={CERT} iat-mode=0"
    parsed = bridges.parse(0, line)
    assert (parsed.transport, parsed.address, parsed.fingerprint) == (
        "obfs4", "203.0.113.40:9443", "EE" * 20)
    assert parsed.line() == line
    cut = BRIDGELINE_TXT.rsplit(" iat", 1)[0]  # obfs4proxy writes in place: a partial read
    for partial in ("", cut, BRIDGELINE_TXT.replace("iat-mode=0", "iat-mode=")):
        with pytest.raises(ValueError):
            torrc.obfs4_bridge_line(lay.bridge, "EE" * 20, partial)


def test_client_config_with_the_bridge() -> None:
    from netspectre import config
    from netspectre.errors import StateError
    from netspectre.lab.info import LabInfo, client_config

    spec = LabSpec()
    line = torrc.obfs4_bridge_line(layout(spec).bridge, "EE" * 20, BRIDGELINE_TXT)
    info = LabInfo(spec=spec, layout=layout(spec), authorities=tuple(_auths()),
                   fingerprints={}, onion="x.onion", bridge_line=line)
    cfg = config.parse(client_config(info, bridge=True))
    assert list(cfg.tor.bridges) == [line]
    assert not config.parse(client_config(info)).tor.bridges
    with pytest.raises(StateError, match="no obfs4 bridge"):
        client_config(LabInfo(spec=spec, layout=layout(spec), authorities=tuple(_auths()),
                              fingerprints={}, onion="x.onion"), bridge=True)
