"""watch's pure parts: the NFLOG message parser, the packet classifier, the tally, the frames."""

from __future__ import annotations

import socket
import struct

from netspectre import cli_text, nflog, packets
from netspectre.backends import nft
from netspectre.commands.watch import tor_live
from netspectre.watchframes import Frame, Tally, TorLive, rates


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _udp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + struct.pack("!HHHH", sport, dport, 8, 0)


def _message(payload: bytes, prefix: str, uid: int | None, family: int = socket.AF_INET) -> bytes:
    attrs = _attr(nflog.NFULA_PACKET_HDR, struct.pack("!HBB", 0x0800, 3, 0))
    attrs += _attr(nflog.NFULA_PREFIX, prefix.encode() + b"\0")
    if uid is not None:
        attrs += _attr(nflog.NFULA_UID | 0x4000, struct.pack("!I", uid))
        attrs += _attr(nflog.NFULA_GID, struct.pack("!I", uid))
    attrs += _attr(nflog.NFULA_PAYLOAD, payload)
    body = struct.pack("=BBH", family, 0, socket.htons(4710)) + attrs
    return struct.pack("=IHHII", 16 + len(body), 4 << 8, 0, 0, 0) + body


def test_nflog_parses_packets_prefix_and_uid() -> None:
    one = _message(_udp4("198.51.100.2", "203.0.113.5", 40000, 443), "blocked_udp", 1000)
    two = _message(_udp4("198.51.100.2", "203.0.113.6", 40001, 53), "blocked_dns", None)
    (a, b) = nflog.parse(one + two)
    assert (a.prefix, a.family, a.uid, a.gid) == ("blocked_udp", 4, 1000, 1000)
    assert (b.prefix, b.uid) == ("blocked_dns", None)
    assert nflog.parse(one[:20]) == []  # truncated: nothing, no exception


def test_nflog_bind_requests_and_acks() -> None:
    bind, mode, qthresh = nflog.bind_requests(4710)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", bind)
    assert length == len(bind) and kind == 0x0401 and flags == 0x5 and seq == 1
    assert struct.unpack_from("!H", bind, 18)[0] == 4710
    assert struct.pack("!IB", nflog.COPY_RANGE, nflog.NFULNL_COPY_PACKET) in mode
    ack = struct.pack("=IHHII", 36, 2, 0, 2, 0) + struct.pack("=i", -16) + b"\0" * 16
    assert nflog.acks(ack) == {2: 16}


def test_classifier_labels() -> None:
    quic = packets.parse(_udp4("198.51.100.2", "203.0.113.5", 40000, 443))
    assert quic is not None and (quic.proto_name, quic.dport, quic.label) == ("UDP", 443, "QUIC")
    dns = packets.parse(_udp4("198.51.100.2", "203.0.113.5", 40000, 53))
    stun = packets.parse(_udp4("198.51.100.2", "203.0.113.5", 40000, 3478))
    assert dns is not None and stun is not None and (dns.label, stun.label) == ("DNS", "STUN")
    v6 = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64,
                     socket.inet_pton(socket.AF_INET6, "2001:db8:1::2"),
                     socket.inet_pton(socket.AF_INET6, "2001:db8:2::10"))
    p6 = packets.parse(v6 + struct.pack("!HHHH", 5000, 443, 8, 0))
    assert p6 is not None and (p6.family, p6.dst, p6.label) == (6, "2001:db8:2::10", "QUIC")
    assert packets.parse(b"") is None and packets.parse(b"\x45\x00") is None


def test_tally_aggregates_and_reports_changes() -> None:
    tally = Tally(limit=2)
    pkt = packets.parse(_udp4("198.51.100.2", "203.0.113.5", 40000, 443))
    assert pkt is not None
    for _ in range(12):
        tally.add(uid=1000, program="firefox", counter="blocked_udp", packet=pkt, at=1.0)
    (a,) = tally.changed()
    assert a.count == 12 and tally.changed() == ()
    assert cli_text.attempt(a) == (
        "uid 1000 (firefox): UDP 443 → 203.0.113.5 (QUIC) refused ×12 [blocked_udp]")
    other = packets.parse(_udp4("198.51.100.2", "203.0.113.6", 40000, 53))
    third = packets.parse(_udp4("198.51.100.2", "203.0.113.7", 40000, 53))
    assert other is not None and third is not None
    tally.add(uid=None, program="?", counter="blocked_dns", packet=other, at=2.0)
    tally.add(uid=None, program="?", counter="blocked_dns", packet=third, at=3.0)
    assert [x.dst for x in tally.all()] == ["203.0.113.7", "203.0.113.6"]  # bounded, recent first


def test_frames_text_and_json() -> None:
    tally = Tally()
    pkt = packets.parse(_udp4("198.51.100.2", "203.0.113.5", 40000, 443))
    assert pkt is not None
    tally.add(uid=1000, program="leaky-app", counter="blocked_udp", packet=pkt, at=1.0)
    counters = rates({"blocked_udp": {"packets": 2, "bytes": 80}},
                     {"blocked_udp": {"packets": 12, "bytes": 480}}, 2.0)
    tor = tor_live({"status/bootstrap-phase": "NOTICE BOOTSTRAP PROGRESS=100 TAG=done "
                    'SUMMARY="Done"', "circuit-status": "1 BUILT $A\n2 EXTENDED $B\n3 BUILT $C",
                    "traffic/read": "2500000", "traffic/written": "300"})
    assert tor == TorLive(bootstrap=100, summary="Done", circuits=2, read=2500000, written=300)
    frame = Frame(at=0.0, backend="nft", counters=counters, tor=tor, attempts=tally.all(),
                  changed=tally.changed(), summary=True)
    data = frame.to_json()
    assert data["counters"]["blocked_udp"] == {"packets": 12, "bytes": 480, "rate": 5.0}
    assert data["refused"] == 1 and data["tor"]["circuits"] == 2
    assert frame.changed[0].to_json()["program"] == "leaky-app"
    screen = cli_text.watch_screen(frame)
    assert "uid 1000 (leaky-app): UDP 443 → 203.0.113.5 (QUIC) refused ×1" in screen
    assert "bootstrapped 100 %, 2 circuits, read 2.5 MB, written 300 B" in screen
    assert "blocked_udp 12 (5.0/s)" in cli_text.watch_summary(frame)
    assert cli_text.watch_tor(TorLive(error="down")) == "tor: down"


def test_every_refusing_rule_is_preceded_by_its_log_rule() -> None:
    from tests.unit.test_backends import BLOCK

    lines = [ln.strip() for ln in nft.table(BLOCK).splitlines()]
    for i, line in enumerate(lines):
        if "counter name blocked_" in line and "blocked_incoming" not in line:
            match, _, rest = line.partition("counter name ")
            name = rest.split()[0]
            assert lines[i - 1] == (f"{match}limit rate 10/second burst 20 packets "
                                    f'log prefix "{name}" group 4710'), line
        if " log " in line:
            assert not any(v in line for v in ("accept", "drop", "reject")), line
