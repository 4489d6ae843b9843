"""`[firewall] ipv6 = "torify"` (issue 11): the host's IPv6 TCP and DNS go to tor's listeners
on [::1] (stand-ins here, as tor's user), IPv6 UDP and ICMPv6 are refused, the IPv6 sysctls
stay on; an overlapping virtual_network6 is refused before anything changes; and a real tor
starts on a host without ::1 with the torrc rendered for it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netspectre import config as configmod
from netspectre.policy import HostFacts
from netspectre.tor import torrc
from tests.support import netns
from tests.support.netns import ICMPV6
from tests.support.topology import (
    BACKENDS,
    DNS_PORT,
    GW6,
    LAN,
    TOR_ANSWER,
    TRANS_PORT,
    WEB6,
    Topology,
    assert_no_leak,
    netspectre_env,
    outgoing,
    refused_fast,
    show,
)

TOR6_ANSWER = "203.0.113.251"  # what the [::1] DNSPort stand-in answers
VNET6 = "2001:db8:ff::/48"  # virtual_network6 for the tests: a documentation range
VNET6_HOST = "2001:db8:ff::5"
LAN6 = "2001:db8:1::/64"  # the uplink's IPv6 subnet, as a LAN range
ND = {133, 134, 135, 136}


def torify_config(t: Topology, backend: str = "nft", *, lan: list[str] | None = None,
                  vnet6: str = VNET6) -> Path:
    path = t.config(backend, name="torify.toml", ipv6="torify",
                    lan=[LAN, LAN6] if lan is None else lan)
    text = path.read_text().replace("[tor]\n", f'[tor]\nvirtual_network6 = "{vnet6}"\n', 1)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def six(topo: Topology) -> Topology:
    topo.tor.call("serve_tcp", addr="::1", port=TRANS_PORT, role="tor6", fake_tor=True)
    topo.tor.call("serve_udp", addr="::1", port=DNS_PORT, role="tor-dns6", answer=TOR6_ANSWER)
    return topo


@pytest.fixture
def sclean(six: Topology) -> Iterator[Topology]:
    yield six
    six.reset()


def host_probes(t: Topology) -> dict[str, Any]:
    return t.probe({
        "tcp6": (t.root, "tcp", {"dst": WEB6, "port": 80, "timeout": 1}),
        "tcp6-nobody": (t.nobody, "tcp", {"dst": WEB6, "port": 443, "timeout": 1}),
        "tcp6-vnet": (t.nobody, "tcp", {"dst": VNET6_HOST, "port": 80, "timeout": 1}),
        "dns6": (t.root, "dns", {"dst": WEB6, "name": "aaaa.example", "timeout": 1}),
        "dns6-nobody": (t.nobody, "dns", {"dst": GW6, "name": "lan6.example", "timeout": 1}),
        "udp6": (t.root, "udp", {"dst": WEB6, "port": 443, "timeout": 1}),
        "icmp6": (t.root, "icmp", {"dst": WEB6, "timeout": 1}),
        "icmp6-lan": (t.root, "icmp", {"dst": GW6, "timeout": 1}),
    })


def is_nd_or_lan(p: Any) -> bool:
    nd = p.proto == ICMPV6 and bool(p.payload[:1]) and p.payload[0] in ND
    return nd or p.dst == GW6


def test_positive_control_ipv6_leaves_without_rules(sclean: Topology) -> None:
    t = sclean
    cap = t.capture()
    got = host_probes(t)
    packets = t.finish(cap)
    assert got["tcp6"]["banner"] == f"SERVER {WEB6} 80", got
    seen = {(p.dst, p.proto) for p in outgoing(packets)}
    assert {(WEB6, 6), (WEB6, 17), (WEB6, ICMPV6)} <= seen, show(outgoing(packets))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torify_ipv6(sclean: Topology, backend: str) -> None:
    t = sclean
    before = t.ipv6_sysctls()
    t.start(torify_config(t, backend))
    t.tor.call("events")
    cap = t.capture()
    got = host_probes(t)
    packets = t.finish(cap)
    assert_no_leak(packets, allowed=is_nd_or_lan)
    assert got["tcp6"]["banner"] == f"TOR {WEB6} 80", got["tcp6"]
    assert got["tcp6-nobody"]["banner"] == f"TOR {WEB6} 443", got["tcp6-nobody"]
    assert got["tcp6-vnet"]["banner"] == f"TOR {VNET6_HOST} 80", got["tcp6-vnet"]
    # DNS over IPv6, to any resolver (the LAN's included), to the DNSPort on [::1].
    assert got["dns6"]["answer"] == TOR6_ANSWER, got["dns6"]
    assert got["dns6-nobody"]["answer"] == TOR6_ANSWER, got["dns6-nobody"]
    for name in ("udp6", "icmp6"):
        assert refused_fast(got[name]), (name, got[name])
    assert got["icmp6-lan"].get("reply") is True, got["icmp6-lan"]  # allow_lan: the LAN direct
    events = t.tor.call("events")["events"]
    assert {e["name"] for e in events if e["role"] == "tor-dns6"} == {
        "aaaa.example", "lan6.example"}
    assert t.ipv6_sysctls() == before, "torify must not turn IPv6 off"
    status = t.netspectre(None, "status")
    assert status.data["policy"]["ipv6"] == "torify"
    assert status.data["policy"]["virtual_network6"] == VNET6
    assert status.data["ipv6_disabled"] is False
    assert status.data["counters"]["tcp_torified"]["packets"] >= 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv4_still_torified_with_torify(sclean: Topology, backend: str) -> None:
    t = sclean
    t.start(torify_config(t, backend))
    got = t.root.call("dns", dst="203.0.113.53", name="v4.example", timeout=1)
    assert got["answer"] == TOR_ANSWER, got


def test_overlapping_virtual_network6_refused_before_any_change(sclean: Topology) -> None:
    t = sclean
    before = t.ipv6_sysctls()
    run = t.netspectre(torify_config(t, lan=[LAN, "2001:db8::/32"]), "start")
    assert run.rc != 0, str(run)
    assert "overlaps firewall.lan '2001:db8::/32'" in run.stderr, run.stderr
    assert "hint:" in run.stderr and "nothing was changed" in run.stderr, run.stderr
    assert t.ours_present() == [] and not (t.state_dir / "state.json").exists()
    assert t.ipv6_sysctls() == before
    # The same config with a range outside the LAN starts (the refusal was the overlap).
    t.start(torify_config(t, lan=[LAN, "2001:db8:1::/48"]))


# --- a real tor, with and without ::1 ------------------------------------------------------

TOR = shutil.which("tor", path="/usr/sbin:/usr/bin:/sbin:/bin")


def _listening(ns: netns.Netns, port: int) -> set[str]:
    out = ns.run(["ss", "-Htln", f"sport = :{port}"]).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


@pytest.mark.skipif(TOR is None, reason="tor not installed")
@pytest.mark.parametrize("loopback6", [True, False], ids=["with-::1", "without-::1"])
def test_real_tor_starts_with_the_rendered_listeners(tmp_path: Path, loopback6: bool) -> None:
    """The torrc's IPv6 lines follow the facts read in the namespace; tor starts both ways
    (and, the control: forcing [::1] where there is none, tor refuses to start)."""
    with netns.namespaces("nsx-t6") as (ns,):
        if not loopback6:
            ns.set_sysctl("net.ipv6.conf.lo.disable_ipv6", "1")
        stack, lo6 = _facts(ns)
        assert (stack, lo6) == (True, loopback6)
        cfg = configmod.parse('[firewall]\nipv6 = "torify"\n[gateway]\ninterfaces = ["gw9"]\n')
        lines = torrc.ipv6_lines(cfg, HostFacts(0, "root", ipv6_stack=stack, ipv6_loopback=lo6))
        assert ("TransPort [::1]:9040" in lines) is loopback6
        assert _run_tor(ns, tmp_path / "ok", lines) == "started"
        if not loopback6:
            forced = [*lines, "TransPort [::1]:9040"]
            assert _run_tor(ns, tmp_path / "forced", forced) == "refused"


def _facts(ns: netns.Netns) -> tuple[bool, bool]:
    """What netspectre's facts read inside the namespace (its own /proc/net/if_inet6)."""
    code = "from netspectre.facts import ipv6_facts; print(*ipv6_facts())"
    done = subprocess.run(ns.argv(["python3", "-c", code]), capture_output=True, text=True,
                          env=netspectre_env(), check=True)
    stack, lo6 = done.stdout.split()
    return stack == "True", lo6 == "True"


