"""`start --boot` (what the systemd unit runs): never waits for Tor, and when start fails for
any reason the kill switch is closed anyway (the ruleset with no Tor behind it)."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.topology import (
    BACKENDS,
    DNS_OUT,
    LAN_DNS,
    WEB,
    WEB6,
    Topology,
    assert_no_leak,
    outgoing,
)

pytestmark = pytest.mark.root


def _probe_everything(t: Topology) -> dict[str, dict[str, object]]:
    return t.probe({
        "tcp": (t.nobody, "tcp", {"dst": WEB, "port": 80}),
        "udp": (t.nobody, "udp", {"dst": WEB, "port": 443}),
        "dns-out": (t.nobody, "dns", {"dst": DNS_OUT, "name": "example.com"}),
        "dns-lan": (t.root, "dns", {"dst": LAN_DNS, "name": "example.com"}),
        "tcp6": (t.root, "tcp", {"dst": WEB6, "port": 80}),
    })


@pytest.mark.parametrize("backend", BACKENDS)
def test_boot_start_is_active_without_waiting(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    began = time.monotonic()
    run = t.netspectre(cfg, "start", "--boot")
    assert run.rc == 0, run
    assert time.monotonic() - began < 20
    assert run.data["active"] is True
    assert not (t.state_dir / "lockdown.json").exists()
    cap = t.capture()
    _probe_everything(t)
    assert_no_leak(t.finish(cap))
    # The unit started again while active: a no-op, not a lockdown.
    again = t.netspectre(cfg, "start", "--boot")
    assert again.rc == 0 and again.data["already_active"] is True, again
    assert not (t.state_dir / "lockdown.json").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_boot_with_a_broken_config_still_closes_the_kill_switch(clean: Topology,
                                                                backend: str) -> None:
    t = clean
    good = t.config(backend)
    broken = t.workdir / "broken.toml"
    broken.write_text(good.read_text() + "[firewall.oops]\nnot_a_key = 1\n")
    cap = t.capture()
    run = t.netspectre(broken, "start", "--boot")
    assert run.rc != 0, run
    assert "error:" in run.stderr, run
    # The rules are in force although start failed, and the reason is recorded.
    assert t.ours_present(), "start --boot failed open: no netspectre rules in force"
    marker = json.loads((t.state_dir / "lockdown.json").read_text())
    assert "oops" in marker["reason"]
    status = t.netspectre(good, "status")
    assert status.data["lockdown"]["reason"] == marker["reason"], status
    _probe_everything(t)
    assert_no_leak(t.finish(cap))
    # The user fixes the config: `start` replaces the lockdown in one transaction.
    run = t.netspectre(good, "start")
    assert run.rc == 0, run
    assert not (t.state_dir / "lockdown.json").exists()
    t.stop(good)
    assert t.ours_present() == []


def test_stop_lifts_a_lockdown(clean: Topology) -> None:
    t = clean
    broken = t.workdir / "broken2.toml"
    broken.write_text('[tor]\nmode = "nonsense"\n')
    run = t.netspectre(broken, "start", "--boot")
    assert run.rc != 0
    assert t.ours_present()
    t.stop(None)
    assert t.ours_present() == []
    assert not (t.state_dir / "lockdown.json").exists()


def test_lockdown_exempts_nobody_when_tor_user_is_unknown(clean: Topology) -> None:
    """The config names a tor account that does not exist: start fails, and the lockdown
    ruleset exempts no user at all. Tor's real account gets no pass either (with a normal
    policy its UDP would leave: the positive control)."""
    t = clean
    good = t.config("nft")
    broken = t.workdir / "no-user.toml"
    broken.write_text(good.read_text().replace('user = "debian-tor"', 'user = "nsx-no-such"'))
    assert 'user = "nsx-no-such"' in broken.read_text()
    run = t.netspectre(broken, "start", "--boot")
    assert run.rc != 0 and t.ours_present(), run
    cap = t.capture()
    t.probe({"tor-udp": (t.tor, "udp", {"dst": WEB, "port": 443})})
    assert_no_leak(t.finish(cap))
    t.stop(None)
    t.start(good)
    cap = t.capture()
    t.probe({"tor-udp": (t.tor, "udp", {"dst": WEB, "port": 443})})
    packets = t.finish(cap)
    assert any(p.dst == WEB and p.dport == 443 for p in outgoing(packets)), \
        "positive control: Tor's account is exempt under the normal policy"
