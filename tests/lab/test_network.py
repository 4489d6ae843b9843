"""The lab's network itself, before netspectre runs in it: servers reachable directly, the
private Tor network usable by a plain client tor, nothing routed to the host, and `down`
leaving nothing behind (also after a crashed `up`)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import netspectre.lab as netlab
from netspectre import config, system
from netspectre.errors import StateError
from netspectre.lab import LabInfo, LabSpec, clientns, consensus, network, processes
from tests.support import client

pytestmark = pytest.mark.lab


def probe(ns: str, *args: str, timeout: float = 60.0) -> dict[str, object]:
    return client.probe(ns, list(args), timeout=timeout)


def test_web_answers_v4_and_v6_directly(lab_up: LabInfo) -> None:
    lay, ns = lab_up.layout, lab_up.spec.client_ns
    r4 = probe(ns, "http", f"http://{lay.web4}/api/ip", "--timeout", "5")
    assert r4.get("json") == {"IP": str(lay.client4), "IsTor": False}, r4
    r6 = probe(ns, "http", f"http://[{lay.web6}]/api/ip", "--timeout", "5")
    assert r6.get("json") == {"IP": str(lay.client6), "IsTor": False}, r6
    bulk = probe(ns, "http", f"http://{lay.web4}/bytes/1000000", "--timeout", "10")
    assert bulk["status"] == 200 and bulk["bytes"] == 1_000_000, bulk


def test_guest_is_routed_through_the_client(lab_up: LabInfo) -> None:
    lay = lab_up.layout
    r = probe(lab_up.spec.guest_ns, "http", f"http://{lay.web4}/api/ip", "--timeout", "5")
    assert r.get("json") == {"IP": str(lay.guest4), "IsTor": False}, r
    r6 = probe(lab_up.spec.guest_ns, "http", f"http://[{lay.web6}]/api/ip", "--timeout", "5")
    assert r6.get("json") == {"IP": str(lay.guest6), "IsTor": False}, r6


def test_containers_sit_on_the_clients_bridge(lab_up: LabInfo) -> None:
    """Like docker0: the containers' veths are ports of one bridge in the client namespace;
    each container reaches the bridge's address (its default route) and, routed through the
    client, the web server, which sees the container's own address."""
    lay, spec = lab_up.layout, lab_up.spec
    assert len(lay.containers) == 2 and set(spec.container_ns) <= network.existing_namespaces()
    ports = system.run(["ip", "-j", "-n", spec.client_ns, "link", "show", "master",
                        network.CT_BRIDGE]).stdout
    assert {p["ifname"] for p in json.loads(ports)} == {network.ct_port(1), network.ct_port(2)}
    for ct in lay.containers:
        got = clientns.probes(ct.ns, [
            {"kind": "icmp", "dst": str(lay.ct_gw4), "timeout": 3},
            {"kind": "icmp", "dst": str(lay.ct_gw6), "timeout": 3},
            {"kind": "http", "url": f"http://{lay.web4}/api/ip", "timeout": 5},
            {"kind": "http", "url": f"http://[{lay.web6}]/api/ip", "timeout": 5},
        ])
        assert [r.get("reply") for r in got[:2]] == [True, True], (ct.ns, got)
        assert got[2].get("json") == {"IP": str(ct.v4), "IsTor": False}, (ct.ns, got[2])
        assert got[3].get("json") == {"IP": str(ct.v6), "IsTor": False}, (ct.ns, got[3])
        resolv = system.run(network.ns_argv(ct.ns, ["cat", "/etc/resolv.conf"])).stdout
        assert f"nameserver {lay.resolver4}" in resolv


def test_a_missing_container_is_not_reached(lab_up: LabInfo) -> None:
    """The control for the test above: an address on the containers' subnet that no
    container holds gets no echo reply from inside the first container's namespace."""
    lay = lab_up.layout
    nobody = lay.ctnet4[50]
    (r,) = clientns.probes(lay.containers[0].ns,
                           [{"kind": "icmp", "dst": str(nobody), "timeout": 1}])
    assert "reply" not in r and "error" in r, r


