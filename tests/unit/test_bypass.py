"""Issue 10 items 2 and 3, pure parts: the bypass keys, their resolution, the policy, the
digest of configs without them, and the no-firewall state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netspectre import system

if TYPE_CHECKING:
    from netspectre import backends

import dataclasses
import grp
import json
import os
import pwd
from pathlib import Path

import pytest

from netspectre import cli_text, config, facts, policy, state
from netspectre.backends import Backend, guard, iptables, nft
from netspectre.config import TorMode
from netspectre.errors import ConfigError
from netspectre.paths import Paths
from netspectre.plan import derive
from netspectre.status import Status, TorStatus
from netspectre.tor.record import Endpoints, TorRecord

FACTS = policy.HostFacts(tor_uid=102, tor_user="debian-tor")
PATHS = Paths(run=Path("/run/x"), lib=Path("/l"), daemon=Path("/d"))


def test_bypass_keys_parse_and_deduplicate() -> None:
    c = config.parse('[firewall]\nbypass_users = ["alice", "bob", "alice"]\n'
                     'bypass_groups = ["netspectre-bypass"]\n')
    assert c.firewall.bypass_users == ("alice", "bob")
    assert c.firewall.bypass_groups == ("netspectre-bypass",)
    assert config.parse("").firewall.bypass_users == ()


@pytest.mark.parametrize("text, needle", [
    ('bypass_users = "alice"', "firewall.bypass_users"),
    ("bypass_users = [1000]", "firewall.bypass_users"),
    ('bypass_groups = ["-rf"]', "not a valid account name"),
    ('bypass_groups = ["a b"]', "not a valid account name"),
    ('bypass_user = ["alice"]', "unknown key 'firewall.bypass_user'"),
])
def test_bad_bypass_values_are_refused(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(f"[firewall]\n{text}\n")
    assert needle in err.value.message


def test_names_resolve_to_ids_and_an_unknown_name_is_one_line_with_a_hint() -> None:
    root_group = grp.getgrgid(0).gr_name
    c = config.parse(f'[firewall]\nbypass_users = ["root"]\nbypass_groups = ["{root_group}"]\n')
    assert facts.bypass_users(c) == (("root", 0),)
    assert facts.bypass_groups(c) == ((root_group, 0),)
    for key, kind in (("bypass_users", "user"), ("bypass_groups", "group")):
        bad = config.parse(f'[firewall]\n{key} = ["no-such-account-x"]\n', path="/etc/n.toml")
        with pytest.raises(ConfigError) as err:
            facts.gather(bad)
        assert err.value.message == (f"[firewall] {key}: no {kind} named 'no-such-account-x' "
                                     "on this machine")
        assert "/etc/n.toml" in (err.value.hint or "") and "nothing was changed" in (
            err.value.hint or "")


def _policy(text: str, **bypass: tuple[tuple[str, int], ...]) -> policy.Policy:
    return policy.build(config.parse(text), dataclasses.replace(FACTS, **bypass))  # type: ignore[arg-type]


def test_policy_and_summary_list_the_bypasses_only_when_configured() -> None:
    p = _policy("", bypass_users=(("alice", 1000), ("al", 1000), ("backup", 34)),
                bypass_groups=(("nsb", 990),))
    assert p.bypass_uids == (34, 1000) and p.bypass_gids == (990,)
    assert p.summary()["bypass_users"] == [{"name": "alice", "uid": 1000},
                                           {"name": "al", "uid": 1000},
                                           {"name": "backup", "uid": 34}]
    assert p.summary()["bypass_groups"] == [{"name": "nsb", "gid": 990}]
    plain = _policy("")
    assert "bypass_users" not in plain.summary() and "bypass_groups" not in plain.summary()


def test_a_config_without_bypass_keeps_its_digest() -> None:
    """The digest of a bypass-free plan is computed as before bypasses existed (a state
    recorded by the previous netspectre compares equal), and a bypass changes it."""
    import hashlib
    import json
    from dataclasses import asdict

    plan = derive(config.parse('[tor]\nmode = "system"\n'), FACTS, PATHS)
    # Neither bypass nor [gateway]/torify (issue 11's fields, also left out when unset).
    old = {k: v for k, v in asdict(plan.policy).items()
           if k != "guard_devices" and k not in policy.NEW_FIELDS}
    text = json.dumps([old, asdict(plan.endpoints), plan.torrc], sort_keys=True, default=str)
    assert plan.digest() == hashlib.sha256(text.encode()).hexdigest()
    with_bypass = dataclasses.replace(plan, policy=dataclasses.replace(
        plan.policy, bypass_groups=(("nsb", 990),)))
    assert with_bypass.digest() != plan.digest()


def test_bypass_rules_come_before_every_redirect_and_refusal() -> None:
    """nft and iptables: the bypass return is the rule right after Tor's in NAT (before the
    DNS redirect), and its accept right after Tor's in the filter (before any refusal)."""
    p = _policy('[firewall]\nipv6 = "block"\n', bypass_users=(("alice", 1000),),
                bypass_groups=(("nsb", 990),))
    (script,) = nft.render(p)
    lines = [line.strip() for line in script.text.splitlines()]
    nat = lines.index("meta skuid 102 return")
    assert lines[nat + 1: nat + 3] == ["meta skuid 1000 return", "meta skgid 990 return"]
    out = lines.index("meta skuid 102 meta nfproto ipv4 accept")
    assert lines[out + 1: out + 3] == ["meta skuid 1000 accept", "meta skgid 990 accept"]
    chain = lines.index("chain output {")
    refusing = [x for x in lines[chain: out] if ("reject" in x or "drop" in x)
                and "blocked_invalid" not in x]  # only the sanity drops come first
    assert refusing == ["type filter hook output priority 0; policy drop;"]
    v4 = {c.name: c.rules for c in iptables.chains(p, 4)}
    assert v4["NETSPECTRE-NAT"][1:3] == ("-m owner --uid-owner 1000 -j RETURN",
                                          "-m owner --gid-owner 990 -j RETURN")
    v6 = {c.name: c.rules for c in iptables.chains(p, 6)}
    assert "-m owner --gid-owner 990 -j RETURN" in v6["NETSPECTRE-OUT"]
    assert not any("REJECT" in r for r in v6["NETSPECTRE-OUT"][
        :v6["NETSPECTRE-OUT"].index("-m owner --gid-owner 990 -j RETURN")])


