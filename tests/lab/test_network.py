"""The lab's network itself, before netspectre runs in it: servers reachable directly, the
private Tor network usable by a plain client tor, nothing routed to the host, and `down`
leaving nothing behind (also after a crashed `up`)."""

from __future__ import annotations

import ipaddress
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
from netspectre.lab import LabInfo, LabSpec, consensus, network, processes
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
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        netlab.down(spec)
    assert _leftovers(spec, pids) == []
    netlab.down(spec)  # idempotent
    assert _leftovers(spec, pids) == []
