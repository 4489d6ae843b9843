"""verify's probe judge: pure, on observations (the real packets are in tests/integration)."""

from __future__ import annotations

import base64
import errno
import hashlib
import ipaddress
import struct

from netspectre import dnswire, probes, wire
from netspectre.probes import LEAK, REFUSED, TORIFIED, Observation, Probe

VNET = ipaddress.IPv4Network("10.192.0.0/10")
TCP4 = Probe("tcp", "tcp", 4, "198.51.100.1", 80, TORIFIED)
DNS4 = Probe("dns", "dns", 4, "198.51.100.1", 53, TORIFIED)
UDP4 = Probe("udp", "udp", 4, "198.51.100.1", 443, REFUSED)


def test_onion_name_is_a_valid_v3_address() -> None:
    name = probes.onion_name()
    assert name.endswith(".onion") and len(name) == 56 + 6
    raw = base64.b32decode(name[:-6].upper())
    key, check, version = raw[:32], raw[32:34], raw[34:]
    assert version == b"\x03"
    assert hashlib.sha3_256(b".onion checksum" + key + version).digest()[:2] == check


def test_battery_covers_every_class_and_lan_resolvers() -> None:
    battery = probes.battery("198.51.100.1", "2001:db8::1", ("203.0.113.53",))
    kinds = {(p.kind, p.family) for p in battery}
    assert kinds == {(k, f) for k in ("tcp", "udp", "dns", "icmp") for f in (4, 6)}
    assert [p.expect for p in battery if p.family == 6] == [REFUSED] * 4
    assert any(p.target == "203.0.113.53" and p.kind == "dns" for p in battery)
    lan_tcp = [p for p in battery if p.target == "203.0.113.53" and p.kind == "tcp"]
    assert [(p.port, p.expect) for p in lan_tcp] == [(53, REFUSED)]


def test_tcp_connected_and_counted_is_torified() -> None:
    seen = Observation(connected=True)
    assert probes.judge(TCP4, seen, {"tcp_torified": 1}, VNET)[0] == TORIFIED
    # Connected, but our redirect did not count it: something else answered.
    assert probes.judge(TCP4, seen, {}, VNET)[0] == LEAK
    assert probes.judge(TCP4, seen, None, VNET)[0] == TORIFIED  # counters unreadable


def test_dns_only_a_virtual_address_proves_tor() -> None:
    assert probes.judge(DNS4, Observation(answer=["10.192.0.77"]), {}, VNET)[0] == TORIFIED
    outcome, why = probes.judge(DNS4, Observation(answer=["203.0.113.254"]), {}, VNET)
    assert outcome == LEAK and "someone else" in why
    assert probes.judge(DNS4, Observation(answer=[]), {}, VNET)[0] == LEAK


def test_refusals_need_our_counter_or_a_local_cause() -> None:
    refused = Observation(error=errno.ECONNREFUSED)
    assert probes.judge(UDP4, refused, {"blocked_udp": 1}, VNET)[0] == REFUSED
    assert probes.judge(UDP4, refused, {}, VNET)[0] == LEAK  # refused by a remote host
    assert probes.judge(UDP4, Observation(error=errno.EPERM, at_send=True), {}, VNET)[0] == REFUSED
    noroute = Observation(error=errno.ENETUNREACH, at_send=True)
    assert probes.judge(UDP4, noroute, {}, VNET)[0] == REFUSED
    assert probes.judge(UDP4, Observation(error=errno.ENETUNREACH), {}, VNET)[0] == LEAK


def test_silence_is_a_leak() -> None:
    outcome, why = probes.judge(UDP4, Observation(timeout=True, elapsed=3.0), {}, VNET)
    assert outcome == LEAK and "left" in why
    assert probes.judge(UDP4, Observation(answer=[]), {}, VNET)[0] == LEAK


def test_dnswire_reads_answers_and_rejects_other_ids() -> None:
    query = dnswire.query(probes.onion_name(), 0x1234)
    answer = (struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 2, 0, 0) + query[12:]
              + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 192, 0, 77])
              + b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 16) + bytes(15) + b"\x01")
    assert dnswire.parse(answer, 0x1234) == dnswire.Reply(0, ["10.192.0.77", "::1"])
    assert dnswire.parse(answer, 0x9999) is None
    assert dnswire.parse(query, 0x1234) is None  # a query, not a reply
    assert dnswire.parse(answer[:40], 0x1234) == dnswire.Reply(0, [])  # truncated: no answer
    assert dnswire.parse(b"\x12", 0x1234) is None


def test_counted_reports_only_what_moved() -> None:
    before = {"a": {"packets": 1}, "b": {"packets": 5}}
    after = {"a": {"packets": 1}, "b": {"packets": 7}, "c": {"packets": 1}}
    assert probes.counted(before, after) == {"b": 2, "c": 1}


def test_icmp_checksum_of_a_checksummed_packet_is_zero() -> None:
    body = wire.echo_request(4, 0x1234, b"netspectre verify")
    assert body[0] == 8 and wire.checksum(body) == 0
    assert wire.checksum(b"\x01") == wire.checksum(b"\x01\x00")  # odd length: padded


def test_icmpv6_echo_leaves_the_checksum_to_the_kernel() -> None:
    body = wire.echo_request(6, 0x1234, b"x")
    assert body[0] == 128 and body[2:4] == b"\0\0"


def test_icmp_replies_are_ours_only_with_our_ident() -> None:
    reply = struct.pack("!BBHHH", 0, 0, 0, 0x1234, 1) + b"netspectre"
    ip_header = bytes([0x45]) + bytes(19)
    assert wire.classify(wire.icmp_message(ip_header + reply, 4), 0x1234) is wire.Echo.REPLY
    assert wire.classify(reply, 0x4321) is None
    unreachable = struct.pack("!BBHI", 1, 4, 0, 0) + bytes(40) + b"\x12\x34"
    assert wire.classify(unreachable, 0x1234, quoted=True) is wire.Echo.UNREACHABLE
    assert wire.classify(unreachable, 0x9999, quoted=True) is None
    assert wire.classify(unreachable, 0x9999) is wire.Echo.UNREACHABLE
    assert wire.classify(b"\0\0", 0x1234) is None