@pytest.mark.parametrize("ipv6", ["torify", "block"])
def test_bypass_returns_before_the_torify_ipv6_redirect_with_a_gateway(ipv6: str) -> None:
    """With a [gateway] and ipv6 = "torify" (issue 11) a bypass account's IPv6 still goes
    direct: its return precedes every redirect of the output nat (nft, ip6tables), and its
    accept precedes the refusal of virtual_network6; the gateway's rules stay in prerouting."""
    p = _policy(f'[gateway]\ninterfaces = ["docker0"]\n[firewall]\nipv6 = "{ipv6}"\n',
                bypass_users=(("alice", 1000),))
    (script,) = nft.render(p)
    text = script.text
    nat = text[text.index("chain nat_output {"):]
    nat = nat[:nat.index("}")]
    rules = [x.strip() for x in nat.splitlines()[2:]]
    assert rules[:2] == ["meta skuid 102 return", "meta skuid 1000 return"]
    assert all("redirect" not in r for r in rules[:2])
    assert any(r.startswith("ip6 daddr") and "redirect" in r for r in rules) == (
        ipv6 == "torify")
    pre = text[text.index("chain nat_prerouting {"):]
    assert "skuid" not in pre[:pre.index("}")]
    if ipv6 == "torify":
        v6 = {c.name: c.rules for c in iptables.chains(p, 6)}
        assert v6["NETSPECTRE-NAT"][:2] == ("-m owner --uid-owner 102 -j RETURN",
                                             "-m owner --uid-owner 1000 -j RETURN")
        out = v6["NETSPECTRE-OUT"]
        assert out.index("-m owner --uid-owner 1000 -j RETURN") < min(
            i for i, r in enumerate(out) if "REJECT" in r)


def test_the_guard_admits_marked_bypass_packets_and_nothing_else_new() -> None:
    base = policy.HostFacts(tor_uid=102, tor_user="debian-tor", devices=("eth0",),
                            guard_unsupported="")
    cfg = config.parse("")
    plain = policy.build(cfg, base)
    bypassed = policy.build(cfg, dataclasses.replace(base, bypass_groups=(("nsb", 990),)))
    assert plain.raw_guard and bypassed.raw_guard
    before = guard.netdev_table(plain, [], []).splitlines()
    after = guard.netdev_table(bypassed, [], []).splitlines()
    added = [line.strip() for line in after if line not in before]
    assert added == ["meta mark & 0x00002000 == 0x00002000 meta skgid 990 accept"]


