"""The text form of the typed reports (cli_text), pinned: what a user reads."""

from __future__ import annotations

import time

from netspectre import cli_text
from netspectre.config import TorMode
from netspectre.findings import Checks, Finding
from netspectre.status import IdleStatus, Lockdown, Status, TorStatus

TOR = TorStatus(mode=TorMode.MANAGED, trans_port_listening=True, dns_port_listening=True,
                socks_port_listening=False, running=True, up=True,
                message="Tor is up (bootstrapped 100 %)", bootstrap=100,
                bootstrap_phase="done: Done", supervisor_pid=10, supervisor_running=True,
                tor_pid=11, notice_log="/n", data_directory="/d")
POLICY = {"tor_user": "debian-tor", "tor_uid": 102, "trans_port": 9040, "dns_port": 9053,
          "virtual_network": "10.192.0.0/10", "lan": ["198.51.100.0/24"], "lan_count": 3,
          "allow_lan": True, "incoming": "block", "ipv6": "disable"}
COUNTERS = {"tcp_torified": {"packets": 5, "bytes": 1},
            "dns_redirected": {"packets": 2, "bytes": 1},
            "blocked_udp": {"packets": 3, "bytes": 1}, "blocked_icmp": {"packets": 0, "bytes": 0}}


def status(**kw: object) -> Status:
    base: dict[str, object] = dict(active=True, phase="active", backend="nft", since=1.7e9,
                                   ruleset_in_force=True, policy=POLICY, counters=COUNTERS,
                                   ipv6_disabled=True, tor=TOR)
    base.update(kw)
    return Status(**base)  # type: ignore[arg-type]


def test_active_status() -> None:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1.7e9))
    assert cli_text.status(status()).splitlines() == [
        f"netspectre: ACTIVE since {since} (backend nft)",
        "  policy: TCP → 127.0.0.1:9040, DNS → 127.0.0.1:9053, virtual network 10.192.0.0/10, "
        "tor user debian-tor (uid 102)",
        "  LAN: 198.51.100.0/24 … (3 ranges) (direct); incoming: block; IPv6: disable",
        "  IPv6 sysctl disabled: yes",
        "  connections torified: 5; DNS queries redirected: 2",
        "  packets blocked: udp 3",
        "  tor (managed, pid 11): Tor is up (bootstrapped 100 %)",
        "    TransPort listening; DNSPort listening; SocksPort NOT listening",
    ]
    assert "config_differs" not in status().to_json()


def test_a_config_that_differs_is_said_under_the_first_line() -> None:
    note = "the config on disk differs from what is in force (tor ports): run `x`"
    report = status(config_differs=note)
    assert cli_text.status(report).splitlines()[1] == f"  NOTE: {note}"
    assert report.to_json()["config_differs"] == note


def test_idle_status_with_leftovers_or_a_lockdown() -> None:
    leftover = cli_text.status(IdleStatus(leftover_rules=("nft",), lockdown=None, tor=TOR))
    assert leftover.splitlines()[:2] == [
        "netspectre: not active", "  leftover rules from: nft — run `netspectre stop`"]
    locked = cli_text.status(IdleStatus((), Lockdown("bad config", 1.0), TOR))
    assert "LOCKDOWN: `start --boot` failed" in locked and "bad config" in locked
    assert IdleStatus((), Lockdown("r", 1.0), TOR).to_json()["lockdown"] == {"reason": "r",
                                                                             "since": 1.0}


def test_checks_table() -> None:
    found = Checks((Finding("a", True, "fine"), Finding("bbb", False, "bad", "do x"),
                    Finding("c", None, "skipped")))
    assert cli_text.checks(found).splitlines() == [
        "ok    a    fine", "FAIL  bbb  bad", "           fix: do x", "skip  c    skipped",
        "FAIL: 1 ok, 1 failed, 1 skipped"]
    assert found.to_json()["ok"] is False
