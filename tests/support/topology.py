"""The core suite's topology: client / internet / guest namespaces (TEST-NET addresses only),
agents in each, a fake Tor in the client, and netspectre runs inside the client.

client (the user's machine) --up0/down0-- internet (servers on TEST-NET addresses)
   \\--gw0/eth0-- guest (a container routed through the client; ip_forward=1 in client only)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support import netns
from tests.support.netns import Agent, Capture, Netns, Packet, call_all

HERE = Path(__file__).resolve().parent
K = TypeVar("K", bound=Hashable)  # a probe's name: "tcp", or ("root", 80)
SRC = HERE.parents[1] / "src"

CLIENT_MAC, GW_MAC = "02:6e:73:00:00:02", "02:6e:73:00:00:01"
CLIENT4, GW4 = "198.51.100.2", "198.51.100.1"
LAN = "198.51.100.0/24"
LAN_DNS, LAN_HOST = "198.51.100.53", "198.51.100.80"
WEB, DNAT_TARGET, DNS_OUT = "203.0.113.10", "203.0.113.11", "203.0.113.53"
GUEST_GW4, GUEST4 = "203.0.113.129", "203.0.113.130"
CLIENT6, GW6, WEB6 = "2001:db8:1::2", "2001:db8:1::1", "2001:db8:2::10"
GUEST_GW6, GUEST6 = "2001:db8:3::1", "2001:db8:3::2"
VNET_HOST = "10.192.0.5"  # inside the default VirtualAddrNetwork; redirected, never routed
TRANS_PORT, DNS_PORT = 9040, 9053
TOR_ANSWER, LAN_ANSWER, OUT_ANSWER = "203.0.113.254", "198.51.100.254", "203.0.113.253"
TOR_USER = "debian-tor"

BACKEND_NAMES = ("nft", "iptables-nft", "iptables-legacy")
_BACKEND_TOOLS = {"nft": "nft", "iptables-nft": "iptables-nft-restore",
                  "iptables-legacy": "iptables-legacy-restore"}


def _backend_param(name: str) -> Any:
    marks = []
    marks.append(pytest.mark.skipif(bool(netns.missing_tools([_BACKEND_TOOLS[name]])),
                                    reason=f"{_BACKEND_TOOLS[name]} not installed"))
    return pytest.param(name, id=name, marks=marks)


BACKENDS = [_backend_param(n) for n in BACKEND_NAMES]


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nft, raw sockets)"
    missing = netns.missing_tools(("ip", "nft", "tcpdump"))
    if missing:
        return "missing tools: " + ", ".join(missing)
    return None


# --- netspectre -----------------------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def data(self) -> Any:
        # --json prints one document (start also prints bootstrap events first: take the last)
        text = self.stdout.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            docs, dec, pos = [], json.JSONDecoder(), 0
            while pos < len(text):
                obj, pos = dec.raw_decode(text, pos)
                docs.append(obj)
                while pos < len(text) and text[pos].isspace():
                    pos += 1
            return docs[-1]

    def __str__(self) -> str:
        return f"{' '.join(self.argv)} → {self.rc}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def netspectre_argv(config: Path | None, *args: str) -> list[str]:
    cfg = ["--config", str(config)] if config else []
    return [sys.executable, "-m", "netspectre", *cfg, "--json", *args]


def netspectre_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_netspectre(ns: Netns, config: Path | None, *args: str, timeout: float = 60.0) -> Run:
    argv = netspectre_argv(config, *args)
    done = subprocess.run(ns.argv(argv), capture_output=True, text=True, timeout=timeout,
                          env=netspectre_env())
    return Run(argv, done.returncode, done.stdout, done.stderr)


def write_config(path: Path, backend: str, *, lan: list[str] | None = None,
                 allow_lan: bool = True, ipv6: str = "block", incoming: str = "block",
                 trans_port: int = TRANS_PORT) -> Path:
    lan = [LAN] if lan is None else lan
    path.write_text(
        "[tor]\n"
        'mode = "system"\n'
        f'user = "{TOR_USER}"\n'
        f"trans_port = {trans_port}\n"
        f"dns_port = {DNS_PORT}\n"
        "[firewall]\n"
        f'backend = "{backend}"\n'
        f"lan = {json.dumps(lan)}\n"
        f"allow_lan = {'true' if allow_lan else 'false'}\n"
        f'ipv6 = "{ipv6}"\n'
        f'incoming = "{incoming}"\n'
    )
    return path


# --- the topology ---------------------------------------------------------------------------


@dataclass
class Topology:
    client: Netns
    internet: Netns
    guest: Netns
    workdir: Path
    agents: dict[str, Agent] = field(default_factory=dict)
    markers: int = 0

    # agents: root in client ("client"), nobody in client, tor's user in client (runs the fake
    # Tor), root in internet (servers), root in guest
    @property
    def root(self) -> Agent:
        return self.agents["client"]

    @property
    def nobody(self) -> Agent:
        return self.agents["nobody"]

    @property
    def tor(self) -> Agent:
        return self.agents["tor"]

    @property
    def servers(self) -> Agent:
        return self.agents["internet"]

    @property
    def guest_agent(self) -> Agent:
        return self.agents["guest"]

    def probe(self, probes: Mapping[K, tuple[Agent, str, dict[str, Any]]]) -> dict[K, Any]:
        """{name: (agent, op, args)} → {name: result}; every agent runs its share concurrently."""
        by_agent: dict[int, tuple[Agent, list[tuple[K, dict[str, Any]]]]] = {}
        for name, (agent, op, args) in probes.items():
            by_agent.setdefault(id(agent), (agent, []))[1].append((name, {"op": op, **args}))
        groups = list(by_agent.values())
        replies = call_all([(agent, [r for _, r in reqs]) for agent, reqs in groups])
        return {name: result for (_, reqs), results in zip(groups, replies, strict=True)
                for (name, _), result in zip(reqs, results, strict=True)}

    def config(self, backend: str, name: str = "netspectre.toml", **kwargs: Any) -> Path:
        return write_config(self.workdir / name, backend, **kwargs)

    def netspectre(self, config: Path | None, *args: str, timeout: float = 60.0) -> Run:
        return run_netspectre(self.client, config, *args, timeout=timeout)

    def start(self, config: Path) -> Run:
        run = self.netspectre(config, "start")
        assert run.rc == 0, str(run)
        return run

    def stop(self, config: Path | None = None, *extra: str) -> Run:
        run = self.netspectre(config, "stop", *extra)
        assert run.rc == 0, str(run)
        return run

    @property
    def state_dir(self) -> Path:
        return Path(f"/run/netspectre/netns-{self.client.name}")

    # --- capture on the client's uplink ---

    def capture(self, name: str = "uplink") -> Capture:
        self.markers += 1
        path = self.workdir / f"{name}-{self.markers}.pcap"
        return Capture(self.client, "up0", path).start()

    def sync(self, cap: Capture) -> list[Packet]:
        """All packets so far: the internet side sends a marker and we wait to see it."""
        self.markers += 1
        tag = f"SYNC-{self.markers}".encode()
        return cap.sync(
            lambda: self.servers.call("sendto", dst=CLIENT4, port=9, data=tag.decode()),
            lambda p: p.src_mac == GW_MAC and tag in p.payload,
        )

    def finish(self, cap: Capture) -> list[Packet]:
        try:
            return self.sync(cap)
        finally:
            cap.stop()

    # --- state of the client namespace ---

    def ruleset(self) -> str:
        return self.client.run(["nft", "list", "ruleset"]).stdout

    def ours_present(self) -> list[str]:
        """Which backends have netspectre rules in the client namespace right now."""
        found = []
        tables = self.client.run(["nft", "list", "tables"]).stdout
        if "inet netspectre" in tables:
            found.append("nft")
        for variant in ("nft", "legacy"):
            for fam in ("iptables", "ip6tables"):
                tool = f"{fam}-{variant}-save"
                if netns.missing_tools([tool]):
                    continue
                out = self.client.run([tool], check=False).stdout
                if "NETSPECTRE" in out or "netspectre" in out:
                    found.append(f"{fam}-{variant}")
        return found

    def ipv6_sysctls(self) -> dict[str, str]:
        out = self.client.run(
            ["sh", "-c", "grep -H . /proc/sys/net/ipv6/conf/*/disable_ipv6"]).stdout
        values = {}
        for line in out.splitlines():
            path, value = line.rsplit(":", 1)
            values[path.removeprefix("/proc/sys/")] = value
        return values

    def reset(self) -> None:
        """Back to a known state between tests: netspectre stopped, IPv6 addressing present."""
        if (self.state_dir / "state.json").exists() or self.ours_present():
            run = self.netspectre(None, "stop", "--force")
            assert run.rc == 0, str(run)
            assert self.ours_present() == [], "netspectre rules left after stop"
        if not _ipv6_intact(self):
            _ipv6_addresses(self)
        # Forget earlier tests' flows: a new probe whose random source port matches a flow
        # redirected in an earlier test would follow that flow's NAT binding.
        self.client.run(["conntrack", "-F"], check=False)


def _ipv6_addresses(t: Topology) -> None:
    """(Re)configure IPv6: `disable_ipv6=1` flushes addresses and routes, `=0` does not restore."""
    for ns, conf in ((t.client, [("up0", CLIENT6), ("gw0", GUEST_GW6)]),
                     (t.internet, [("down0", GW6), ("lo", WEB6)]), (t.guest, [("eth0", GUEST6)])):
        ns.run(["sh", "-c", "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 0 >$f; done"])
        batch = [f"addr replace {addr}/{128 if iface == 'lo' else 64} dev {iface} nodad"
                 for iface, addr in conf]
        ns.run(["ip", "-6", "-batch", "-"], input="\n".join(batch) + "\n")
    t.client.ip("-6", "route", "replace", "default", "via", GW6)
    t.guest.ip("-6", "route", "replace", "default", "via", GUEST_GW6)
    t.internet.ip("-6", "route", "replace", "2001:db8:3::/64", "via", CLIENT6)


# Most desktops run a firewall that tracks connections, so flows opened before `start` already
# have a conntrack entry (without one conntrack stays off in a fresh namespace, and a flow from
# before `start` would look new to every rule: 4f would then prove nothing).
HOST_FIREWALL = """\
table inet hostfw {
\tchain input {
\t\ttype filter hook input priority 10; policy accept;
\t\tct state established,related accept
\t}
}
"""


def host_firewall(ns: Netns) -> None:
    ns.run(["nft", "-f", "-"], input=HOST_FIREWALL)


def _ipv6_intact(t: Topology) -> bool:
    out = t.client.run(["ip", "-6", "route", "show", "default"]).stdout
    return GW6 in out and t.client.sysctl("net.ipv6.conf.all.disable_ipv6") == "0"


def build_topology(workdir: Path) -> Iterator[Topology]:
    with netns.namespaces("nsx-cli", "nsx-net", "nsx-gst") as (client, internet, guest):
        t = Topology(client, internet, guest, workdir)
        try:
            for ns in (client, internet, guest):
                ns.set_sysctl("net.ipv6.conf.all.accept_dad", "0")
                ns.set_sysctl("net.ipv6.conf.default.accept_dad", "0")
                ns.set_sysctl("net.ipv6.conf.default.accept_ra", "0")
            netns.veth(client, "up0", internet, "down0", a_mac=CLIENT_MAC, b_mac=GW_MAC)
            netns.veth(client, "gw0", guest, "eth0")
            client.ip("addr", "add", f"{CLIENT4}/24", "dev", "up0")
            client.ip("addr", "add", f"{GUEST_GW4}/25", "dev", "gw0")
            client.ip("route", "add", "default", "via", GW4)
            for addr in (GW4, LAN_DNS, LAN_HOST):
                internet.ip("addr", "add", f"{addr}/24", "dev", "down0")
            for addr in (WEB, DNAT_TARGET, DNS_OUT):
                internet.ip("addr", "add", f"{addr}/32", "dev", "lo")
            internet.ip("route", "add", "203.0.113.128/25", "via", CLIENT4)
            guest.ip("addr", "add", f"{GUEST4}/25", "dev", "eth0")
            guest.ip("route", "add", "default", "via", GUEST_GW4)
            host_firewall(client)
            client.set_sysctl("net.ipv4.ip_forward", "1")
            client.set_sysctl("net.ipv6.conf.all.forwarding", "1")
            _ipv6_addresses(t)

            t.agents["internet"] = Agent(internet)
            for addr in (WEB, DNAT_TARGET, WEB6, LAN_HOST):
                for port in (80, 443):
                    t.servers.call("serve_tcp", addr=addr, port=port)
                for port in (443, 3478):
                    t.servers.call("serve_udp", addr=addr, port=port)
            t.servers.call("serve_udp", addr=LAN_DNS, port=53, role="lan-dns", answer=LAN_ANSWER)
            t.servers.call("serve_dns_tcp", addr=LAN_DNS, port=53, role="lan-dns",
                           answer=LAN_ANSWER)
            t.servers.call("serve_udp", addr=DNS_OUT, port=53, role="out-dns", answer=OUT_ANSWER)
            t.agents["tor"] = Agent(client, user=TOR_USER)
            t.tor.call("fake_tor", trans_port=TRANS_PORT, dns_port=DNS_PORT, answer=TOR_ANSWER)
            t.agents["client"] = Agent(client)
            t.root.call("serve_udp", addr="0.0.0.0", port=9, role="sync", discard=True)
            t.agents["nobody"] = Agent(client, user="nobody")
            t.agents["guest"] = Agent(guest)
            yield t
        finally:
            try:
                run_netspectre(client, None, "stop", "--force")
            finally:
                for agent in t.agents.values():
                    agent.close()




# --- judging captures -----------------------------------------------------------------------

FAST = 0.5  # seconds: a reject fails a connect/send at once; 1 s is already the SYN retransmit


def outgoing(packets: list[Packet], *, since: float | None = None,
             until: float | None = None) -> list[Packet]:
    """IP packets the client put on its uplink (its own and forwarded ones), in a time window."""
    return [p for p in packets
            if p.src_mac == CLIENT_MAC and p.is_ip
            and (since is None or p.ts >= since) and (until is None or p.ts <= until)]


def show(packets: list[Packet], limit: int = 20) -> str:
    lines = [str(p) for p in packets[:limit]]
    if len(packets) > limit:
        lines.append(f"… and {len(packets) - limit} more")
    return "\n".join(lines)


def assert_no_leak(packets: list[Packet], *, allowed: Any = None, since: float | None = None,
                   until: float | None = None) -> None:
    leaked = [p for p in outgoing(packets, since=since, until=until)
              if allowed is None or not allowed(p)]
    assert not leaked, f"{len(leaked)} packet(s) left on the uplink:\n{show(leaked)}"


def refused_fast(result: dict[str, Any]) -> bool:
    return bool(result.get("error")) and result["error"] != "timeout" and result["elapsed"] < FAST


# "Rules partly removed": the DNS redirect and the DNS refusal go, so a DNS query to the LAN
# router falls through to the LAN exemption: NetSpectre's classic leak. verify must name exactly
# that probe, and the capture on the uplink must agree that the query left.
_GONE = "dns_redirected|blocked_dns"
_NFT_CUT = ("for c in nat_output output; do for h in $(nft -a list chain inet netspectre $c | "
            f"grep -E '{_GONE}' | sed 's/.*handle //'); do "
            "nft delete rule inet netspectre $c handle $h; done; done")


def _ipt_cut(tool: str) -> str:
    return " ; ".join(
        f"{tool} -t {table} -S {chain} | grep -E '{_GONE}' | sed 's/^-A/-D/' | "
        f"while read -r rule; do eval {tool} -t {table} $rule; done"
        for table, chain in (("nat", "NETSPECTRE-NAT"), ("filter", "NETSPECTRE-OUT")))


TAMPER_DNS = {
    "nft": ["sh", "-c", _NFT_CUT],
    "iptables-nft": ["sh", "-c", _ipt_cut("iptables-nft")],
    "iptables-legacy": ["sh", "-c", _ipt_cut("iptables-legacy")],
}
