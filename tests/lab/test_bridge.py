"""Issue 11, bridges proven: netspectre in the lab's client namespace with `[tor] bridges` set
to the lab's obfs4 bridge line bootstraps to 100 % through it, and the capture of the client's
uplink holds TCP to the bridge's obfs4 port and nothing else: no relay's ORPort, no
authority's DirPort, not even the bridge's own ORPort. obfs4proxy, started by the managed tor,
runs as tor's user (the only one the firewall lets out).

The positive control: the same judge, on a capture of netspectre started without the bridge,
finds the relays' ORPorts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from netspectre.lab import LabInfo, processes
from netspectre.lab.spec import OBFS4_PORT
from tests.support.harness import Bench, assert_lab_only, poll
from tests.support.netns import RST, SYN, TCP, Packet, missing_tools
from tests.support.topology import show

pytestmark = [pytest.mark.lab, pytest.mark.root]

PLUGINS = ("obfs4proxy", "lyrebird")


@pytest.fixture(scope="module")
def bench(lab_up: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    missing = missing_tools(("ip", "nft", "tcpdump", "runuser"))
    if missing:
        pytest.skip("missing tools: " + ", ".join(missing))
    if not lab_up.bridge_line:
        pytest.skip("no obfs4 plugin (apt install obfs4proxy): the lab runs no bridge")
    b = Bench.create(lab_up, tmp_path_factory.mktemp("bridge"))
    try:
        yield b
    finally:
        b.close()


def bridge_config(b: Bench) -> Path:
    path = b.config("nft")
    text = path.read_text()
    assert text.count("[tor]\n") == 1, text
    bridged = path.with_name("client-nft-bridge.toml")
    line = json.dumps(b.info.bridge_line)  # a JSON string is a TOML basic string
    bridged.write_text(text.replace("[tor]\n", f"[tor]\nbridges = [{line}]\n"))
    bridged.chmod(0o644)
    return bridged


def not_to_bridge(b: Bench, packets: list[Packet]) -> list[Packet]:
    """What the client sent that is not TCP from its address to the bridge's obfs4 port."""
    lay = b.info.layout
    to = (str(lay.bridge.v4), OBFS4_PORT)
    return [p for p in b.outgoing(packets)
            if not (p.proto == TCP and p.src == str(lay.client4) and (p.dst, p.dport) == to)]


def stale_resets(me: str, packets: list[Packet], sent: list[Packet]) -> list[Packet]:
    """Of `sent`, the bare RSTs the client's kernel answered a relay with, on a connection of
    an earlier tor of this namespace (the relay still talks on it; no socket is left): no
    payload, and a packet from that relay to that very port came in first, with no SYN of
    ours on it in the capture. They carry nothing and are no connection of this tor's."""
    came = {(p.src, p.sport, p.dport): p.ts for p in packets if p.src_mac != me and p.is_ip}
    syns = {(p.dst, p.dport, p.sport) for p in sent if p.tcp_flags is not None
            and p.tcp_flags & SYN}
    return [p for p in sent
            if p.proto == TCP and p.tcp_flags is not None and p.tcp_flags & RST
            and not p.tcp_flags & SYN and not p.payload
            and came.get((p.dst, p.dport, p.sport), p.ts + 1) <= p.ts
            and (p.dst, p.dport, p.sport) not in syns]


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective
    raise AssertionError(f"no Uid line for pid {pid}")


def _plugins_in(ns: str) -> dict[int, str]:
    found = {}
    for pid in processes.namespace_pids(ns):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in PLUGINS:
            found[pid] = comm
    return found


def _cold(b: Bench) -> None:
    """No cached consensus or guards: the bootstrap must fetch everything through the bridge."""
    b.ensure_stopped()
    shutil.rmtree(b.lib_dir, ignore_errors=True)


def test_control_without_the_bridge_the_judge_sees_the_relays(bench: Bench) -> None:
    b, lay = bench, bench.info.layout
    _cold(b)
    cap = b.capture("no-bridge")
    with b.active(b.config("nft")):
        packets = b.finish(cap)
    others = not_to_bridge(b, packets)
    relays = {(str(r.v4), r.or_port) for r in lay.relays}
    assert any((p.dst, p.dport) in relays for p in others), \
        f"the judge saw no relay ORPort traffic without the bridge:\n{show(others)}"
    assert not [p for p in b.outgoing(packets) if p.dst == str(lay.bridge.v4)]