@pytest.mark.parametrize("where", ["lan", "internet"])
def test_dns_responder_answers_echo_test(lab_up: LabInfo, where: str) -> None:
    lay = lab_up.layout
    if where == "lan":  # the client's LAN resolver, as DHCP would announce it
        ns, server4, server6 = lab_up.spec.client_ns, lay.resolver4, lay.resolver6
    else:  # the exits' resolver
        ns, server4, server6 = lab_up.spec.inet_ns, lay.dns4, lay.dns6
    a = probe(ns, "dns", str(server4), "echo.test")
    assert a == {"rcode": 0, "answers": [str(lay.web4)]}
    aaaa = probe(ns, "dns", str(server6), "ECHO.test", "--type", "AAAA")
    assert aaaa == {"rcode": 0, "answers": [str(lay.web6)]}
    assert probe(ns, "dns", str(server4), "nowhere.test")["rcode"] == 3
    assert probe(ns, "dns", str(server4), "resolver.test")["answers"] == [str(server4)]


def test_client_resolv_conf_points_at_the_lan_resolver(lab_up: LabInfo) -> None:
    out = system.run(network.ns_argv(lab_up.spec.client_ns, ["cat", "/etc/resolv.conf"])).stdout
    assert f"nameserver {lab_up.layout.resolver4}" in out


def test_nothing_is_routed_to_the_host(lab_up: LabInfo) -> None:
    """The internet namespace has no default route: the lab reaches only itself."""
    for family in ("-4", "-6"):
        routes = system.run(
            ["ip", "-n", lab_up.spec.inet_ns, "-j", family, "route", "show", "table", "all"]
        ).stdout
        assert '"dst":"default"' not in routes.replace(" ", "")
    for target in ("192.0.2.1", "10.0.0.1"):
        r = system.run(["ip", "-n", lab_up.spec.inet_ns, "route", "get", target], check=False)
        assert r.returncode != 0, r.stdout


def test_consensus_lists_every_relay(lab_up: LabInfo) -> None:
    relays = consensus.relays(lab_up.spec)
    assert set(relays) == {r.nick for r in lab_up.layout.relays}
    for r in lab_up.layout.exits:
        assert "Exit" in relays[r.nick]
    for a in lab_up.layout.authorities:
        assert {"Guard", "HSDir", "Running"} <= relays[a.nick]


def test_client_config_is_valid_netspectre_config(lab_up: LabInfo) -> None:
    text = lab_up.client_config_path.read_text()
    assert text == netlab.client_config(lab_up)
    cfg = config.parse(text)
    assert cfg.tor.mode is config.TorMode.MANAGED
    assert list(cfg.tor.torrc_extra) == netlab.client_torrc_lines(lab_up)
    assert cfg.check.url == f"http://{lab_up.layout.web4}/api/ip"
    assert [str(n) for n in cfg.firewall.lan] == [str(n) for n in lab_up.layout.lan]


@pytest.fixture(scope="module")
def client_tor(lab_up: LabInfo) -> Iterator[client.ClientTor]:
    started = time.monotonic()
    c = client.start_client(lab_up, name="test-client", socks_port=9150)
    try:
        client.wait_bootstrapped(c, timeout=60)
        print(f"client tor bootstrapped in {time.monotonic() - started:.1f} s")
        yield c
    finally:
        client.stop_client(c)


def test_through_tor_the_web_server_sees_an_exit(
    lab_up: LabInfo, client_tor: client.ClientTor
) -> None:
    r = probe(client_tor.ns, "http", "http://echo.test/api/ip", "--socks", client_tor.socks)
    answer = r.get("json")
    assert isinstance(answer, dict), r
    assert answer["IsTor"] is True
    assert ipaddress.ip_address(answer["IP"]) in lab_up.exit_addresses


def test_ipv6_through_tor_the_web_server_sees_an_exits_ipv6(
    lab_up: LabInfo, client_tor: client.ClientTor
) -> None:
    """SOCKS5 CONNECT to the web server's IPv6 literal: an exit with IPv6Exit connects over
    IPv6 and the web server (listening on web6 too) sees the exit's IPv6 address."""
    lay = lab_up.layout
    r = probe(client_tor.ns, "http", f"http://[{lay.web6}]/api/ip", "--socks", client_tor.socks)
    answer = r.get("json")
    assert isinstance(answer, dict), r
    seen = ipaddress.ip_address(answer["IP"])
    assert seen.version == 6 and seen in {e.v6 for e in lay.exits}, answer
    assert answer["IsTor"] is True


