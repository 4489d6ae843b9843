"""`verify`: the ruleset in force equals the policy (tampering is caught), and the live leak
probes: every class refused or torified, and a leak introduced on purpose is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.topology import (
    BACKENDS,
    LAN_DNS,
    TAMPER_DNS,
    Topology,
    assert_no_leak,
    outgoing,
    show,
)

TAMPER = {
    # Delete the first rule of our output chain (the INVALID drop): a silent weakening.
    "nft": ["sh", "-c", "nft delete rule inet netspectre output handle "
            "$(nft -a list chain inet netspectre output | grep -m1 'ct state invalid' "
            "| sed 's/.*handle //')"],
    "iptables-nft": ["iptables-nft", "-D", "NETSPECTRE-OUT", "1"],
    "iptables-legacy": ["iptables-legacy", "-D", "NETSPECTRE-OUT", "1"],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_passes_then_catches_tampering(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    ok = t.netspectre(cfg, "verify", "--no-probes", "--no-myip")
    assert ok.rc == 0, ok
    assert ok.data["ok"] is True and all(c["ok"] for c in ok.data["checks"]), ok.data
    t.client.run(TAMPER[backend])
    bad = t.netspectre(cfg, "verify", "--no-probes", "--no-myip")
    assert bad.rc == 1, bad
    failed = [c for c in bad.data["checks"] if not c["ok"]]
    assert [c["check"].split(" (")[0] for c in failed] == ["ruleset in force equals the policy"]
    t.netspectre(cfg, "restart")
    assert t.netspectre(cfg, "verify", "--no-probes", "--no-myip").rc == 0


# --- the live leak probes (issue 5 point 3) ---------------------------------------------------

PROBE_TARGET4, PROBE_TARGET6 = "203.0.113.99", "2001:db8:2::99"  # routed to the internet ns


def _probe_config(t: Topology, backend: str, ipv6: str) -> Path:
    cfg = t.config(backend, ipv6=ipv6)
    cfg.write_text(cfg.read_text() + "[verify]\n"
                   f'target4 = "{PROBE_TARGET4}"\ntarget6 = "{PROBE_TARGET6}"\n'
                   f'lan_dns = ["{LAN_DNS}"]\ntimeout = 1.5\n')
    return cfg


def _rows(run: Any) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in run.data["checks"] if "outcome" in c}


@pytest.mark.parametrize("ipv6", ["block", "disable"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_probes_pass_and_nothing_leaves(clean: Topology, backend: str, ipv6: str) -> None:
    t = clean
    cfg = _probe_config(t, backend, ipv6)
    t.start(cfg)
    cap = t.capture()
    run = t.netspectre(cfg, "verify", "--no-myip")
    packets = t.finish(cap)
    assert run.rc == 0, run
    rows = _rows(run)
    # nft: the raw guard is on (raw_guard = "auto"), so its two AF_PACKET probes run too.
    assert len(rows) == (12 if backend == "nft" else 10), rows
    assert rows[f"DNS (TCP) to LAN resolver {LAN_DNS}:53"]["outcome"] == "refused"
    assert {r["outcome"] for r in rows.values()} <= {"torified", "refused"}, rows
    assert rows[f"DNS (UDP) to LAN resolver {LAN_DNS}:53"]["outcome"] == "torified"
    assert rows[f"TCP to {PROBE_TARGET4}:80"]["outcome"] == "torified"
    assert_no_leak(packets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probes_fail_when_a_leak_is_introduced(clean: Topology, backend: str) -> None:
    t = clean
    cfg = _probe_config(t, backend, "block")
    t.start(cfg)
    prefix = f"DNS (UDP) to LAN resolver {LAN_DNS}"
    t.client.run(TAMPER_DNS[backend])
    cap = t.capture()
    run = t.netspectre(cfg, "verify", "--no-myip")
    packets = t.finish(cap)
    assert run.rc == 1, run
    failed = [c for c in run.data["checks"] if c["ok"] is False]
    names = [c["check"] for c in failed]
    assert any(n.startswith(prefix) for n in names), failed
    leaked = next(c for c in failed if c["check"].startswith(prefix))
    assert leaked["outcome"] == "leak", leaked
    assert "answered by someone else" in leaked["detail"], leaked
    # The probe really left: the capture agrees with verify.
    assert any(p.dst == LAN_DNS and p.dport == 53 for p in outgoing(packets)), show(
        outgoing(packets))
    # DNS to a non-LAN address is no longer torified, but the catch-all still refuses it;
    # every other probe class holds.
    rows = _rows(run)
    assert rows[f"DNS (UDP) to {PROBE_TARGET4}:53"]["outcome"] == "refused", rows
    # Without the DNS refusal, DNS over TCP to the LAN resolver leaks too, and is named.
    assert rows[f"DNS (TCP) to LAN resolver {LAN_DNS}:53"]["outcome"] == "leak", rows
    others = [c for c in rows.values() if not c["check"].startswith("DNS ")]
    assert all(c["ok"] for c in others), others