def test_bootstrap_through_the_obfs4_bridge_only(bench: Bench) -> None:
    b, info, lay = bench, bench.info, bench.info.layout
    _cold(b)
    cfg = bridge_config(b)
    cap = b.capture("bridge")
    with b.active(cfg) as started:
        status = b.status(cfg)
        tor = status["tor"]
        plugins = _plugins_in(b.client.name)
        uids = {pid: _uid(pid) for pid in plugins}
        tor_uid = _uid(int(tor["tor_pid"]))
        http = b.root.call("http", host=str(lay.web4), timeout=15.0)
        packets = b.finish(cap)
    assert tor["up"] and tor["bootstrap"] == 100, (tor, str(started))
    assert plugins, f"no obfs4 plugin process in the client namespace: {tor}"
    assert tor_uid != 0
    assert uids == {pid: tor_uid for pid in plugins}, \
        f"the obfs4 plugin does not run as tor's user (uid {tor_uid}): {plugins}"
    seen = (http.get("json") or {})
    assert seen.get("IsTor") is True and seen.get("IP") in {str(a) for a in info.exit_addresses}, \
        http
    sent = not_to_bridge(b, packets)
    stale = stale_resets(b.uplink_mac, packets, sent)
    others = [p for p in sent if p not in stale]
    assert not others, f"the client sent {len(others)} packet(s) not to the bridge's obfs4 port " \
        f"{lay.bridge.v4}:{OBFS4_PORT}:\n{show(others)}"
    to_bridge = [p for p in b.outgoing(packets) if p not in sent]
    assert len(to_bridge) > 10, "hardly any traffic to the bridge: is the capture alive?"
    assert_lab_only(packets)
    print(f"\nbridge: bootstrapped through {lay.bridge.v4}:{OBFS4_PORT} only "
          f"({len(to_bridge)} packets); obfs4 plugin {sorted(set(plugins.values()))} as uid "
          f"{tor_uid}; {len(stale)} bare RSTs answering an earlier tor's connections: "
          f"{show(stale) or 'none'}")


def test_the_plugin_goes_with_its_tor(bench: Bench) -> None:
    """kill -9 of the managed tor: its obfs4proxy (tor's user, let out by the kill switch)
    must not outlive it, the supervisor's new tor bootstraps through the bridge again with a
    plugin of its own, and `stop` leaves no plugin behind."""
    b, lay = bench, bench.info.layout
    cfg = bridge_config(b)
    with b.active(cfg):
        tor = b.status(cfg)["tor"]
        old = _plugins_in(b.client.name)
        assert tor["up"] and old, (tor, old)
        os.kill(int(tor["tor_pid"]), signal.SIGKILL)
        poll(lambda: not (set(_plugins_in(b.client.name)) & set(old)), timeout=10,
             what=f"the killed tor's obfs4 plugin {sorted(old)} to exit")
        again = poll(lambda: (t := b.status(cfg)["tor"])["up"] and t["bootstrap"] == 100
                     and t["tor_pid"] != tor["tor_pid"] and t, timeout=60,
                     what="the supervisor's new tor bootstrapped through the bridge",
                     pause=0.2, explain=b.tor_logs)
        new = _plugins_in(b.client.name)
        assert new and not set(new) & set(old), (old, new, again)
        http = b.root.call("http", host=str(lay.web4), timeout=15.0)
        assert (http.get("json") or {}).get("IsTor") is True, http
    left = _plugins_in(b.client.name)
    assert not left, f"obfs4 plugin left running after `stop`: {left}"


def test_verify_and_doctor_with_the_bridge(bench: Bench) -> None:
    """`verify` (leak probes and the exit check) passes with the bridge in use; `doctor` has
    no failure to report about it."""
    b = bench
    cfg = bridge_config(b)
    with b.active(cfg):
        verify = b.netspectre(cfg, "verify")
        doctor = b.netspectre(cfg, "doctor")
    assert verify.rc == 0, str(verify)
    checks = doctor.data["checks"]
    assert checks, str(doctor)
    failed = [c for c in checks if c["ok"] is False]
    assert not failed and doctor.rc == 0, str(doctor)
    print("\ndoctor with the bridge: " + "; ".join(f"{c['check']}: {c['detail']}"
                                                  for c in checks if "ridge" in c["detail"]
                                                  or "ridge" in c["check"]))


def _pkt(ts: float, mac: str, src: str, sport: int, dst: str, dport: int, flags: int,
         payload: bytes = b"") -> Packet:
    return Packet(ts=ts, src_mac=mac, dst_mac="", ethertype=0x800, version=4, src=src, dst=dst,
                  proto=TCP, sport=sport, dport=dport, tcp_flags=flags, payload=payload,
                  length=54 + len(payload))


def test_stale_resets_excuse_nothing_else() -> None:
    """The judge's one exception, on made-up packets: a bare RST answering what a relay sent
    on an old connection passes; a SYN, data, or an RST with no packet from the relay first,
    or on a connection this capture saw opened, do not."""
    me, relay, client = "aa", "203.0.113.12", "198.51.100.2"
    came = _pkt(1.0, "bb", relay, 9001, client, 40000, 0x18, b"x")
    rst = _pkt(1.1, me, client, 40000, relay, 9001, RST)
    syn = _pkt(2.0, me, client, 40001, relay, 9001, SYN)
    data = _pkt(1.2, me, client, 40000, relay, 9001, RST, b"leak")
    unprompted = _pkt(0.5, me, client, 40000, relay, 9001, RST)
    opened = _pkt(2.1, me, client, 40001, relay, 9001, RST)
    back = _pkt(2.05, "bb", relay, 9001, client, 40001, 0x12)
    sent = [unprompted, rst, data, syn, opened]
    assert stale_resets(me, [came, back, *sent], sent) == [rst]
