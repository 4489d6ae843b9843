"""`netspectre lab demo` end to end through the CLI (root, its own lab under the prefix `nsdemo-`,
apart from the session fixture's `nslabt-`), and the demo's verdicts on made-up evidence: a check
that cannot fail proves nothing, so each judge is shown failing too (no root needed).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netspectre import paths, system
from netspectre.lab import LabSpec, checks, clientns, layout, network
from netspectre.lab.capture import judge
from netspectre.lab.info import LabInfo
from netspectre.lab.pcap import ICMP, ICMPV6, TCP, UDP, Packet, parse_frame, read_pcap
from netspectre.lab.torrc import Authority

DEMO_SPEC = LabSpec(prefix="nsdemo-")
DEMO_BUDGET = 60.0  # issue #4: `lab demo` <= 60 s
CLIENT_MAC = "02:00:00:00:00:02"
GATEWAY_MAC = "02:00:00:00:00:01"


# --- the demo itself (root) -------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.root
def test_demo_passes_every_check(lab_possible: None, tmp_path: Path) -> None:
    if system.which("tcpdump") is None:
        pytest.skip("the demo needs tcpdump (apt install tcpdump)")
    assert not network.existing_namespaces() & set(DEMO_SPEC.namespaces), "a demo lab is up"
    config = tmp_path / "demo.toml"
    config.write_text(f'[lab]\nprefix = "{DEMO_SPEC.prefix}"\n')
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "netspectre", "--config", str(config), "--json", "lab", "demo"],
        capture_output=True, text=True, timeout=300,
    )
    wall = time.monotonic() - started
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (exit {proc.returncode}): {proc.stdout[-2000:]}"
                    f"{proc.stderr[-2000:]}")
    lines = "\n".join(f"{c['verdict']} {c['key']}: {c['evidence']}" for c in report["checks"])
    print(f"\nlab demo: {wall:.1f} s wall\n{lines}")
    failed = [c for c in report["checks"] if c["verdict"] != "PASS"]
    assert proc.returncode == 0 and report["ok"] and not failed, lines + "\n" + proc.stderr

    # Sane: every planned check ran once, in order, with evidence and a plausible time.
    assert [c["key"] for c in report["checks"]] == [key for key, _, _ in checks.PLAN]
    assert report["passed"] == len(checks.PLAN) and report["failed"] == []
    for c in report["checks"]:
        assert c["evidence"] and 0 <= c["seconds"] < DEMO_BUDGET, c
    by_key = {c["key"]: c for c in report["checks"]}
    lay = layout(DEMO_SPEC)
    exits = {str(r.v4) for r in lay.exits} | {str(r.v6) for r in lay.exits}
    assert by_key["myip"]["data"]["IP"] in exits and by_key["myip"]["data"]["IsTor"] is True
    cap = by_key["capture"]["data"]
    relays = {f"{r.nick} {r.v4}:{r.or_port}" for r in lay.relays}
    assert cap["packets"] > 0 and cap["offending"] == 0 and set(cap["by_relay"]) <= relays
    assert sum(cap["by_relay"].values()) + cap["after_stop"] == cap["packets"]
    assert report["total_s"] <= DEMO_BUDGET, f"demo took {report['total_s']} s"

    # Nothing left behind.
    assert not network.existing_namespaces() & set(DEMO_SPEC.namespaces)
    assert not DEMO_SPEC.dir.exists()
    assert not paths.for_namespace(DEMO_SPEC.client_ns).run.exists()


# --- verdicts on made-up evidence (no root) ---------------------------------------------------


def _pkt(src: str, dst: str, *, proto: int = TCP, sport: int | None = 40000,
         dport: int | None = 9001,
         mac: str = CLIENT_MAC, ts: float = 1.0) -> Packet:
    version = 6 if ":" in src else 4
    return Packet(ts, mac, GATEWAY_MAC, 0x86DD if version == 6 else 0x0800, version, src, dst,
                  proto, sport, dport, length=60)


RELAYS = {("203.0.113.11", 9001): "auth1 203.0.113.11:9001",
          ("203.0.113.31", 9001): "exit1 203.0.113.31:9001"}
CLIENT = "198.51.100.2"


def test_capture_passes_when_the_client_only_talks_to_relays() -> None:
    packets = [
        _pkt(CLIENT, "203.0.113.11"),
        _pkt("203.0.113.11", CLIENT, sport=9001, dport=40000, mac=GATEWAY_MAC),
        _pkt(CLIENT, "203.0.113.31", ts=2.0),
    ]
    v = judge(packets, RELAYS, own_mac=CLIENT_MAC)
    assert v.ok, v
    assert v.packets == 2 and v.received == 1
    assert v.by_relay == {"auth1 203.0.113.11:9001": 1, "exit1 203.0.113.31:9001": 1}


@pytest.mark.parametrize("leak", [
    _pkt(CLIENT, "203.0.113.80", dport=80),  # TCP straight to the web server
    _pkt(CLIENT, "203.0.113.11", dport=9030),  # a relay's address, but not its ORPort
    _pkt(CLIENT, "203.0.113.11", proto=UDP, dport=9001),  # UDP to an ORPort
    _pkt(CLIENT, "203.0.113.80", proto=ICMP, sport=0, dport=0),
    _pkt("2001:db8:4c41:100::2", "2001:db8:4c41::80", dport=80),
    _pkt(CLIENT, "198.51.100.53", proto=UDP, dport=53),  # the LAN resolver
])
def test_capture_fails_on_one_packet_to_anyone_else(leak: Packet) -> None:
    packets = [_pkt(CLIENT, "203.0.113.11"), leak, _pkt(CLIENT, "203.0.113.31")]
    v = judge(packets, RELAYS, own_mac=CLIENT_MAC)
    assert not v.ok
    assert v.offending == 1 and v.packets == 3
    assert str(leak.dst) in v.examples[0] and "NOT to a relay" in v.summary


def test_capture_fails_when_it_saw_nothing() -> None:
    arp = Packet(1.0, CLIENT_MAC, "ff:ff:ff:ff:ff:ff", 0x0806)
    v = judge([arp], RELAYS, own_mac=CLIENT_MAC)
    assert not v.ok and v.packets == 0 and "cannot vouch" in v.summary


def test_ipv6_housekeeping_counts_only_after_stop_began() -> None:
    mld = _pkt("::", "ff02::16", proto=ICMPV6, sport=None, dport=None, ts=5.0)
    base = [_pkt(CLIENT, "203.0.113.11", ts=1.0), mld]
    assert judge(base, RELAYS, own_mac=CLIENT_MAC, stopped_at=4.0).ok
    assert judge(base, RELAYS, own_mac=CLIENT_MAC, stopped_at=4.0).after_stop == 1
    assert not judge(base, RELAYS, own_mac=CLIENT_MAC, stopped_at=6.0).ok  # while active
    assert not judge(base, RELAYS, own_mac=CLIENT_MAC).ok
    # After stop, only link-local housekeeping is excused: a global destination is not.
    late = _pkt("2001:db8:4c41:100::2", "2001:db8:4c41::80", proto=ICMPV6, ts=5.0)
    assert not judge([base[0], late], RELAYS, own_mac=CLIENT_MAC, stopped_at=4.0).ok


def test_pcap_reader_reads_what_tcpdump_writes() -> None:
    frame = (bytes.fromhex("020000000001" "020000000002" "0800")
             + bytes.fromhex("4500002800014000400600000000000000000000")
             + bytes.fromhex("9c40232900000000000000005002ffff00000000"))
    frame = frame[:26] + ipaddress.IPv4Address(CLIENT).packed \
        + ipaddress.IPv4Address("203.0.113.11").packed + frame[34:]
    header = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
    record = (7).to_bytes(4, "little") + (0).to_bytes(4, "little") \
        + len(frame).to_bytes(4, "little") + (1500).to_bytes(4, "little")
    (p,) = read_pcap(header + record + frame)
    assert (p.src, p.dst, p.proto, p.sport, p.dport, p.length) == (
        CLIENT, "203.0.113.11", TCP, 40000, 9001, 1500)
    assert p.src_mac == CLIENT_MAC
    assert parse_frame(0.0, frame).tcp_flags == 0x02  # SYN
    assert judge([p], RELAYS, own_mac=CLIENT_MAC).ok


def _info() -> LabInfo:
    lay = layout(DEMO_SPEC)
    auths = tuple(Authority(relay=r, v3ident="A" * 40, fingerprint="B" * 40)
                  for r in lay.authorities)
    return LabInfo(spec=DEMO_SPEC, layout=lay, authorities=auths, fingerprints={},
                   onion="x" * 56 + ".onion")


def test_torified_probe_fails_when_the_server_sees_the_client() -> None:
    info = _info()
    leak = next(c for c in checks.leak_battery(info) if c.key == "leak_tcp")
    seen_client = {"json": {"IP": str(info.layout.client4), "IsTor": False}, "elapsed": 0.01}
    ok, text = leak.judge([seen_client])
    assert not ok and "leak" in text
    seen_exit = {"json": {"IP": str(info.layout.exits[0].v4), "IsTor": True}, "elapsed": 0.01}
    assert leak.judge([seen_exit])[0]


def test_refused_probe_fails_when_anything_answers() -> None:
    info = _info()
    ipv6 = next(c for c in checks.leak_battery(info) if c.key == "leak_ipv6")
    refused = {"error": "OSError: [Errno 99]", "errno": "EADDRNOTAVAIL", "elapsed": 0.0}
    assert ipv6.judge([refused] * 3)[0]
    ok, text = ipv6.judge([refused, {"reply": "00", "elapsed": 0.1}, refused])
    assert not ok and "ANSWERED" in text


def test_dns_probe_fails_when_the_lan_resolver_answers() -> None:
    lay = _info().layout
    judge_dns = checks.via_exit_dns(lay)
    assert judge_dns([{"answers": [str(lay.dns4)]}])[0]
    ok, text = judge_dns([{"answers": [str(lay.resolver4)]}])
    assert not ok and "DNS leak" in text
    assert not judge_dns([{"error": "TimeoutError: timed out"}])[0]


def test_myip_and_onion_verdicts() -> None:
    info = _info()
    exit4 = str(info.layout.exits[0].v4)
    assert checks.judge_myip(info, {"IP": exit4, "IsTor": True}) == (True, f"exit {exit4} "
                                                                           "IsTor=true")
    assert not checks.judge_myip(info, {"IP": str(info.layout.client4), "IsTor": False})[0]
    ok, _ = checks.judge_onion(info, {"status": 200, "peer": "10.200.1.2"}, "10.192.0.0/10")
    assert ok
    ok, text = checks.judge_onion(info, {"status": 200, "peer": "203.0.113.80"}, "10.192.0.0/10")
    assert not ok and "NOT in" in text


def test_demo_config_sets_backend_and_timeout() -> None:
    from netspectre import config

    cfg = config.parse(clientns.config_text(_info(), backend="iptables-legacy"))
    assert cfg.firewall.backend is config.BackendName.IPTABLES_LEGACY
    assert cfg.tor.bootstrap_timeout == clientns.BOOTSTRAP_TIMEOUT
    assert cfg.check.url.startswith("http://203.0.113.80/")


def test_config_keeps_the_lab_table_for_the_lab_spec() -> None:
    from netspectre import config
    from netspectre.lab import from_mapping

    cfg = config.parse('[lab]\nprefix = "nsdemo-"\nexits = 2\n')
    spec = from_mapping(cfg.lab)
    assert spec.prefix == "nsdemo-" and spec.exits == 2


def test_a_demo_step_is_a_finding_with_the_demos_json_shape() -> None:
    """`lab demo --json` keeps its row shape (key order included) on top of the one Finding."""
    f = checks.check("myip", True, 0.12345, "exit 203.0.113.31", {"IP": "203.0.113.31"})
    assert (f.check, f.ok, f.detail, f.verdict) == ("myip", True, "exit 203.0.113.31", "PASS")
    assert json.dumps(checks.row(f)) == json.dumps({
        "key": "myip", "title": "exit check (myip)", "verdict": "PASS", "ok": True,
        "seconds": 0.123, "evidence": "exit 203.0.113.31", "data": {"IP": "203.0.113.31"}})
    assert checks.row(checks.check("stop", None, 0.0, "not run"))["verdict"] == "SKIP"
