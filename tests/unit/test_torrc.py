"""The managed tor's torrc (golden files in tests/golden/torrc) and bridge validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netspectre import config
from netspectre.errors import ConfigError
from netspectre.paths import Paths
from netspectre.policy import HostFacts
from netspectre.tor import bridges, torrc

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "torrc"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
FACTS = HostFacts(tor_uid=102, tor_user="debian-tor")
PATHS = Paths(run=Path("/run/netspectre"), lib=Path("/var/lib/netspectre"),
              daemon=Path("/run/netspectre-tor/host"))

OBFS4 = (
    "obfs4 203.0.113.5:443 0123456789ABCDEF0123456789ABCDEF01234567 "
    "cert=AAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjjKKKKllllMMMMnnnnOOOOppppQQQQrrrr iat-mode=0"
)
SNOWFLAKE = (
    "snowflake 203.0.113.3:80 2B280B23E1107BB62ABFC40DDCC8824814F80A72 "
    "fingerprint=2B280B23E1107BB62ABFC40DDCC8824814F80A72 url=https://broker.example/ "
    "ice=stun:stun.example:3478 utls-imitate=hellorandomizedalpn"
)
WEBTUNNEL = (
    "webtunnel [2001:db8::1]:443 0123456789ABCDEF0123456789ABCDEF01234568 "
    "url=https://tunnel.example/secret-path ver=0.0.1"
)
LAB = [
    "TestingTorNetwork 1",
    "DirAuthority auth0 orport=5000 no-v2 v3ident=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "
    "203.0.113.1:7000 BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
]

CASES = {
    "default": "",
    "ports": "[tor]\ntrans_port = 9140\ndns_port = 5353\nsocks_port = 9160\n"
    'virtual_network = "10.64.0.0/10"\n',
    "bridges": f"[tor]\nbridges = [{OBFS4!r}, {SNOWFLAKE!r}, {WEBTUNNEL!r}]\n".replace("'", '"'),
    "lab": "[tor]\ntorrc_extra = [" + ", ".join(f'"{x}"' for x in LAB) + "]\n",
}
INSTALLED = {
    "obfs4proxy": "/usr/bin/obfs4proxy",
    "snowflake-client": "/usr/bin/snowflake-client",
    "webtunnel-client": "/usr/local/bin/webtunnel-client",
}


def render(text: str, which: dict[str, str] | None = None, paths: Paths = PATHS) -> str:
    found = which if which is not None else INSTALLED
    return torrc.render(config.parse(text), paths, FACTS, which=found.get)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = render(CASES[case])
    path = GOLDEN / f"{case}.torrc"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run the tests with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs (UPDATE_GOLDEN=1 accepts the change)"


def test_the_lines_the_firewall_relies_on() -> None:
    lines = render("").splitlines()
    for line in (
        "TransPort 127.0.0.1:9040",
        "DNSPort 127.0.0.1:9053",
        "SocksPort 127.0.0.1:9060 ExtendedErrors",
        "VirtualAddrNetworkIPv4 10.192.0.0/10",
        "AutomapHostsOnResolve 1",
        "AutomapHostsSuffixes .onion,.exit",
        "User debian-tor",
        "RunAsDaemon 0",
        "DataDirectory /var/lib/netspectre/tor",
        "ControlSocket /run/netspectre-tor/host/control",
        "CookieAuthentication 1",
        "CookieAuthFile /run/netspectre-tor/host/control.authcookie",
    ):
        assert line in lines


def test_lyrebird_preferred_and_shared_by_transports() -> None:
    both = f'[tor]\nbridges = ["{OBFS4}", "meek_lite 203.0.113.18:80 url=https://m.example/"]\n'
    text = render(both, {"lyrebird": "/usr/bin/lyrebird", "obfs4proxy": "/usr/bin/obfs4proxy"})
    assert "ClientTransportPlugin meek_lite,obfs4 exec /usr/bin/lyrebird" in text
    assert "obfs4proxy" not in text


@pytest.mark.parametrize(
    ("bridge", "package"),
    [(OBFS4, "obfs4proxy"), (SNOWFLAKE, "snowflake-client"), (WEBTUNNEL, "webtunnel-client")],
)
def test_missing_plugin_names_the_package(bridge: str, package: str) -> None:
    with pytest.raises(ConfigError) as err:
        render(f'[tor]\nbridges = ["{bridge}"]\n', {})
    assert "no " + bridge.split()[0] + " plugin is installed" in err.value.message
    assert err.value.hint is not None and package in err.value.hint


def test_plugin_given_in_torrc_extra_counts() -> None:
    text = render(
        f'[tor]\nbridges = ["{WEBTUNNEL}"]\n'
        'torrc_extra = ["ClientTransportPlugin webtunnel exec /opt/tb/lyrebird"]\n',
        {},
    )
    assert "ClientTransportPlugin webtunnel exec /opt/tb/lyrebird" in text
    assert text.count("ClientTransportPlugin") == 1


@pytest.mark.parametrize(
    "extra", ["TransPort 9999", "socksport 9050", "User root", "DataDirectory /tmp/x",
              "ControlSocket /tmp/c", "Bridge 203.0.113.1:1", "AutomapHostOnResolve 0"],
)
def test_extra_may_not_override_managed_options(extra: str) -> None:
    with pytest.raises(ConfigError, match="netspectre manages it"):
        render(f'[tor]\ntorrc_extra = ["{extra}"]\n')


def test_paths_that_cannot_be_written_into_a_torrc() -> None:
    with pytest.raises(ConfigError, match="cannot be written into a torrc"):
        render("", paths=Paths(run=Path("/tmp/my run"), lib=Path("/var/lib/x"),
                                daemon=Path("/tmp/my run-tor")))


# -- bridge lines ---------------------------------------------------------------------------


def test_parse_bridge_variants() -> None:
    b = bridges.parse(0, "Bridge " + OBFS4)
    assert (b.transport, b.address, b.fingerprint) == (
        "obfs4", "203.0.113.5:443", "0123456789ABCDEF0123456789ABCDEF01234567")
    assert dict(b.args)["iat-mode"] == "0"
    vanilla = bridges.parse(1, "203.0.113.9:9001 $0123456789abcdef0123456789abcdef01234567")
    assert vanilla.transport is None
    assert vanilla.fingerprint == "0123456789ABCDEF0123456789ABCDEF01234567"
    assert bridges.parse(2, "203.0.113.9:9001").line() == "203.0.113.9:9001"
    assert bridges.parse(3, WEBTUNNEL).address == "[2001:db8::1]:443"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("", "empty bridge line"),
        ("obfs4", "must be followed by IP:port"),
        ("obfs4 example.org:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=x iat-mode=0",
         "must be followed by IP:port"),
        ("obfs4 203.0.113.5:70000 cert=x iat-mode=0", "must be followed by IP:port"),
        ("obfs4 203.0.113.5:443 0123456789ABCDEF cert=x iat-mode=0", "40 hex digits"),
        ("obfs4 203.0.113.5:443 0123456789ABCDEF0123456789ABCDEF01234567 iat-mode=0",
         "needs cert="),
        ("webtunnel 203.0.113.5:443 0123456789ABCDEF0123456789ABCDEF01234567", "needs url="),
        ("obfs4 203.0.113.5:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=x junk",
         "expected key=value"),
        ("obfs-4 203.0.113.5:443", "neither a transport name nor IP:port"),
    ],
)
def test_malformed_bridge_lines(line: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        bridges.parse(4, line)
    assert "tor.bridges[4]" in err.value.message


def test_unknown_transport_needs_a_plugin_line() -> None:
    with pytest.raises(ConfigError, match="does not know"):
        render('[tor]\nbridges = ["foo 203.0.113.5:443"]\n')
    text = render(
        '[tor]\nbridges = ["foo 203.0.113.5:443"]\n'
        'torrc_extra = ["ClientTransportPlugin foo exec /usr/bin/foo"]\n'
    )
    assert "Bridge foo 203.0.113.5:443" in text
