"""Issue 10 item 3, against the real kernel: a bypass account's TCP and UDP (IPv4 and IPv6)
reach the namespace's internet directly, seen on the uplink with the client's real address,
while another user's TCP goes to the stand-in TransPort and its UDP is refused; with nft the
raw guard is on, so bypassed packets also pass its egress chains. `netspectre bypass -- CMD`
runs a command as nobody with the bypass group as its gid, and it goes direct while nobody's
own agent stays torified. An unknown bypass name changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import ICMPV6, TCP, UDP, Packet
from tests.support.topology import (
    BACKENDS,
    CLIENT4,
    CLIENT6,
    DNS_OUT,
    OUT_ANSWER,
    TOR_ANSWER,
    WEB,
    WEB6,
    Topology,
    assert_no_leak,
    outgoing,
    refused_fast,
    show,
)

pytestmark = pytest.mark.root

PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
GROUP = "daemon"  # gid 1 on Debian: nothing in the client namespace runs with it as its gid


def bypass_config(t: Topology, backend: str, *, users: list[str] = (),  # type: ignore[assignment]
                  groups: list[str] = (), **kw: Any) -> Path:  # type: ignore[assignment]
    path = t.config(backend, name=f"bypass-{backend}.toml", **kw)
    path.write_text(path.read_text() + f"bypass_users = {json.dumps(list(users))}\n"
                    f"bypass_groups = {json.dumps(list(groups))}\n")
    return path


def _nd(p: Packet) -> bool:
    """IPv6 neighbour discovery (types 133-136): a bypassed IPv6 flow needs the gateway's MAC."""
    return p.proto == ICMPV6 and p.payload[:1] in (b"\x85", b"\x86", b"\x87", b"\x88")


def _direct(p: Packet) -> bool:
    """nobody's probes below: TCP 443 and UDP 3478 to WEB, TCP 80 to WEB6, DNS to DNS_OUT."""
    return _nd(p) or ((p.dst == WEB and ((p.proto == TCP and p.dport == 443)
                               or (p.proto == UDP and p.dport == 3478)))
            or (p.dst == WEB6 and p.proto == TCP and p.dport == 80)
            or (p.dst == DNS_OUT and p.proto == UDP and p.dport == 53))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bypass_user_goes_direct_and_the_others_stay_torified(clean: Topology,
                                                                backend: str) -> None:
    t = clean
    cfg = bypass_config(t, backend, users=["nobody"])
    t.start(cfg)
    status = t.netspectre(None, "status").data
    assert status["policy"]["bypass_users"] == [{"name": "nobody", "uid": 65534}], status
    assert status["torified"] is True
    checks = {c["check"]: c for c in t.netspectre(cfg, "verify", "--no-probes",
                                                  "--no-myip").data["checks"]}
    listed = checks["bypasses in force are the configured ones (direct, NOT torified)"]
    assert listed["ok"] is True and listed["detail"] == "users nobody (uid 65534)", listed
    if backend == "nft":  # the raw guard is on: bypassed packets must pass its egress chains
        assert status["raw_guard"]["raw_guard"] == "on", status["raw_guard"]
        assert "netdev netspectre" in t.client.run(["nft", "list", "tables"]).stdout
    cap = t.capture()
    got = t.probe({
        "nobody-tcp": (t.nobody, "tcp", {"dst": WEB, "port": 443}),
        "nobody-udp": (t.nobody, "udp", {"dst": WEB, "port": 3478}),
        "nobody-tcp6": (t.nobody, "tcp", {"dst": WEB6, "port": 80}),
        "nobody-dns": (t.nobody, "dns", {"dst": DNS_OUT, "name": "direct.example"}),
        "root-tcp": (t.root, "tcp", {"dst": WEB, "port": 80}),
        "root-udp": (t.root, "udp", {"dst": WEB, "port": 443}),
        "root-tcp6": (t.root, "tcp", {"dst": WEB6, "port": 443}),
        "root-dns": (t.root, "dns", {"dst": DNS_OUT, "name": "tor.example"}),
    })
    packets = t.finish(cap)
    # The bypass account: direct, answered by the real servers.
    assert got["nobody-tcp"]["banner"] == f"SERVER {WEB} 443", got["nobody-tcp"]
    assert got["nobody-udp"]["reply"] == "ECHO probe", got["nobody-udp"]
    assert got["nobody-tcp6"].get("banner") == f"SERVER {WEB6} 80", got["nobody-tcp6"]
    assert got["nobody-dns"]["answer"] == OUT_ANSWER, got["nobody-dns"]
    # Everyone else: torified or refused (the control that the rules are in force).
    assert got["root-tcp"]["banner"] == f"TOR {WEB} 80", got["root-tcp"]
    assert refused_fast(got["root-udp"]), got["root-udp"]
    assert refused_fast(got["root-tcp6"]), got["root-tcp6"]
    assert got["root-dns"]["answer"] == TOR_ANSWER, got["root-dns"]
    # On the wire: the bypass account's packets, with the client's real source address ...
    out = outgoing(packets)
    for proto, dst, dport, src in ((TCP, WEB, 443, CLIENT4), (UDP, WEB, 3478, CLIENT4),
                                   (TCP, WEB6, 80, CLIENT6), (UDP, DNS_OUT, 53, CLIENT4)):
        seen = [p for p in out if p.proto == proto and p.dst == dst and p.dport == dport]
        assert seen and all(p.src == src for p in seen), (proto, dst, dport, show(out))
    # ... and nothing else.
    assert_no_leak(packets, allowed=_direct)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bypass_group_is_matched_by_gid_not_by_membership(clean: Topology,
                                                            backend: str) -> None:
    """nobody is a supplementary member of nothing here, and its primary group is not the
    bypass group: torified. The group passes only as a socket's gid (the negative control of
    the `bypass` test below)."""
    t = clean
    t.start(bypass_config(t, backend, groups=[GROUP]))
    cap = t.capture()
    got = t.nobody.call("tcp", dst=WEB, port=443)
    packets = t.finish(cap)
    assert got["banner"] == f"TOR {WEB} 443", got
    assert_no_leak(packets)


