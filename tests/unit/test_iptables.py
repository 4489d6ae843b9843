"""The iptables backend's reading of saved tables: what is ours, what is not, and counters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netspectre import config, policy
from netspectre.backends import COUNTERS, Backend, iptables, names, nft
from netspectre.backends.script import Script

SAVED = Path(__file__).resolve().parent / "data" / "saved"
LEGACY = Backend.IPTABLES_LEGACY
P = policy.build(config.parse(""), policy.HostFacts(tor_uid=102, tor_user="debian-tor"))


def saved(name: str) -> tuple[str, str]:
    return (SAVED / f"{name}.v4").read_text(), (SAVED / f"{name}.v6").read_text()


def lines(scripts: tuple[Script, ...], prefix: str) -> list[str]:
    return [ln for s in scripts for ln in s.text.splitlines() if ln.startswith(prefix)]


@pytest.mark.parametrize(
    ("variant", "family", "counters", "argv"),
    [
        (Backend.IPTABLES_LEGACY, 4, False, ("iptables-legacy-save",)),
        (Backend.IPTABLES_LEGACY, 6, True, ("ip6tables-legacy-save", "-c")),
        (Backend.IPTABLES_NFT, 4, True, ("iptables-nft-save", "-c")),
        (Backend.IPTABLES_NFT, 6, False, ("ip6tables-nft-save",)),
    ],
)
def test_save_argv(variant: Backend, family: int, counters: bool, argv: tuple[str, ...]) -> None:
    assert iptables.save_argv(variant, family, counters=counters) == argv


def test_save_argv_rejects_other_backends_and_families() -> None:
    with pytest.raises(ValueError):
        iptables.save_argv(Backend.NFT, 4)
    with pytest.raises(ValueError):
        iptables.save_argv(LEGACY, 5)


def test_render_order_and_argv() -> None:
    s6, s4 = iptables.render(P, variant=Backend.IPTABLES_NFT, saved_v4="", saved_v6="")
    assert s6.argv == ("ip6tables-nft-restore", "-w", "5", "--noflush")
    assert s4.argv == ("iptables-nft-restore", "-w", "5", "--noflush")
    # Each table is its own commit: blocking (filter) before redirecting (nat).
    assert [ln for ln in s4.text.splitlines() if ln.startswith("*")] == ["*filter", "*nat"]
    assert "*nat" not in s6.text
    assert s6.text.endswith("COMMIT\n") and s4.text.endswith("COMMIT\n")


def test_same_text_for_both_variants() -> None:
    v4, v6 = saved("active-legacy")
    legacy = iptables.render(P, variant=LEGACY, saved_v4=v4, saved_v6=v6)
    nftv = iptables.render(P, variant=Backend.IPTABLES_NFT, saved_v4=v4, saved_v6=v6)
    assert [s.text for s in legacy] == [s.text for s in nftv]


def test_counter_classes_match_nft() -> None:
    in_nft = set(re.findall(r"counter name (\w+)", nft.table(P)))
    scripts = iptables.render(P, variant=LEGACY, saved_v4="", saved_v6="")
    in_iptables = set(re.findall(r'--comment "netspectre:(\w+)"', "".join(s.text for s in scripts)))
    assert in_iptables == in_nft
    assert in_iptables <= set(COUNTERS)


def test_bad_tcp_flags_translated_in_canonical_order() -> None:
    out = iptables.chains(P, 4)[1]
    flags = [r.split(" -m comment")[0] for r in out.rules
             if "--tcp-flags" in r and "NFLOG" not in r]
    assert len(flags) == len(names.BAD_TCP_FLAGS)
    assert "-p tcp -m tcp --tcp-flags ACK,URG URG" in flags
    assert flags[-1] == "-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE"


def test_lan_without_allow_lan_is_neither_torified_nor_allowed() -> None:
    cfg = config.parse('[firewall]\nallow_lan = false\nlan = ["192.168.0.0/16", "fd00::/8"]\n')
    p = policy.build(cfg, policy.HostFacts(102, "t"))
    (out6, _, in6), (nat4, out4, _, in4) = iptables.chains(p, 6), iptables.chains(p, 4)
    assert "-d 192.168.0.0/16 -j RETURN" in nat4.rules
    for chain in (out4, in4, out6, in6):
        assert not [r for r in chain.rules if "192.168." in r or "fd00" in r or "--sport 6" in r]


def test_teardown_removes_exactly_our_jumps_and_chains() -> None:
    for name in ("active-legacy", "active-nft", "displaced-legacy", "displaced-nft"):
        v4, v6 = saved(name)
        scripts = iptables.teardown(variant=LEGACY, saved_v4=v4, saved_v6=v6)
        argv0 = [s.argv[0] for s in scripts]
        assert argv0 == ["iptables-legacy-restore", "ip6tables-legacy-restore"]
        deleted = lines(scripts, "-D ")
        assert sorted(deleted) == sorted(
            f"-D {hook} -m comment --comment netspectre -j NETSPECTRE-{suffix}"
            for hook, suffix in [("OUTPUT", "NAT"), ("OUTPUT", "OUT"), ("FORWARD", "FWD"),
                                 ("INPUT", "IN"), ("OUTPUT", "OUT"), ("FORWARD", "FWD"),
                                 ("INPUT", "IN")]
        ), name
        filter_chains = ["-X NETSPECTRE-OUT", "-X NETSPECTRE-FWD", "-X NETSPECTRE-IN"]
        assert sorted(lines(scripts, "-X ")) == sorted(["-X NETSPECTRE-NAT", *2 * filter_chains])
        # nat goes before filter: redirecting stops before blocking does.
        assert [ln for ln in scripts[0].text.splitlines() if ln[:1] == "*"] == ["*nat", "*filter"]


def test_teardown_is_idempotent() -> None:
    assert iptables.teardown(variant=LEGACY, saved_v4="", saved_v6="") == ()
    for name in ("foreign-legacy", "foreign-nft"):
        v4, v6 = saved(name)
        assert iptables.teardown(variant=LEGACY, saved_v4=v4, saved_v6=v6) == ()


FOREIGN = """\
*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:netspectre - [0:0]
:NETSPECTRE-OUTER - [0:0]
-A OUTPUT -m comment --comment "not netspectre" -j DROP
-A OUTPUT -m comment --comment netspectre-ssh -j ACCEPT
-A OUTPUT -m comment --comment "netspectre:blocked_udp" -j DROP
-A OUTPUT -m comment --comment "say \\"netspectre\\"" -j DROP
-A OUTPUT -p udp -j LOG --log-prefix netspectre
-A OUTPUT -m string --string netspectre --algo bm -j DROP
-A OUTPUT -j netspectre
-A OUTPUT -j NETSPECTRE-OUTER
-A OUTPUT -m comment --comment "unbalanced -j DROP
COMMIT
"""


def test_marker_is_matched_exactly() -> None:
    parsed = iptables.parse(FOREIGN)
    assert not any(r.marked for r in parsed.rules)
    assert not any(r.target in iptables.CHAINS for r in parsed.rules)
    assert iptables.teardown(variant=LEGACY, saved_v4=FOREIGN, saved_v6=FOREIGN) == ()
    scripts = iptables.render(P, variant=LEGACY, saved_v4=FOREIGN, saved_v6=FOREIGN)
    assert lines(scripts, "-D ") == []
    assert parsed.rules[3].comments == ('say "netspectre"',)


def test_parse_reads_counters_quotes_and_targets() -> None:
    (rule,) = iptables.parse(
        "*filter\n[7:420] -A OUTPUT -d 10.0.0.0/8 "
        "-m comment --comment netspectre -j NETSPECTRE-OUT\n"
    ).rules
    assert (rule.table, rule.chain, rule.target, rule.comments) == (
        "filter", "OUTPUT", "NETSPECTRE-OUT", ("netspectre",)
    )
    assert (rule.packets, rule.bytes) == (7, 420)
    assert rule.spec == "-d 10.0.0.0/8 -m comment --comment netspectre -j NETSPECTRE-OUT"


def test_unmarked_reference_removed_only_with_its_chain() -> None:
    text = """\
