"""`netspectre run`, pure parts: the namespace's rules and routes (goldens), the files it sees,
the DNS responder's wire format, the onion map, the SOCKS requests, the userns hints."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from netspectre import dnswire
from netspectre.cli_parser import parser
from netspectre.commands import run as run_cmd
from netspectre.run import dnsanswer, netsetup, relay
from netspectre.tor import socks

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "run"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (UPDATE_GOLDEN=1 accepts the change)"


def test_namespace_rules_and_routes_match_their_goldens() -> None:
    check_golden(GOLDEN / "netns.nft", netsetup.nft_script(netsetup.Ports(relay=40001, ipv6=True)))
    batches = netsetup.ip_batches(True)
    check_golden(GOLDEN / "ip.batch", "".join(f"# ip {f} -batch -\n{b}" for f, b in batches))
    assert [f for f, _ in netsetup.ip_batches(False)] == ["-4"]  # no ::1: no IPv6 routes


def test_only_tcp_and_dns_are_routed() -> None:
    """The main table gets no default route: UDP (not 53), ICMP and the rest are unroutable."""
    for _, batch in netsetup.ip_batches(True):
        rules = [line for line in batch.splitlines() if line.startswith("rule add")]
        assert rules == [
            f"rule add ipproto tcp lookup {netsetup.ROUTE_TABLE} pref 100",
            f"rule add ipproto udp dport 53 lookup {netsetup.ROUTE_TABLE} pref 101"]
        routes = [line for line in batch.splitlines() if line.startswith("route add")]
        assert len(routes) == 1 and routes[0].endswith(f"table {netsetup.ROUTE_TABLE}")


def test_nsswitch_asks_only_files_and_dns_for_hosts() -> None:
    host = ("passwd: files systemd\n# hosts: commented\n"
            "hosts:  files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns\n"
            "  hosts: files myhostname\nnetworks: files\n")
    out = netsetup.nsswitch(host)
    assert out.splitlines() == ["passwd: files systemd", "# hosts: commented",
                                "networks: files", "hosts: files dns"]
    assert netsetup.nsswitch("") == "hosts: files dns\n"


def test_hidden_directories_cover_the_resolving_daemons() -> None:
    assert set(netsetup.HIDDEN) == {"/run/systemd/resolve", "/run/nscd", "/run/avahi-daemon",
                                    "/run/dbus"}
    assert netsetup.RESOLV_CONF.splitlines()[:2] == ["nameserver 127.0.0.1", "nameserver ::1"]


def test_dns_question_is_read_and_answered() -> None:
    q = dnsanswer.read(dnswire.query("Echo.Test", 4242))
    assert q is not None and (q.ident, q.name, q.qtype) == (4242, "echo.test", dnswire.TYPE_A)
    reply = dnswire.parse(dnsanswer.answer(q, dnsanswer.NOERROR, ("203.0.113.80",)), 4242)
    assert reply is not None and (reply.rcode, reply.answers) == (0, ["203.0.113.80"])
    nx = dnswire.parse(dnsanswer.answer(q, dnsanswer.NXDOMAIN), 4242)
    assert nx is not None and (nx.rcode, nx.answers) == (3, [])


@pytest.mark.parametrize("packet", [
    b"", b"\x00" * 11,
    dnsanswer.answer(dnsanswer.Question(1, 0x0100, "a.test", 1, 1, dnswire.query("a.test", 1)
                                        [12:]), 0),  # a reply, not a query
    dnswire.query("a.test", 1)[:-3],  # truncated
    dnswire.query("a.test", 1)[:4] + b"\x00\x02" + dnswire.query("a.test", 1)[6:],  # 2 questions
    dnswire.query("a.test", 1)[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01",  # a pointer
])
def test_dns_garbage_gets_no_answer(packet: bytes) -> None:
    assert dnsanswer.read(packet) is None


def test_what_the_responder_does_per_type() -> None:
    def kind(name: str, qtype: int, qclass: int = 1) -> str:
        q = dnsanswer.read(dnswire.query(name, 1, qtype))
        assert q is not None
        return dnsanswer.wanted(dnsanswer.Question(q.ident, q.flags, q.name, q.qtype, qclass,
                                                   q.raw))

    assert kind("echo.test", dnswire.TYPE_A) == "a"
    assert kind("x" * 56 + ".onion", dnswire.TYPE_A) == "onion"
    assert kind("echo.test", dnswire.TYPE_AAAA) == "empty"
    assert kind("echo.test", 15) == "notimp"  # MX
    assert kind("echo.test", dnswire.TYPE_A, qclass=3) == "notimp"


def test_onion_map_is_stable_and_reversible() -> None:
    m = relay.OnionMap(ipaddress.IPv4Network("10.192.0.0/10"))
    a, b = m.address("a.onion"), m.address("b.onion")
    assert a != b and m.address("a.onion") == a
    assert m.by_address[a] == "a.onion" and m.by_address[b] == "b.onion"
    assert ipaddress.ip_address(a) in ipaddress.ip_network("10.192.0.0/10")


def test_socks_auth_and_resolve_requests() -> None:
    assert socks.auth_greeting() == b"\x05\x01\x02"
    assert socks.auth_request(b"user", b"pw") == b"\x01\x04user\x02pw"
    assert socks.resolve_request("echo.test") == b"\x05\xf0\x00\x03\x09echo.test\x00\x00"


def test_userns_hint_names_the_knob_that_is_off(tmp_path: Path) -> None:
    debian, ubuntu = tmp_path / "clone", tmp_path / "apparmor"
    debian.write_text("1\n")
    ubuntu.write_text("1\n")
    knobs = ((str(debian), "0", "debian fix"), (str(ubuntu), "1", "ubuntu fix"),
             (str(tmp_path / "missing"), "0", "never"))
    assert run_cmd.userns_hint(knobs) == "ubuntu fix"
    debian.write_text("0\n")
    assert run_cmd.userns_hint(knobs) == "debian fix"
    assert run_cmd.userns_hint(()) == "run: sudo netspectre run -- CMD"


def test_cli_takes_the_program_after_the_double_dash() -> None:
    args = parser().parse_args(["run", "--shared", "--", "curl", "--user", "x"])
    assert (args.shared, args.user, args.argv) == (True, None, ["--", "curl", "--user", "x"])
    args = parser().parse_args(["run", "--user", "alice", "bash"])
    assert (args.user, args.argv) == ("alice", ["bash"])


def test_nothing_to_run_is_refused_before_anything(tmp_path: Path) -> None:
    from netspectre.commands import Context
    from netspectre.config import Config
    from netspectre.errors import Error
    from netspectre.paths import Paths

    ctx = Context(Config(), Paths(run=tmp_path / "r", lib=tmp_path / "l", daemon=tmp_path / "d"))
    with pytest.raises(Error, match="nothing to run"):
        run_cmd.run(ctx, [])
    assert list(tmp_path.iterdir()) == []