def test_no_bypass_renders_no_owner_rule_but_tors() -> None:
    p = _policy("")
    (script,) = nft.render(p)
    assert script.text.count("meta skuid") == 2 and "skgid" not in script.text
    assert Backend.NFT.value == "nft"


def test_pwd_and_grp_agree_with_facts_for_nobody() -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no nobody account")
    c = config.parse('[firewall]\nbypass_users = ["nobody"]\n')
    assert facts.bypass_users(c) == (("nobody", nobody.pw_uid),)


# --- start --no-firewall: the state, the public endpoints, the text -------------------------

def _tor_only_state(**kw: object) -> state.State:
    base: dict[str, object] = dict(
        phase=state.Phase.ACTIVE, backend=Backend.NFT, since=1.7e9, boot_id=state.boot_id(),
        tor=TorRecord(endpoints=Endpoints(mode=TorMode.MANAGED, trans_port=9040, dns_port=9053,
                                          socks_port=9060, control="/run/tor/control")),
        firewall=False)
    base.update(kw)
    return state.State(**base)  # type: ignore[arg-type]


def test_an_old_state_file_without_the_field_is_a_full_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = json.loads(_tor_only_state().to_json())
    assert data["firewall"] is False
    state.save(path, _tor_only_state())
    assert state.load(path) == _tor_only_state()
    del data["firewall"]
    path.write_text(json.dumps(data))
    loaded = state.load(path)
    assert loaded is not None and loaded.firewall is True


def test_endpoints_are_published_world_readable_without_the_torrc(tmp_path: Path) -> None:
    p = Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "d")
    assert p.endpoints == tmp_path / "run-public" / "endpoints.json"
    assert Paths(run=Path("/run/netspectre"), lib=Path("/l"), daemon=Path("/d")).public == Path(
        "/run/netspectre-public/host")
    assert Paths(run=Path("/run/netspectre/netns-x"), lib=Path("/l"),
                 daemon=Path("/d")).public == Path("/run/netspectre-public/netns-x")
    record = _tor_only_state(tor=_tor_only_state().tor.with_(  # type: ignore[union-attr]
        torrc="Bridge obfs4 198.51.100.9:443 SECRET\n"))
    assert state.load_endpoints(p.endpoints) is None
    state.save_endpoints(p.endpoints, record)
    assert oct(p.endpoints.stat().st_mode & 0o777) == "0o644"
    assert oct(p.public.stat().st_mode & 0o777) == "0o755"
    assert "SECRET" not in p.endpoints.read_text() and "Bridge" not in p.endpoints.read_text()
    endpoints, firewall = state.load_endpoints(p.endpoints)  # type: ignore[misc]
    assert (endpoints.socks_port, endpoints.mode, firewall) == (9060, TorMode.MANAGED, False)
    stale = json.loads(p.endpoints.read_text()) | {"boot_id": "another boot"}
    p.endpoints.write_text(json.dumps(stale))
    assert state.load_endpoints(p.endpoints) is None  # from before a reboot: nothing is live


def _status(**kw: object) -> Status:
    tor = TorStatus(mode=TorMode.MANAGED, trans_port_listening=True, dns_port_listening=True,
                    socks_port_listening=True, running=True, up=True, message="Tor is up")
    base: dict[str, object] = dict(active=True, phase="active", backend="none", since=1.7e9,
                                   ruleset_in_force=False, policy={}, counters={},
                                   ipv6_disabled=False, tor=tor, firewall=False)
    base.update(kw)
    return Status(**base)  # type: ignore[arg-type]


def test_status_says_plainly_that_the_machine_is_not_torified() -> None:
    s = _status()
    assert s.to_json()["torified"] is False and s.to_json()["firewall"] is False
    text = cli_text.status(s)
    assert ("  WARNING: this machine's own traffic is NOT torified (started with --no-firewall);"
            " only `netspectre run` uses Tor") in text.splitlines()
    assert "ACTIVE" not in text
    full = _status(firewall=True, ruleset_in_force=True, backend="nft")
    assert full.to_json()["torified"] is True
    assert _status(firewall=True, ruleset_in_force=False).to_json()["torified"] is False


def test_status_lists_the_bypasses_in_force() -> None:
    pol = {"bypass_users": [{"name": "backup", "uid": 34}],
           "bypass_groups": [{"name": "netspectre-bypass", "gid": 990}]}
    assert cli_text.bypasses(pol) == [
        "  BYPASS (direct, NOT torified, by design): users backup (uid 34); "
        "groups netspectre-bypass (gid 990)"]
    assert cli_text.bypasses({}) == []


