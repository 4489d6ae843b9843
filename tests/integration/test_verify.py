"""`verify`: the ruleset in force is compared with the policy; tampering is caught."""

from __future__ import annotations

import pytest
from topology import BACKENDS, Topology

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
    ok = t.netspectre(cfg, "verify")
    assert ok.rc == 0, ok
    assert ok.data["ok"] is True and all(c["ok"] for c in ok.data["checks"]), ok.data
    t.client.run(TAMPER[backend])
    bad = t.netspectre(cfg, "verify")
    assert bad.rc == 1, bad
    failed = [c for c in bad.data["checks"] if not c["ok"]]
    assert [c["check"].split(" (")[0] for c in failed] == ["ruleset in force equals the policy"]
    t.netspectre(cfg, "restart")
    assert t.netspectre(cfg, "verify").rc == 0