*filter
:FORWARD ACCEPT [0:0]
:DOCKER-USER - [0:0]
:NETSPECTRE-FWD - [0:0]
-A FORWARD -m comment --comment netspectre -j NETSPECTRE-FWD
-A DOCKER-USER -j NETSPECTRE-FWD
-A NETSPECTRE-FWD -j REJECT --reject-with icmp-admin-prohibited
COMMIT
"""
    # While the chain is wanted, somebody else's jump to it is theirs.
    render_v4 = iptables.render(P, variant=LEGACY, saved_v4=text, saved_v6="")[1].text
    assert "-D DOCKER-USER" not in render_v4
    assert "-I FORWARD" not in render_v4
    # When it goes, every reference must go first or -X fails.
    (script,) = iptables.teardown(variant=LEGACY, saved_v4=text, saved_v6="")
    assert script.text.splitlines() == [
        "*filter",
        "-D FORWARD -m comment --comment netspectre -j NETSPECTRE-FWD",
        "-D DOCKER-USER -j NETSPECTRE-FWD",
        "-F NETSPECTRE-FWD",
        "-X NETSPECTRE-FWD",
        "COMMIT",
    ]


def test_restart_fixes_duplicate_and_stray_jumps() -> None:
    text = """\
*filter
:OUTPUT ACCEPT [0:0]
:NETSPECTRE-OUT - [0:0]
-A OUTPUT -m comment --comment netspectre -j NETSPECTRE-OUT
-A OUTPUT -m comment --comment netspectre -j NETSPECTRE-OUT
COMMIT
*mangle
:OUTPUT ACCEPT [0:0]
-A OUTPUT -m comment --comment netspectre -j ACCEPT
COMMIT
"""
    s4 = iptables.render(P, variant=LEGACY, saved_v4=text, saved_v6="")[1].text
    assert s4.count("-D OUTPUT -m comment --comment netspectre -j NETSPECTRE-OUT\n") == 2
    assert s4.count("-I OUTPUT 1 -m comment --comment netspectre -j NETSPECTRE-OUT\n") == 1
    assert "*mangle\n-D OUTPUT -m comment --comment netspectre -j ACCEPT\nCOMMIT\n" in s4


def test_teardown_of_chains_left_without_jumps() -> None:
    text = "*filter\n:NETSPECTRE-OUT - [0:0]\n-A NETSPECTRE-OUT -j DROP\nCOMMIT\n"
    (script,) = iptables.teardown(variant=LEGACY, saved_v4="", saved_v6=text)
    assert script.argv[0] == "ip6tables-legacy-restore"
    assert script.text == "*filter\n-F NETSPECTRE-OUT\n-X NETSPECTRE-OUT\nCOMMIT\n"


def test_parse_counters_sums_per_name() -> None:
    counts = iptables.parse_counters(*saved("counters-nft"))
    assert set(counts) == set(COUNTERS)
    assert counts["tcp_torified"] == {"packets": 4, "bytes": 240}  # two rules, summed
    assert counts["dns_redirected"] == {"packets": 2, "bytes": 66}
    assert counts["blocked_udp"] == {"packets": 2, "bytes": 66}
    assert counts["blocked_icmp"] == {"packets": 2, "bytes": 56}
    assert counts["blocked_ipv6"] == {"packets": 2, "bytes": 106}
    assert counts["blocked_other"] == {"packets": 2, "bytes": 66}
    assert counts["blocked_tcp"] == {"packets": 0, "bytes": 0}


def test_parse_counters_ignores_foreign_rules_and_absent_chains() -> None:
    assert iptables.parse_counters("", "") == {}
    v4, v6 = saved("foreign-legacy")
    assert iptables.parse_counters(v4, v6) == {}
    foreign = "*filter\n[9:9] -A OUTPUT -m comment --comment \"netspectre:blocked_udp\" -j DROP\n"
    ours = "*filter\n:NETSPECTRE-OUT - [0:0]\nCOMMIT\n"
    assert iptables.parse_counters(foreign + ours, "")["blocked_udp"]["packets"] == 0
