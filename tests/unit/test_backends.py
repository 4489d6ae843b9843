"""The firewall objects' shell, against a stateful fake Runner: which commands, in which order."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from netspectre import backends, config, policy
from netspectre.backends import Backend, iptables, names, nft
from netspectre.backends import nft_probe as probe
from netspectre.backends.iptables_shell import IptablesFirewall
from netspectre.backends.nft_shell import NftFirewall
from netspectre.errors import CommandFailed, ConfigError, MissingTool
from tests.support.fakehost import FakeHost

FACTS = policy.HostFacts(tor_uid=102, tor_user="debian-tor")
DISABLE = policy.build(config.parse(""), FACTS)  # ipv6 = "disable", the default
BLOCK = policy.build(config.parse('[firewall]\nipv6 = "block"\n'), FACTS)

V4 = "iptables-nft-restore -w 5 --noflush"
V6 = "ip6tables-nft-restore -w 5 --noflush"
IPT_NFT = ("iptables-nft-save", "ip6tables-nft-save", "iptables-nft-restore",
           "ip6tables-nft-restore")


def test_iptables_apply_tests_every_script_before_the_first_commit() -> None:
    host = FakeHost(*IPT_NFT)
    IptablesFirewall(Backend.IPTABLES_NFT, host).apply(BLOCK)
    restores = [c for c in host.commands() if "-restore" in c]
    assert restores == [f"{V6} --test", f"{V4} --test", V6, V4]
    tested = [text for argv, text in host.calls if "--test" in argv]
    committed = [text for argv, text in host.calls if "-restore" in argv[0]
                 and "--test" not in argv]
    assert tested == committed and all(tested)


def test_iptables_apply_with_ipv6_disabled_commits_ipv4_first() -> None:
    host = FakeHost(*IPT_NFT)
    IptablesFirewall(Backend.IPTABLES_NFT, host).apply(DISABLE)
    commits = [c for c in host.commands() if c.endswith("--noflush")]
    assert commits == [V4, V6]


def test_iptables_apply_commits_nothing_when_a_test_fails() -> None:
    def refuse(args: tuple[str, ...], text: str | None) -> tuple[int, str]:
        return (1 if "--test" in args else 0), ""

    host = FakeHost(*IPT_NFT, handlers={"iptables-nft-restore": refuse})
    with pytest.raises(CommandFailed):
        IptablesFirewall(Backend.IPTABLES_NFT, host).apply(BLOCK)
    assert not [c for c in host.commands() if c.endswith("--noflush")]


def test_iptables_round_trip_present_then_removed() -> None:
    host = FakeHost(*IPT_NFT)
    fw = IptablesFirewall(Backend.IPTABLES_NFT, host)
    assert fw.present() is False
    fw.apply(BLOCK)
    assert fw.present() is True
    assert "ipv4 -A NETSPECTRE-OUT -o lo -j RETURN" in fw.listing().splitlines()
    host.calls.clear()
    fw.remove()
    # Redirecting goes down before blocking: IPv4 (nat, then filter) first, IPv6 last.
    assert [c for c in host.commands() if "-restore" in c] == [V4, V6]
    assert fw.present() is False


def test_a_fresh_render_reads_nothing_from_the_system() -> None:
    host = FakeHost(*IPT_NFT)
    fw = IptablesFirewall(Backend.IPTABLES_NFT, host)
    fresh = fw.render(BLOCK, fresh=True)
    assert host.calls == []
    assert fresh == iptables.render(BLOCK, variant=Backend.IPTABLES_NFT, saved_v4="", saved_v6="")


def test_nft_apply_is_one_transaction_and_present_asks_for_our_table() -> None:
    host = FakeHost("nft")
    fw = NftFirewall(host)
    fw.apply(DISABLE)
    # A fake kernel cannot be asked over netlink whether the guard's table is there: nft is
    # asked, and the one transaction replaces it too (it says yes).
    assert host.calls == [(("nft", "list", "table", "netdev", names.TABLE), None),
                          (nft.ARGV, nft.render(DISABLE, replace_guard=True)[0].text)]
    assert fw.present() is True
    assert host.calls[-1][0] == ("nft", "list", "table", "inet", names.TABLE)


@pytest.mark.parametrize("backend", list(Backend))
def test_remove_without_the_tool_is_a_no_op(backend: Backend) -> None:
    host = FakeHost()
    backends.open(backend, host).remove()
    assert host.calls == []
    assert backends.open(backend, host).present() is False


def test_remove_everywhere_without_any_tool_does_nothing() -> None:
    host = FakeHost()
    assert backends.remove_everywhere(Backend.IPTABLES_LEGACY, host) == []
    assert host.calls == []


def test_remove_everywhere_sweeps_on_after_a_failure() -> None:
    def fail(args: tuple[str, ...], text: str | None) -> tuple[int, str]:
        if args == nft.ARGV:
            return 1, ""
        return 0, "table ip filter\n" if args[1:] == ("list", "tables") else ""

    host = FakeHost("nft", *IPT_NFT, handlers={"nft": fail})
    host.kernel["iptables-nft-save"] = IptablesFirewall(Backend.IPTABLES_NFT).render(
        BLOCK, fresh=True)[1].text
    failures = backends.remove_everywhere(Backend.NFT, host)
    assert [type(f) for f in failures] == [CommandFailed]
    assert host.commands()[0] == "nft -f -"
    assert V4 in host.commands()  # iptables-nft was still swept


def test_everywhere_puts_the_pinned_backend_first() -> None:
    order = [fw.backend for fw in backends.everywhere(Backend.IPTABLES_LEGACY, FakeHost())]
    assert order == [Backend.IPTABLES_LEGACY, Backend.NFT, Backend.IPTABLES_NFT]


def test_detect_prefers_nft() -> None:
    fw, evidence = backends.detect("auto", FakeHost("nft", "iptables-restore"))
    assert isinstance(fw, NftFirewall) and evidence.startswith("nft found")


@pytest.mark.parametrize(("version", "expected"), [
    ("iptables v1.8.9 (nf_tables)", Backend.IPTABLES_NFT),
    ("iptables v1.8.9 (legacy)", Backend.IPTABLES_LEGACY),
])
def test_detect_without_nft_uses_the_system_iptables(version: str, expected: Backend) -> None:
    host = FakeHost("iptables", "iptables-restore", iptables_version=version)
    fw, evidence = backends.detect("auto", host)
    assert fw.backend is expected
    assert evidence == f"nft not found; system iptables is {expected.value}"
    fw, evidence = backends.detect("iptables", host)
    assert fw.backend is expected and evidence == "configured (system iptables)"


def test_detect_a_configured_backend_needs_its_tool() -> None:
    host = FakeHost("nft", "iptables-restore")
    with pytest.raises(MissingTool, match="iptables-legacy-restore"):
        backends.detect("iptables-legacy", host)
    with pytest.raises(MissingTool, match="neither nft nor iptables-restore"):
        backends.detect("auto", FakeHost())
    fw, evidence = backends.detect("nft", host)
    assert fw.backend is Backend.NFT and evidence == "configured"


def test_offline_choice_needs_no_system() -> None:
    assert backends.offline("auto") is None
    assert backends.offline("iptables") is Backend.IPTABLES_NFT
    assert backends.offline("iptables-legacy") is Backend.IPTABLES_LEGACY


def test_config_choices_are_the_backends_plus_auto_and_iptables() -> None:
    assert [m.value for m in config.BackendName] == list(backends.CHOICES)
    assert set(backends.CHOICES) == {*Backend, "auto", "iptables"}
    with pytest.raises(ConfigError) as info:
        config.parse('[firewall]\nbackend = "pf"\n')
    assert ("must be one of 'auto', 'nft', 'iptables', 'iptables-nft', 'iptables-legacy'"
            in info.value.message)


RULESET = """{"nftables": [
 {"table": {"family": "ip", "name": "filter"}},
 {"chain": {"family": "ip", "table": "filter", "name": "INPUT"}},
 {"chain": {"family": "ip", "table": "filter", "name": "OUTPUT"}},
 {"rule": {"family": "ip", "table": "filter", "chain": "INPUT"}}
]}"""


def test_iptables_nft_bookkeeping_of_builtins() -> None:
    host = FakeHost("nft", *IPT_NFT, handlers={"nft": lambda a, t: (0, RULESET)})
    absent = IptablesFirewall(Backend.IPTABLES_NFT, host).absent_builtins()
    assert "ip filter" not in absent and "ip filter INPUT" not in absent
    assert {"ip filter FORWARD", "ip nat", "ip nat OUTPUT", "ip6 filter"} <= set(absent)
    assert backends.open(Backend.NFT, host).absent_builtins() == ()
    assert IptablesFirewall(Backend.IPTABLES_LEGACY, host).absent_builtins() == ()
    host.calls.clear()
    # OUTPUT is empty again and was ours to create; INPUT holds someone's rule; the table stays
    # because a chain is still in it.
    assert backends.remove_created(["ip filter", "ip filter INPUT", "ip filter OUTPUT"],
                                   host) == []
    deletes = [c for c in host.commands() if " delete " in c]
    assert deletes == ["nft delete chain ip filter OUTPUT"]


def test_legacy_sweep_skips_a_namespace_without_legacy_tables(tmp_path: Path) -> None:
    host = FakeHost("iptables-legacy-save")
    fw = IptablesFirewall(Backend.IPTABLES_LEGACY, host, proc_net=tmp_path)
    assert fw.may_hold_ours() is False and fw.tables_exist() is False
    (tmp_path / "ip_tables_names").write_text("filter\n")
    assert fw.may_hold_ours() is True and fw.tables_exist() is True
    assert host.calls == []


def test_both_renderers_format_the_shared_rule_data() -> None:
    text = nft.table(BLOCK)
    v4 = "".join(s.text for s in iptables.render(BLOCK, variant=Backend.IPTABLES_NFT,
                                                 saved_v4="", saved_v6=""))
    # Each refusing rule comes with its log rule (the same match).
    assert text.count("tcp flags & (") == 2 * len(names.BAD_TCP_FLAGS)
    assert v4.count("--tcp-flags") == 4 * len(names.BAD_TCP_FLAGS)  # IPv4 and IPv6
    assert nft.tcp_flags(("urg", "ack"), ("urg",)) == "tcp flags & (urg|ack) == urg"
    assert iptables.tcp_flags(("urg", "ack"), ("urg",)) == "-p tcp -m tcp --tcp-flags ACK,URG URG"
    assert iptables.tcp_flags(names.TCP_FLAGS, ()).endswith(" NONE")
    assert f"priority {names.NAT_PRIORITY};" in text and f"table inet {names.TABLE}" in text


@pytest.mark.parametrize(("exists", "preamble"), [(False, False), (True, True), (None, True)])
def test_nft_apply_skips_the_replace_preamble_only_when_no_table_is_there(
        exists: bool | None, preamble: bool) -> None:
    host = FakeHost("nft")
    NftFirewall(host, exists=lambda: exists, guard_exists=lambda: False).apply(BLOCK)
    ((argv, text),) = host.calls
    assert argv == ("nft", "-f", "-") and text is not None
    full = nft.render(BLOCK)[0].text
    prelude = "table inet netspectre {}\ndelete table inet netspectre\n"
    assert full.startswith(prelude)
    assert text == (full if preamble else full.removeprefix(prelude))


def test_nft_probe_request_and_answers() -> None:
    msg = probe.request("inet", "netspectre", seq=1)
    length, kind, flags, seq, _ = probe.NLMSG.unpack_from(msg)
    assert length == len(msg) and kind == 0x0A01 and flags == 0x5 and seq == 1
    assert msg[probe.NLMSG.size] == 1 and b"netspectre\0" in msg and len(msg) % 4 == 0

    def error(code: int) -> bytes:
        body = struct.pack("=i", -code) + msg[:probe.NLMSG.size]
        return probe.NLMSG.pack(probe.NLMSG.size + len(body), 2, 0, 1, 0) + body

    table = probe.NLMSG.pack(probe.NLMSG.size + 4, 0x0A00, 0, 1, 0) + b"\1\0\0\0"
    assert probe.answer(error(errno.ENOENT)) is False
    assert probe.answer(table + error(0)) is True
    assert probe.answer(error(errno.EPERM)) is None
    assert probe.answer(table) is None  # no ack yet: undecided