PROBE = """
import json, os, socket
out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "egid": os.getegid(),
       "groups": sorted(os.getgroups())}
with socket.create_connection((WEB, 443), timeout=3) as s:
    out["banner"] = s.makefile().readline().strip()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.connect((WEB, 3478))
u.send(b"probe")
out["udp"] = u.recv(100).decode()
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_netspectre_bypass_runs_one_command_direct(clean: Topology, backend: str) -> None:
    t = clean
    refused = t.netspectre(None, "bypass", "--user", "nobody", "--", "true")
    assert refused.rc != 0 and "not active" in refused.stderr, str(refused)
    t.start(bypass_config(t, backend, groups=[GROUP]))
    cap = t.capture()
    # The system's python: the test's own may live under /root, which nobody cannot enter.
    run = t.netspectre(None, "bypass", "--user", "nobody", "--", PYTHON, "-c",
                       PROBE.replace("WEB", repr(WEB)))
    torified = t.nobody.call("tcp", dst=WEB, port=80)  # nobody itself, outside the command
    packets = t.finish(cap)
    assert run.rc == 0, str(run)
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert (seen["uid"], seen["euid"], seen["gid"], seen["egid"]) == (65534, 65534, 1, 1), seen
    assert 1 not in seen["groups"] and 0 not in seen["groups"], seen  # no root group kept
    assert seen["banner"] == f"SERVER {WEB} 443" and seen["udp"] == "ECHO probe", seen
    assert torified["banner"] == f"TOR {WEB} 80", torified
    direct = [p for p in outgoing(packets) if p.dst == WEB and p.src == CLIENT4
              and ((p.proto == TCP and p.dport == 443) or (p.proto == UDP and p.dport == 3478))]
    assert {p.proto for p in direct} == {TCP, UDP}, show(outgoing(packets))
    assert_no_leak(packets, allowed=_direct)
    # The command's exit status is netspectre's; an unknown group is refused.
    status = t.netspectre(None, "bypass", "--user", "nobody", "--", "sh", "-c", "exit 7")
    assert status.rc == 7, str(status)
    wrong = t.netspectre(None, "bypass", "--group", "root", "--", "true")
    assert wrong.rc == 3 and "not a bypass group in force" in wrong.stderr, str(wrong)


def _snapshot(t: Topology) -> dict[str, Any]:
    return {"ruleset": t.ruleset(), "sysctls": t.ipv6_sysctls(),
            "state": sorted(p.name for p in t.state_dir.glob("*")) if t.state_dir.exists()
            else []}


@pytest.mark.parametrize("key", ["users", "groups"])
def test_an_unknown_bypass_name_is_refused_before_anything_changes(clean: Topology,
                                                                   key: str) -> None:
    t = clean
    before = _snapshot(t)
    names = {key: ["no-such-account-nsx"]}
    run = t.netspectre(bypass_config(t, "nft", ipv6="disable", **names), "start")
    assert run.rc == 3, str(run)
    kind = key.removesuffix("s")
    assert f"no {kind} named 'no-such-account-nsx'" in run.stderr, run.stderr
    assert _snapshot(t) == before
    assert not (t.state_dir / "state.json").exists()
    # The control: the same config with a real name does change all three.
    t.start(bypass_config(t, "nft", ipv6="disable", **{key: ["nobody" if key == "users"
                                                              else GROUP]}))
    after = _snapshot(t)
    assert after["ruleset"] != before["ruleset"] and after["sysctls"] != before["sysctls"]
    assert "state.json" in after["state"]
