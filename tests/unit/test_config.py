"""Config validation: every bad value is rejected naming the key and the value."""

from __future__ import annotations

import ipaddress

import pytest

from netspectre import config
from netspectre.config import BackendName, Incoming, Ipv6Mode, TorMode
from netspectre.errors import ConfigError


def test_empty_file_gives_netspectre_defaults() -> None:
    c = config.parse("")
    assert c.tor.mode is TorMode.MANAGED
    assert (c.tor.trans_port, c.tor.dns_port) == (9040, 9053)
    assert c.tor.virtual_network == ipaddress.ip_network("10.192.0.0/10")
    assert c.firewall.lan == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    assert c.firewall.allow_lan is True
    assert c.firewall.ipv6 is Ipv6Mode.DISABLE
    assert c.firewall.incoming is Incoming.BLOCK
    assert c.firewall.backend is BackendName.AUTO


def test_full_contract_file_parses() -> None:
    c = config.parse(
        """
[tor]
mode = "system"
user = "debian-tor"
trans_port = 9041
dns_port = 9054
virtual_network = "10.64.0.0/10"
[firewall]
backend = "iptables"
lan = ["198.51.100.0/24", "2001:db8::/32"]
allow_lan = false
ipv6 = "block"
incoming = "allow"
"""
    )
    assert c.tor.mode is TorMode.SYSTEM and c.tor.user == "debian-tor"
    assert c.firewall.lan == ("198.51.100.0/24", "2001:db8::/32")
    assert c.firewall.backend is BackendName.IPTABLES
    assert c.firewall.ipv6 is Ipv6Mode.BLOCK and c.firewall.incoming is Incoming.ALLOW


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[tor]\ntrans_port = 0", "tor.trans_port = 0"),
        ("[tor]\ntrans_port = 70000", "tor.trans_port = 70000"),
        ("[tor]\ndns_port = \"53\"", "tor.dns_port = '53'"),
        ("[tor]\ndns_port = true", "tor.dns_port = True"),
        ("[tor]\nmode = \"sometimes\"", "tor.mode = 'sometimes'"),
        ("[tor]\nuser = \"bad user\"", "tor.user = 'bad user'"),
        ("[tor]\nvirtual_network = \"10.192.0.0/33\"", "tor.virtual_network"),
        ("[tor]\nvirtual_network = \"fd00::/64\"", "must be an IPv4 network"),
        ("[tor]\nvirtual_network = \"10.192.0.0/24\"", "too small"),
        ("[tor]\ntorrc_extra = [\"Log notice\\nSocksPort 1\"]", "tor.torrc_extra"),
        ("[tor]\ntorrc_extra = \"TestingTorNetwork 1\"", "tor.torrc_extra"),
        ("[firewall]\nlan = [\"10.0.0.1/8\"]", "firewall.lan = '10.0.0.1/8'"),
        ("[firewall]\nlan = [\"not-a-net\"]", "firewall.lan = 'not-a-net'"),
        ("[firewall]\nlan = \"10.0.0.0/8\"", "firewall.lan"),
        ("[firewall]\nallow_lan = \"yes\"", "firewall.allow_lan = 'yes'"),
        ("[firewall]\nipv6 = \"on\"", "firewall.ipv6 = 'on'"),
        ("[firewall]\nincoming = \"drop\"", "firewall.incoming = 'drop'"),
        ("[firewall]\nbackend = \"pf\"", "firewall.backend = 'pf'"),
        ("[firewall]\nallowlan = true", "unknown key 'firewall.allowlan'"),
        ("[tour]\nmode = \"system\"", "unknown key 'tour'"),
        ("[tor]\ntrans_port = 9053", "must differ"),
        ("[check]\nurl = \"ftp://x\"", "check.url = 'ftp://x'"),
        ("tor = 3", "invalid tor = 3"),
        ("[tor\n", "not valid TOML"),
    ],
)
def test_invalid_values_are_rejected_naming_key_and_value(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(text, path="/etc/netspectre/netspectre.toml")
    assert needle in info.value.message


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("2001:DB8:0::/32", "2001:db8::/32"), ("198.51.100.0/24", "198.51.100.0/24"),
     ("0.0.0.0/0", "0.0.0.0/0")],
)
def test_lan_cidrs_are_canonical(given: str, canonical: str) -> None:
    assert config.parse(f'[firewall]\nlan = ["{given}"]').firewall.lan == (canonical,)


@pytest.mark.parametrize("bad", ["198.51.100.0/33", "198.51.100.0/x",
                                 "2001:db8::1/32", "1.2.3/24", ""])
def test_bad_lan_cidrs(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(f'[firewall]\nlan = ["{bad}"]')
    assert f"firewall.lan = {bad!r}" in info.value.message


def test_unknown_key_error_lists_known_keys() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse("[firewall]\nipv4 = true")
    assert info.value.hint is not None and "allow_lan" in info.value.hint
