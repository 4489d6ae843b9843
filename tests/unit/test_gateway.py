"""[gateway] and ipv6 = "torify" (issue 11), pure: config, policy, torrc, facts, the iptables
refusal, and what status/verify/doctor say. The rules themselves are golden files
(tests/golden/nft/gateway*.nft, torify.nft, raw_guard_gateway.nft)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from netspectre import cli_text, config, facts, gatewayinfo, policy
from netspectre.backends import Backend, iptables, nft
from netspectre.errors import ConfigError
from netspectre.paths import Paths
from netspectre.plan import derive
from netspectre.policy import HostFacts
from netspectre.tor import torrc

FACTS = HostFacts(tor_uid=102, tor_user="debian-tor")
PATHS = Paths(run=Path("/run/netspectre"), lib=Path("/var/lib/netspectre"),
              daemon=Path("/run/netspectre-tor/host"))
GATEWAY = '[gateway]\ninterfaces = ["docker0", "virbr0"]\n'
TORIFY = '[firewall]\nipv6 = "torify"\n'


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(text)
    return info.value


# --- config ----------------------------------------------------------------------------------


def test_defaults_have_no_gateway_and_keep_ipv6_disabled() -> None:
    c = config.parse("")
    assert c.gateway == config.GatewayConfig() and c.gateway.interfaces == ()
    assert c.firewall.ipv6 is config.Ipv6Mode.DISABLE
    default_lan = [ipaddress.ip_network(n) for n in config.DEFAULT_LAN]
    assert not any(c.tor.virtual_network6.overlaps(n) for n in default_lan
                   if isinstance(n, ipaddress.IPv6Network))


def test_interfaces_are_validated_like_linux_names_and_deduplicated() -> None:
    c = config.parse('[gateway]\ninterfaces = ["docker0", "br-lan", "docker0", "veth.1@x"]\n')
    assert c.gateway.interfaces == ("docker0", "br-lan", "veth.1@x")
    for name in ("", "a" * 16, "a b", "eth0:1", "a/b", "docker*", 'x"y', ".", ".."):
        err = refused(f"[gateway]\ninterfaces = [{json.dumps(name)}]\n")
        assert "gateway.interfaces" in err.message, name
    assert "loopback" in refused('[gateway]\ninterfaces = ["lo"]\n').message
    assert "list of strings" in refused("[gateway]\ninterfaces = \"docker0\"\n").message


def test_gateway_ports_must_be_their_own() -> None:
    err = refused(GATEWAY + "trans_port = 9053\n")
    assert err.message == "invalid gateway.trans_port = 9053: the same port as tor.dns_port"
    assert err.hint
    same = refused(GATEWAY + "trans_port = 9100\ndns_port = 9100\n")
    assert same.message == "invalid gateway.dns_port = 9100: the same port as gateway.trans_port"
    # Without interfaces the gateway's ports are unused: they clash with nothing.
    assert config.parse("[tor]\ntrans_port = 9041\n").tor.trans_port == 9041


def test_virtual_network6_values() -> None:
    assert "IPv6 network" in refused('[tor]\nvirtual_network6 = "10.0.0.0/8"\n').message
    assert "/104" in refused('[tor]\nvirtual_network6 = "2001:db8::/112"\n').message
    assert "not a CIDR" in refused('[tor]\nvirtual_network6 = "2001:db8::1/48"\n').message


@pytest.mark.parametrize("uses", [TORIFY, GATEWAY], ids=["torify", "gateway"])
def test_overlapping_virtual_network6_is_refused_when_used(uses: str) -> None:
    lan = '[firewall]\nlan = ["fc00::/7"]\n'
    text = uses.replace("[firewall]\n", lan) if "[firewall]" in uses else uses + lan
    err = refused(text)
    assert err.message == ("tor.virtual_network6 = 'fd6e:7370:6563::/48' overlaps "
                           "firewall.lan 'fc00::/7'")
    assert err.hint is not None and "nothing was changed" in err.hint
    # Not used (ipv6 = "disable", no gateway): an fc00::/7 LAN stays a valid config.
    assert config.parse('[firewall]\nlan = ["fc00::/7"]\n').firewall.lan == ("fc00::/7",)
    # Moved out of the LAN: accepted.
    config.parse(text + '[tor]\nvirtual_network6 = "2001:db8:ff::/48"\n')


# --- policy and plan -------------------------------------------------------------------------


def test_old_configs_keep_their_summary_and_digest_fields() -> None:
    p = policy.build(config.parse(""), FACTS)
    summary = p.summary()
    assert "gateway" not in summary and "virtual_network6" not in summary
    assert summary["ipv6"] == "disable"
    assert not set(policy.NEW_FIELDS) & set(p.digest_fields())
    assert policy.build(config.parse('[firewall]\nipv6 = "block"\n'), FACTS).ipv6_mode == "block"


def test_gateway_and_torify_in_the_policy() -> None:
    p = policy.build(config.parse(GATEWAY + TORIFY), FACTS)
    assert p.torify_ipv6 and not p.disable_ipv6 and p.ipv6_mode == "torify"
    assert p.gateway == ("docker0", "virbr0")
    assert (p.gateway_trans_port, p.gateway_dns_port) == (9041, 9054)
    assert p.summary()["gateway"] == {"interfaces": ["docker0", "virbr0"],
                                      "trans_port": 9041, "dns_port": 9054}
    assert p.summary()["virtual_network6"] == "fd6e:7370:6563::/48"
    one = derive(config.parse(GATEWAY), FACTS, PATHS).digest()
    other = derive(config.parse(GATEWAY.replace("virbr0", "br0")), FACTS, PATHS).digest()
    assert one != other  # a changed interface list is a changed plan (restart applies it)


# --- torrc -----------------------------------------------------------------------------------


def lines(text: str, facts_: HostFacts = FACTS) -> list[str]:
    return torrc.render(config.parse(text), PATHS, facts_).splitlines()


def test_torrc_torify_with_and_without_loopback6() -> None:
    got = lines(TORIFY)
    assert "TransPort [::1]:9040" in got and "DNSPort [::1]:9053 IPv6Traffic" in got
    assert "VirtualAddrNetworkIPv6 [fd6e:7370:6563::]/48" in got
    bare = lines(TORIFY, HostFacts(102, "debian-tor", ipv6_stack=False, ipv6_loopback=False))
    assert not [x for x in bare if "[::" in x and not x.startswith("#")]
    assert "VirtualAddrNetworkIPv6 [fd6e:7370:6563::]/48" in bare
    # IPv6Traffic is not a TransPort flag (tor 0.4.9 warns "Unrecognized TransPort option").
    assert not [x for x in got if x.startswith("TransPort") and "IPv6Traffic" in x]


def test_torrc_gateway_listeners_follow_the_ipv6_stack() -> None:
    got = lines(GATEWAY)
    assert {"TransPort 0.0.0.0:9041", "DNSPort 0.0.0.0:9054", "TransPort [::]:9041",
            "DNSPort [::]:9054 IPv6Traffic"} <= set(got)
    assert "TransPort [::1]:9040" not in got  # the host's own IPv6 is not torified
    bare = lines(GATEWAY, HostFacts(102, "debian-tor", ipv6_stack=False, ipv6_loopback=False))
    assert "TransPort 0.0.0.0:9041" in bare and "TransPort [::]:9041" not in bare


def test_torrc_of_old_configs_has_no_ipv6_lines() -> None:
    assert not [x for x in lines("") if "IPv6" in x or "[::" in x]


def test_torrc_extra_may_not_set_the_ipv6_virtual_network() -> None:
    with pytest.raises(ConfigError, match="VirtualAddrNetworkIPv6"):
        lines('[tor]\ntorrc_extra = ["VirtualAddrNetworkIPv6 [fd00::]/8"]\n')


# --- facts -----------------------------------------------------------------------------------


def test_ipv6_facts(tmp_path: Path) -> None:
    path = tmp_path / "if_inet6"
    assert facts.ipv6_facts(path) == (False, False)  # ipv6.disable=1: no file
    path.write_text("fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n")
    assert facts.ipv6_facts(path) == (True, False)  # lo's disable_ipv6 took ::1 away
    path.write_text(path.read_text() + f"{facts.LOOPBACK6} 01 80 10 80       lo\n")
    assert facts.ipv6_facts(path) == (True, True)


# --- backends --------------------------------------------------------------------------------


def test_iptables_renders_one_rule_set_per_gateway_interface_and_ipv6_nat() -> None:
    p = policy.build(config.parse(GATEWAY + TORIFY), FACTS)
    s6, s4 = iptables.render(p, variant=Backend.IPTABLES_NFT, saved_v4="", saved_v6="")
    for text in (s4.text, s6.text):
        assert "-I PREROUTING 1 -m comment --comment netspectre -j NETSPECTRE-PRE" in text
        for name in ("docker0", "virbr0"):
            assert f"-A NETSPECTRE-PRE -i {name} -p tcp -m comment --comment " \
                   '"netspectre:gateway_torified" -j REDIRECT --to-ports 9041' in text
    assert "*nat" in s6.text and "-j REDIRECT --to-ports 9040" in s6.text  # torify
    old6, _ = iptables.render(policy.build(config.parse(""), FACTS),
                              variant=Backend.IPTABLES_NFT, saved_v4="", saved_v6="")
    assert "*nat" not in old6.text and "PREROUTING" not in old6.text


def test_nft_matches_gateway_interfaces_by_name_only() -> None:
    (script,) = nft.render(policy.build(config.parse(GATEWAY), FACTS))
    assert 'elements = { "docker0", "virbr0" }' in script.text
    assert "dnat" not in script.text  # redirect: DNAT to loopback fails for routed packets


# --- status / verify / doctor ---------------------------------------------------------------


def test_gateway_status_findings_and_text(tmp_path: Path) -> None:
    (tmp_path / "docker0").mkdir()
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    summary = policy.build(config.parse(GATEWAY), FACTS).summary()
    info = gatewayinfo.status(summary, sys_net=tmp_path, ip_forward=forward)
    assert info == {"interfaces": {"docker0": True, "virbr0": False}, "trans_port": 9041,
                    "dns_port": 9054, "ip_forward": "0"}
    present, forwarding = gatewayinfo.findings(info)
    assert present.ok is None and "absent (covered as soon as they appear): virbr0" in \
        present.detail
    assert forwarding.ok is True
    assert gatewayinfo.text(info) == [
        "  gateway: docker0 (present), virbr0 (absent); TCP → :9041, DNS → :9054; ip_forward 0"]
    assert gatewayinfo.status(policy.build(config.parse(""), FACTS).summary()) == {}
    assert gatewayinfo.findings({}) == []
    counters = {"tcp_torified": {"packets": 1, "bytes": 1},
                "gateway_torified": {"packets": 3, "bytes": 1},
                "gateway_dns": {"packets": 2, "bytes": 1},
                "gateway_refused": {"packets": 1, "bytes": 1}}
    assert "  gateway packets: torified 3, dns 2, refused 1" in cli_text._counters(counters)
    assert not [x for x in cli_text._counters({"tcp_torified": {"packets": 1, "bytes": 1}})
                if "gateway" in x]


def test_verify_battery_expects_ipv6_tcp_and_dns_torified_with_torify() -> None:
    from netspectre.probes import REFUSED, TORIFIED, battery

    six = {p.kind: p.expect for p in battery("198.51.100.1", "2001:db8::1", (), torify6=True)
           if p.family == 6}
    assert six == {"tcp": TORIFIED, "dns": TORIFIED, "udp": REFUSED, "icmp": REFUSED}


def test_status_text_and_json_with_and_without_a_gateway() -> None:
    from netspectre.status import Status
    from tests.unit.test_cli_text import status

    info = {"interfaces": {"docker0": False}, "trans_port": 9041, "dns_port": 9054,
            "ip_forward": "0"}
    with_gw: Status = status(gateway=info)
    text = cli_text.status(with_gw)
    assert "  gateway: docker0 (absent); TCP → :9041, DNS → :9054; ip_forward 0" in text
    assert with_gw.to_json()["gateway"] == info
    plain = status()
    assert "gateway" not in plain.to_json() and "gateway" not in cli_text.status(plain)


def test_system_tor_must_listen_for_the_gateway_on_all_addresses() -> None:
    from netspectre.tor import systemtor

    cfg = config.parse('[tor]\nmode = "system"\n' + GATEWAY)
    conf = {"VirtualAddrNetworkIPv4": ["10.192.0.0/10"], "AutomapHostsOnResolve": ["1"]}
    host_only = {"net/listeners/trans": '"127.0.0.1:9040"', "net/listeners/dns": '"127.0.0.1:9053"'}
    assert systemtor.missing(cfg, host_only, conf) == ["TransPort 0.0.0.0:9041",
                                                       "DNSPort 0.0.0.0:9054"]
    both = {"net/listeners/trans": '"127.0.0.1:9040" "0.0.0.0:9041" "[::]:9041"',
            "net/listeners/dns": '"127.0.0.1:9053" "0.0.0.0:9054"'}
    assert systemtor.missing(cfg, both, conf) == []
    assert systemtor.missing(config.parse('[tor]\nmode = "system"\n'), host_only, conf) == []


def test_start_no_firewall_refuses_a_gateway_before_anything_changes(tmp_path: Path) -> None:
    """Issue 10 x 11: `start --no-firewall` has no input chain, so a [gateway]'s listeners on
    0.0.0.0/[::] would serve the whole network; it is refused before any state or tor (a
    Tor-only config without a gateway gets past this point: the control)."""
    from netspectre.commands import Context, toronly
    from tests.support.fakehost import FakeHost

    p = Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "d")
    host = FakeHost()
    gw = config.parse('[gateway]\ninterfaces = ["docker0"]\n')
    with pytest.raises(ConfigError) as err:
        toronly.plan(Context(config=gw, paths=p, runner=host))
    assert "[gateway] needs the firewall" in err.value.message
    assert not p.run.exists()
    plain = config.parse('[tor]\nuser = "nobody"\n')
    _, planned = toronly.plan(Context(config=plain, paths=p, runner=host))
    assert planned.policy.gateway == ()