@pytest.mark.skipif(system.which("curl") is None, reason="curl not installed")
def test_curl_to_ipv6_through_tor(lab_up: LabInfo, client_tor: client.ClientTor) -> None:
    """The same with curl, as a user would: `curl --socks5 … http://[web6]/api/ip` (not
    `-6`: curl applies it to the proxy's address, 127.0.0.1, too, and fails to connect)."""
    lay = lab_up.layout
    out = system.run(network.ns_argv(client_tor.ns, [
        "curl", "-sS", "--max-time", "30", "--socks5", client_tor.socks,
        f"http://[{lay.web6}]/api/ip"]), check=False)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["IsTor"] is True and answer["IP"] in {str(e.v6) for e in lay.exits}, answer


def test_two_exits_carry_traffic(lab_up: LabInfo, client_tor: client.ClientTor) -> None:
    """Both exits are usable: connections isolated by SOCKS credentials (IsolateSOCKSAuth,
    tor's default) get circuits of their own, and between them the web server sees both."""
    want = {str(e.v4) for e in lab_up.layout.exits}
    assert len(want) == 2
    seen: dict[str, int] = {}
    for i in range(40):  # each new credential: a fresh circuit, its exit one of two at random
        r = probe(client_tor.ns, "http", lab_up.check_url, "--socks", client_tor.socks,
                  "--socks-user", f"run{i}")
        answer = r.get("json")
        assert isinstance(answer, dict) and answer["IsTor"] is True, r
        seen[answer["IP"]] = seen.get(answer["IP"], 0) + 1
        if set(seen) == want:
            break
    assert set(seen) == want, f"only {seen} seen in {sum(seen.values())} isolated requests"


def test_onion_service_answers(lab: LabInfo, client_tor: client.ClientTor) -> None:
    r = probe(client_tor.ns, "http", lab.onion_url, "--socks", client_tor.socks, timeout=90)
    assert r.get("status") == 200, r
    assert isinstance(r.get("json"), dict)


def test_status_reports_everything_running(lab: LabInfo) -> None:
    st = netlab.status(lab.spec)
    assert st["up"], st
    assert st["onion"] == lab.onion
    assert st["onion_descriptor"]["ready"]
    assert st["rss_kib_total"] > 0


def test_up_refuses_when_already_up(lab_up: LabInfo) -> None:
    with pytest.raises(StateError):
        netlab.up(lab_up.spec)


def _leftovers(spec: LabSpec, pids: set[int]) -> list[str]:
    found = [f"namespace {n}" for n in sorted(network.existing_namespaces() & set(spec.namespaces))]
    found += [f"pid {p}" for p in sorted(pids) if Path(f"/proc/{p}").exists()
              and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[-1].split()[:1]]
    found += [f"dir {d}" for d in (*(network.ETC_NETNS / n for n in spec.namespaces), spec.dir)
              if d.exists()]
    return found


def test_down_after_a_crashed_up_leaves_nothing(lab_possible: None) -> None:
    """`up` killed (SIGKILL) while its tors run; `down` must still find and remove it all."""
    spec = LabSpec(prefix="nslabk-")
    netlab.down(spec)
    src = str(Path(netlab.__file__).resolve().parents[2])
    code = (
        "import netspectre.lab as l; "
        f"l.up(l.LabSpec(prefix={spec.prefix!r}), cleanup_on_failure=False)"
    )
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (spec.dir / "auth1" / "tor.pid").exists():
            assert proc.poll() is None, "up ended before its tors started"
            assert time.monotonic() < deadline, "up never started its tors"
            time.sleep(0.05)
        # The whole process group: `up` and the launchers it was running, not the daemons
        # (which called setsid), as when `up` itself is killed or crashes.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pids = {p.pid for p in processes.find(spec)}
        assert len(pids) >= 3  # the web and DNS servers and at least the authorities
        assert set(spec.namespaces) <= network.existing_namespaces()  # containers included
        assert len(spec.container_ns) == 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        netlab.down(spec)
    assert _leftovers(spec, pids) == []
    netlab.down(spec)  # idempotent
    assert _leftovers(spec, pids) == []