def _run_tor(ns: netns.Netns, workdir: Path, lines: list[str]) -> str:
    workdir.mkdir(mode=0o700)
    conf = workdir / "torrc"
    conf.write_text("\n".join([f"DataDirectory {workdir}/data", "SocksPort 0",
                               "TransPort 127.0.0.1:9040", "DNSPort 127.0.0.1:9053",
                               "Log notice stdout", *lines]) + "\n")
    proc = ns.popen([str(TOR), "-f", str(conf)], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT)
    try:
        def outcome() -> str | None:
            if proc.poll() is not None:
                return "refused"
            return "started" if "0.0.0.0" in _listening(ns, 9041) else None
        return str(netns.wait_for(outcome, timeout=20, what="tor up or exited"))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_expects_ipv6_tcp_and_dns_torified(sclean: Topology, backend: str) -> None:
    """verify's IPv6 TCP and DNS probes must reach Tor with "torify" (refused otherwise);
    UDP and ICMPv6 must still be refused; nothing leaves."""
    t = sclean
    cfg = torify_config(t, backend)
    cfg.write_text(cfg.read_text() + '[verify]\ntarget4 = "203.0.113.99"\n'
                   'target6 = "2001:db8:2::99"\ntimeout = 1.5\n')
    t.start(cfg)
    cap = t.capture()
    run = t.netspectre(cfg, "verify", "--no-myip")
    packets = t.finish(cap)
    assert run.rc == 0, run
    rows = {c["check"]: c for c in run.data["checks"] if "outcome" in c}
    assert rows["TCP over IPv6 to [2001:db8:2::99]:80"]["outcome"] == "torified", rows
    assert rows["DNS (UDP) over IPv6 to [2001:db8:2::99]:53"]["outcome"] == "torified", rows
    assert rows["UDP over IPv6 to [2001:db8:2::99]:443"]["outcome"] == "refused", rows
    assert rows["ICMPv6 echo to 2001:db8:2::99"]["outcome"] == "refused", rows
    assert_no_leak(packets, allowed=is_nd_or_lan)


def test_restart_from_disable_to_torify_is_refused_before_any_change(sclean: Topology) -> None:
    """IPv6 turned off by "disable" stays off under a restart; torify needs stop + start."""
    t = sclean
    off = t.config("nft", name="off.toml", ipv6="disable")
    t.start(off)
    disabled = t.ipv6_sysctls()
    rules = t.ruleset()
    run = t.netspectre(torify_config(t), "restart")
    assert run.rc != 0 and "stop` then `netspectre start" in run.stderr, str(run)
    assert t.ipv6_sysctls() == disabled and t.ruleset() == rules
    t.stop(off)
    t.start(torify_config(t))
    assert t.ipv6_sysctls()["net/ipv6/conf/all/disable_ipv6"] == "0"