# --- netspectre bypass: which group, which user, refusals ------------------------------------

def test_bypass_uses_the_recorded_group_and_refuses_without_one() -> None:
    from netspectre.commands import bypass

    one = {"bypass_groups": [{"name": "nsb", "gid": 990}]}
    two = {"bypass_groups": [{"name": "nsb", "gid": 990}, {"name": "vpn", "gid": 991}]}
    assert bypass.bypass_group(one, None) == ("nsb", 990)
    assert bypass.bypass_group(two, "vpn") == ("vpn", 991)
    for pol, wanted, needle in (({}, None, "no bypass group is in force"),
                                (two, None, "several bypass groups"),
                                (one, "vpn", "'vpn' is not a bypass group in force")):
        with pytest.raises(ConfigError) as err:
            bypass.bypass_group(pol, wanted)
        assert needle in err.value.message and err.value.hint


def test_bypass_runs_as_the_sudo_user_or_the_named_one() -> None:
    from netspectre.commands import bypass

    me = pwd.getpwuid(os.getuid())
    assert bypass.invoker(None, {}).pw_uid == os.getuid()
    assert bypass.invoker(None, {"SUDO_UID": str(me.pw_uid)}).pw_name == me.pw_name
    assert bypass.invoker(me.pw_name, {"SUDO_UID": "0"}).pw_uid == me.pw_uid
    with pytest.raises(ConfigError):
        bypass.invoker("no-such-account-x", {})


@pytest.mark.parametrize("recorded", [None, "tor-only", "applying"])
def test_bypass_refuses_unless_active_with_the_firewall(tmp_path: Path,
                                                        recorded: str | None) -> None:
    from netspectre.commands import Context, bypass
    from netspectre.errors import StateError

    p = Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "d")
    p.run.mkdir()
    if recorded == "tor-only":
        state.save(p.state, _tor_only_state(policy={"bypass_groups": [{"name": "n", "gid": 9}]}))
    elif recorded == "applying":
        state.save(p.state, _tor_only_state(firewall=True, phase=state.Phase.APPLYING))
    with pytest.raises(StateError) as err:
        bypass.identity(Context(config=config.Config(), paths=p), user=None, group=None,
                        environ={})
    assert ("Tor only" if recorded == "tor-only" else "not active") in err.value.message
    state.save(p.state, _tor_only_state(firewall=True, policy={
        "bypass_groups": [{"name": "nsb", "gid": 990}]}))
    who = bypass.identity(Context(config=config.Config(), paths=p), user=None, group=None,
                          environ={})
    assert (who.uid, who.gid, who.group) == (os.getuid(), 990, "nsb")
    assert 990 not in who.groups


def test_a_failed_full_start_over_tor_only_puts_the_tor_only_state_back(tmp_path: Path) -> None:
    """The firewall never came up: the state goes back to Tor only (so `stop` still touches
    no firewall), and no other backend's rules are "replaced"."""
    from netspectre.commands import Context
    from netspectre.commands.lifecycle import converge
    from netspectre.errors import CommandFailed
    from tests.unit.test_converge import PhaseSpy

    p = Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "run-tor")
    p.run.mkdir()
    spy = PhaseSpy(p.state, "nft", fail="nft -f")
    ctx = Context(config=config.parse('[tor]\nmode = "system"\n[firewall]\nipv6 = "block"\n'),
                  paths=p, runner=spy)
    plan = derive(ctx.config, FACTS, p)
    tor_only = _tor_only_state(backend=Backend.IPTABLES_LEGACY)
    state.save(p.state, tor_only)
    with pytest.raises(CommandFailed):
        converge(ctx, tor_only, plan, nft_firewall(spy), FACTS)
    assert state.load(p.state) == tor_only
    assert not [c for c, _ in spy.phases if "iptables" in c]  # the recorded one was never used
    # and it succeeds the next time: full protection, the state says so
    ok = PhaseSpy(p.state, "nft")
    record, _ = converge(Context(config=ctx.config, paths=p, runner=ok), tor_only, plan,
                         nft_firewall(ok), FACTS)
    assert record.firewall is True and record.since == tor_only.since
    assert state.load_endpoints(p.endpoints) is not None


def nft_firewall(runner: system.Runner) -> backends.Firewall:
    from netspectre import backends

    return backends.open(Backend.NFT, runner)
