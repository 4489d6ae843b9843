"""Rendered rulesets against golden files (tests/golden/). UPDATE_GOLDEN=1 rewrites them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from netspectre import config, policy
from netspectre.backends import Backend, iptables, nft

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SAVED = Path(__file__).resolve().parent / "data" / "saved"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
FACTS = policy.HostFacts(tor_uid=102, tor_user="debian-tor")

CONFIGS = {
    "default": "",
    "no_lan": "[firewall]\nallow_lan = false\n",
    "incoming_allow": '[firewall]\nincoming = "allow"\n',
    "many_lan": """
[tor]
trans_port = 9140
dns_port = 5353
[firewall]
lan = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "192.168.7.0/24", "100.64.0.0/10",
       "169.254.0.0/16", "fd00::/8", "fe80::/10"]
""",
    # The raw guard (#12) on a host with two interfaces; with incoming = "allow" the mark alone
    # lets replies out; with IPv6 on, neighbour discovery passes.
    "raw_guard": "",
    "raw_guard_incoming_allow_ipv6": '[firewall]\nincoming = "allow"\nipv6 = "block"\n',
    "raw_guard_no_lan": "[firewall]\nallow_lan = false\nraw_guard_mark = 0x1\n",
    # #11: a gateway (matched by name: docker0 need not exist), with either `incoming`; IPv6
    # torified; and the guard's egress chain of a gateway interface.
    "gateway": '[gateway]\ninterfaces = ["docker0", "br-lan"]\n[firewall]\nipv6 = "block"\n',
    "gateway_incoming_allow": '[gateway]\ninterfaces = ["docker0"]\ntrans_port = 9141\n'
                              'dns_port = 9154\n[firewall]\nincoming = "allow"\n',
    "torify": '[firewall]\nipv6 = "torify"\nlan = ["198.51.100.0/24", "2001:db8:1::/48"]\n',
    "raw_guard_gateway": '[gateway]\ninterfaces = ["wlan0", "docker0"]\n'
                         '[firewall]\nipv6 = "torify"\n',
    # Issue 10: two users and a group go direct (IPv6 on: their IPv6 goes direct too); with the
    # guard, their marked packets pass its egress chains.
    "bypass": '[firewall]\nipv6 = "block"\nbypass_users = ["alice", "backup"]\n'
              'bypass_groups = ["netspectre-bypass"]\n',
    "raw_guard_bypass": '[firewall]\nbypass_groups = ["netspectre-bypass"]\n',
    # Both: a bypass user's IPv6 returns before the torify redirect (nat) and is accepted
    # before the refusals (filter); the gateway's rules are in prerouting/input/forward.
    "gateway_torify_bypass": '[gateway]\ninterfaces = ["docker0"]\n[firewall]\n'
                             'ipv6 = "torify"\nbypass_users = ["alice"]\n'
                             'bypass_groups = ["netspectre-bypass"]\n',
    "raw_guard_gateway_bypass": '[gateway]\ninterfaces = ["wlan0"]\n[firewall]\n'
                                'ipv6 = "torify"\nbypass_users = ["alice"]\n',
}
GUARD_FACTS = policy.HostFacts(tor_uid=102, tor_user="debian-tor", devices=("eth0", "wlan0"),
                               guard_unsupported="")


# What facts.gather resolves the bypass names to (the goldens need no such accounts here).
BYPASS = {"bypass_users": (("alice", 1000), ("backup", 34)),
          "bypass_groups": (("netspectre-bypass", 990),)}


def build(case: str) -> policy.Policy:
    facts = GUARD_FACTS if case.startswith("raw_guard") else FACTS
    cfg = config.parse(CONFIGS[case])
    wanted = {"bypass_users": cfg.firewall.bypass_users,
              "bypass_groups": cfg.firewall.bypass_groups}
    facts = dataclasses.replace(facts, **{  # type: ignore[arg-type]
        k: tuple(e for e in v if e[0] in wanted[k]) for k, v in BYPASS.items()})
    return policy.build(cfg, facts)


def saved(name: str) -> tuple[str, str]:
    """(v4, v6) iptables-save texts captured from a namespace (see tests/unit/data/saved)."""
    if not name:
        return "", ""
    return (SAVED / f"{name}.v4").read_text(), (SAVED / f"{name}.v6").read_text()


def check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run the tests with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs (UPDATE_GOLDEN=1 accepts the change)"


@pytest.mark.parametrize("case", CONFIGS)
def test_nft_golden(case: str) -> None:
    (script,) = nft.render(build(case))
    assert script.argv == nft.ARGV
    check_golden(GOLDEN / "nft" / f"{case}.nft", script.text)


# case → (policy, the saved tables it is rendered against)
IPTABLES_CASES = {
    "default": ("default", ""),
    "no_lan": ("no_lan", ""),
    "incoming_allow": ("incoming_allow", ""),
    "many_lan": ("many_lan", ""),
    # Start next to docker: nothing of theirs is touched, our jumps go on top.
    "foreign": ("default", "foreign-legacy"),
    # Restart: chains are re-declared (= flushed), the jumps already in place are kept.
    "jump_present": ("default", "active-legacy"),
    # Restart after docker re-inserted its FORWARD jump above ours: ours moves back to the top.
    "displaced": ("default", "displaced-legacy"),
    # Restart with incoming = allow: NETSPECTRE-IN and its jump go away.
    "incoming_changed": ("incoming_allow", "active-legacy"),
    # #11: a gateway (one rule per interface, by name), with either `incoming`; IPv6 torified.
    "gateway": ("gateway", ""),
    "gateway_incoming_allow": ("gateway_incoming_allow", ""),
    "torify": ("torify", ""),
    # Restart from a gateway config to the default: NETSPECTRE-PRE and its jump go away.
    "gateway_removed": ("default", "gateway-legacy"),
    "bypass": ("bypass", ""),
    # Both features: bypass RETURNs right after Tor's own rule in nat (v4 and the torify v6).
    "gateway_torify_bypass": ("gateway_torify_bypass", ""),
}


@pytest.mark.parametrize("case", IPTABLES_CASES)
def test_iptables_golden(case: str) -> None:
    config_case, saved_name = IPTABLES_CASES[case]
    v4, v6 = saved(saved_name)
    s6, s4 = iptables.render(
        build(config_case), variant=Backend.IPTABLES_LEGACY, saved_v4=v4, saved_v6=v6
    )
    assert s6.argv == ("ip6tables-legacy-restore", "-w", "5", "--noflush")
    assert s4.argv == ("iptables-legacy-restore", "-w", "5", "--noflush")
    check_golden(GOLDEN / "iptables" / f"{case}.v4", s4.text)
    check_golden(GOLDEN / "iptables" / f"{case}.v6", s6.text)


@pytest.mark.parametrize("saved_name", ["active-legacy", "displaced-legacy"])
def test_iptables_teardown_golden(saved_name: str) -> None:
    v4, v6 = saved(saved_name)
    s4, s6 = iptables.teardown(variant=Backend.IPTABLES_LEGACY, saved_v4=v4, saved_v6=v6)
    assert s4.argv == ("iptables-legacy-restore", "-w", "5", "--noflush")
    assert s6.argv == ("ip6tables-legacy-restore", "-w", "5", "--noflush")
    case = "teardown_" + saved_name.removesuffix("-legacy")
    check_golden(GOLDEN / "iptables" / f"{case}.v4", s4.text)
    check_golden(GOLDEN / "iptables" / f"{case}.v6", s6.text)
