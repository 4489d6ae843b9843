"""The end-to-end bench around a running lab: agents in the lab's namespaces, netspectre run in
the client namespace with the lab's own client config (the backend and IPv6 mode rewritten when
asked), a capture on the client's uplink, and the judge of what may cross that uplink.

Reuses the integration suite's namespaces, agent, capture and pcap reader (tests.support).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netspectre.lab import LabInfo, client_config
from netspectre.lab.network import CT_BRIDGE, GUEST_LINK, UPLINK
from tests.support.netns import ICMP, ICMPV6, SYN, TCP, Agent, Capture, Netns, Packet
from tests.support.topology import Run, netspectre_argv, netspectre_env, run_netspectre, show

# Run with -m from the checkout (it imports tests.support.agent), not by path.
LAB_AGENT = "tests.support.lab_agent"
REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"

LAN_TCP_PORT = 80  # the gateway listens on nothing: a SYN there is answered with a RST
SYNC_PORT = 9  # markers from the internet side to the client (a discarding UDP listener)
DOWN = "Tor is down — traffic blocked"
FAST = 0.5  # seconds: a refused connection fails at once (1 s is already a SYN retransmit)

# Never on the lab's wire: the host's real uplink range and private ranges (the virtual network
# 10.192.0.0/10 lives only inside the client, between Tor's automap and its TransPort).
FORBIDDEN = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "192.0.2.0/24"))


class LabAgent(Agent):
    """agent.py with the lab's extra operations (tests/support/lab_agent.py)."""

    def __init__(self, ns: Netns, user: str | None = None) -> None:
        argv = [sys.executable, "-m", LAB_AGENT] + (["--user", user] if user else [])
        self.ns, self.user = ns, user
        self.proc = ns.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=REPO)
        self.buf = b""
        self.call("ping")


@functools.cache
def python_for(user: str) -> str:
    """An interpreter the user may run (the venv's may live under root's 0700 home)."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        if candidate and subprocess.run(["runuser", "-u", user, "--", candidate, "-c", ""],
                                        capture_output=True, check=False).returncode == 0:
            return candidate
    raise AssertionError(f"no python the user {user} may run")


@dataclass
class Bench:
    info: LabInfo
    client: Netns
    guest: Netns
    inet: Netns
    workdir: Path  # pcaps (kept by pytest for failed runs)
    confdir: Path  # configs, readable by nobody
    agents: dict[str, LabAgent]
    uplink_mac: str
    markers: int = 0

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def create(cls, info: LabInfo, workdir: Path) -> Bench:
        spec = info.spec
        confdir = Path(tempfile.mkdtemp(prefix="netspectre-e2e-"))
        confdir.chmod(0o755)
        client, guest, inet = Netns(spec.client_ns), Netns(spec.guest_ns), Netns(spec.inet_ns)
        link = json.loads(client.run(["ip", "-j", "link", "show", UPLINK]).stdout)
        bench = cls(info, client, guest, inet, workdir, confdir, {}, link[0]["address"])
        try:
            bench.ensure_stopped()
            shutil.rmtree(bench.lib_dir, ignore_errors=True)  # a cold first start
            bench.restore_ipv6()
            bench.host_firewall(True)
            bench.agents["root"] = LabAgent(client)
            bench.agents["nobody"] = LabAgent(client, user="nobody")
            bench.agents["guest"] = LabAgent(guest)
            bench.agents["inet"] = LabAgent(inet)
            bench.root.call("serve_udp", addr="0.0.0.0", port=SYNC_PORT, role="sync",
                            discard=True)
        except BaseException:
            bench.close()
            raise
        return bench

    def close(self) -> None:
        """Netspectre stopped, our agents ended, the lab's client as `lab up` left it."""
        try:
            self.ensure_stopped()
        finally:
            for a in self.agents.values():
                a.close()
            self.agents.clear()
            self.host_firewall(False)
            self.restore_ipv6()
            shutil.rmtree(self.confdir, ignore_errors=True)
            # Tor's warm DataDirectory for this namespace: stale once the lab is gone.
            shutil.rmtree(self.lib_dir, ignore_errors=True)

    # --- agents ---------------------------------------------------------------------------

    @property
    def root(self) -> LabAgent:
        return self.agents["root"]

    @property
    def nobody(self) -> LabAgent:
        return self.agents["nobody"]

    @property
    def guest_agent(self) -> LabAgent:
        return self.agents["guest"]

    @property
    def internet(self) -> LabAgent:
        return self.agents["inet"]

    def probe(self, probes: dict[str, tuple[Agent, str, dict[str, Any]]]) -> dict[str, Any]:
        """{name: (agent, op, args)} → {name: result}; all agents run their share at once."""
        groups: dict[int, tuple[Agent, list[tuple[str, dict[str, Any]]]]] = {}
        for name, (agent, op, args) in probes.items():
            groups.setdefault(id(agent), (agent, []))[1].append((name, {"op": op, **args}))
        for agent, reqs in groups.values():
            agent.send("batch", probes=[r for _, r in reqs])
        out: dict[str, Any] = {}
        for agent, reqs in groups.values():
            for (name, _), result in zip(reqs, agent.receive("batch", 120), strict=True):
                out[name] = result
        return out

    # --- netspectre -----------------------------------------------------------------------

    def config(self, backend: str | None = None, *, ipv6: str | None = None) -> Path:
        """The lab's client config (what `lab up` wrote), with [firewall] backend/ipv6 set."""
        text = self.info.client_config_path.read_text()
        assert text == client_config(self.info), "client.toml differs from client_config()"
        extra = "".join(f'{key} = "{value}"\n' for key, value in
                        (("backend", backend), ("ipv6", ipv6)) if value)
        assert text.count("\n[firewall]\n") == 1, text
        text = text.replace("\n[firewall]\n", f"\n[firewall]\n{extra}")
        name = "-".join(["client", backend or "auto", ipv6 or "default"]) + ".toml"
        path = self.confdir / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def netspectre(self, config: Path | None, *args: str, user: str = "root",
                   timeout: float = 90.0) -> Run:
        if user == "root":
            return run_netspectre(self.client, config, *args, timeout=timeout)
        argv = netspectre_argv(config, *args)
        argv[0] = python_for(user)
        env = netspectre_env()
        env["PYTHONPATH"] = str(SRC)
        done = subprocess.run(self.client.argv(["runuser", "-u", user, "--", *argv]),
                              capture_output=True, text=True, timeout=timeout, env=env,
                              cwd="/")
        return Run(argv, done.returncode, done.stdout, done.stderr)

    def start(self, config: Path) -> Run:
        run = self.netspectre(config, "start")
        assert run.rc == 0, str(run)
        return run

    def stop(self, config: Path | None = None) -> Run:
        run = self.netspectre(config, "stop")
        assert run.rc == 0, str(run)
        return run

    def status(self, config: Path) -> dict[str, Any]:
        run = self.netspectre(config, "status")
        assert run.rc == 0, str(run)
        data: dict[str, Any] = run.data
        return data

    @property
    def state_dir(self) -> Path:
        return Path(f"/run/netspectre/netns-{self.client.name}")

    @property
    def lib_dir(self) -> Path:
        return Path(f"/var/lib/netspectre/netns-{self.client.name}")

    def tor_logs(self, lines: int = 15) -> str:
        """For failure messages: what the supervisor said (and tor's dying words), and the tail
        of the managed tor's notice log."""
        sources: tuple[tuple[Path, Callable[[str], bool]], ...] = (
            (self.state_dir / "tor" / "supervisor.log",
             lambda line: "supervisor[" in line or " died: " in line or "[err]" in line),
            (Path(f"/run/netspectre-tor/netns-{self.client.name}/notice.log"),
             lambda line: True),
        )
        out = []
        for path, keep in sources:
            try:
                text = path.read_text(errors="replace")
            except OSError as exc:
                text = f"({exc.strerror})"
            tail = [line for line in text.splitlines() if keep(line)][-lines:]
            out.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(out)

    def ours_present(self) -> bool:
        if "netspectre" in self.client.run(["nft", "list", "tables"]).stdout:
            return True
        for tool in ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save",
                     "ip6tables-legacy-save"):
            if shutil.which(tool) is None:
                continue
            out = self.client.run([tool], check=False).stdout
            if "NETSPECTRE" in out or "netspectre" in out:
                return True
        return False

    def ensure_stopped(self) -> None:
        """`stop --force` when anything of netspectre's is left in the client namespace."""
        if (self.state_dir / "state.json").exists() or self.ours_present():
            run = self.netspectre(None, "stop", "--force")
            assert run.rc == 0, str(run)
            assert not self.ours_present(), "netspectre rules left after stop --force"
        self.restore_ipv6()

    @contextlib.contextmanager
    def active(self, config: Path) -> Iterator[Run]:
        """netspectre started (bootstrapped) for the block; always stopped after it."""
        try:
            yield self.start(config)
        finally:
            self.ensure_stopped()

    # --- the client namespace as the lab built it -----------------------------------------

    def restore_ipv6(self) -> None:
        """`ipv6 = "disable"` (the lab config's default) flushes the client's IPv6 addresses
        and routes; re-enabling IPv6 does not bring them back. Put back what `lab up` set."""
        lay = self.info.layout
        if self.client.sysctl("net.ipv6.conf.all.disable_ipv6") != "0":
            return  # netspectre is active with ipv6 = "disable"
        out = self.client.run(["ip", "-6", "addr", "show"]).stdout
        route = self.client.run(["ip", "-6", "route", "show", "default"]).stdout
        ours = [lay.client6, lay.guest_gw6] + ([lay.ct_gw6] if lay.containers else [])
        if all(str(a) in out for a in ours) and str(lay.gateway6) in route:
            return
        batch = [
            f"addr replace {lay.client6}/{lay.uplink6.prefixlen} dev {UPLINK} nodad",
            f"addr replace {lay.guest_gw6}/{lay.guestnet6.prefixlen} dev {GUEST_LINK} nodad",
            f"route replace default via {lay.gateway6}",
        ]
        if lay.containers:
            batch.append(f"addr replace {lay.ct_gw6}/{lay.ctnet6.prefixlen} dev {CT_BRIDGE} nodad")
        self.client.run(["ip", "-6", "-batch", "-"], input="\n".join(batch) + "\n")

    def host_firewall(self, on: bool) -> None:
        """A desktop-like stateful firewall in the client, so flows opened before `start` have
        conntrack entries (without one, conntrack is off in a fresh namespace)."""
        self.client.run(["nft", "delete", "table", "inet", "e2e_hostfw"], check=False)
        if on:
            self.client.run(["nft", "-f", "-"], input=(
                "table inet e2e_hostfw {\n"
                "  chain input { type filter hook input priority 10; policy accept;\n"
                "    ct state established,related accept\n  }\n}\n"))

    # --- capture --------------------------------------------------------------------------

    def capture(self, name: str) -> Capture:
        self.markers += 1
        return Capture(self.client, UPLINK, self.workdir / f"{name}-{self.markers}.pcap").start()

    def sync(self, cap: Capture) -> list[Packet]:
        """Everything captured so far: the internet side sends a marker, we wait to see it."""
        self.markers += 1
        tag = f"SYNC-{self.markers}"
        client4 = str(self.info.layout.client4)
        return cap.sync(
            lambda: self.internet.call("sendto", dst=client4, port=SYNC_PORT, data=tag),
            lambda p: p.src_mac != self.uplink_mac and tag.encode() in p.payload,
        )

    def finish(self, cap: Capture) -> list[Packet]:
        try:
            return self.sync(cap)
        finally:
            cap.stop()

    # --- judging --------------------------------------------------------------------------

    def outgoing(self, packets: list[Packet], *, since: float | None = None,
                 until: float | None = None) -> list[Packet]:
        """IP packets the client put on its uplink (its own and the guest's), in a window."""
        return [p for p in packets if p.src_mac == self.uplink_mac and p.is_ip
                and (since is None or p.ts >= since) and (until is None or p.ts <= until)]

    def to_relay(self, p: Packet) -> bool:
        """TCP from the client's address to a relay's ORPort: Tor's own traffic."""
        relays = {(str(r.v4), r.or_port) for r in self.info.layout.relays}
        return (p.proto == TCP and p.src == str(self.info.layout.client4)
                and (p.dst, p.dport) in relays)

    def lan_allowed(self, p: Packet) -> bool:
        """What the battery sends to the LAN and the policy lets through directly
        (allow_lan = true): ICMP echo requests to the gateway (v4 and v6), a bare SYN to the
        gateway's port 80, and IPv6 neighbour discovery (ICMPv6 133-136). Nothing else: DNS to
        the LAN resolver and invalid TCP flags to the LAN must not leave."""
        lay = self.info.layout
        icmp_type = p.payload[0] if p.payload else None
        if p.dst == str(lay.gateway4):
            return (p.proto == ICMP and icmp_type == 8) or (
                p.proto == TCP and p.dport == LAN_TCP_PORT and p.tcp_flags == SYN)
        if p.version == 6 and p.proto == ICMPV6:
            return icmp_type in (133, 134, 135, 136) or (
                p.dst == str(lay.gateway6) and icmp_type == 128)
        return False

    def allowed(self, p: Packet) -> bool:
        return self.to_relay(p) or self.lan_allowed(p)

    def leaks(self, packets: list[Packet], *, since: float | None = None,
              until: float | None = None) -> list[Packet]:
        return [p for p in self.outgoing(packets, since=since, until=until)
                if not self.allowed(p)]

    def assert_no_leak(self, packets: list[Packet], *, since: float | None = None,
                       until: float | None = None, what: str = "") -> None:
        leaked = self.leaks(packets, since=since, until=until)
        assert not leaked, (f"{len(leaked)} packet(s) left the uplink {what}not to a relay's "
                            f"ORPort nor allowed to the LAN:\n{show(leaked)}")
        assert_lab_only(packets)


def assert_lab_only(packets: list[Packet]) -> None:
    """No packet on the wire to or from the virtual network, a private range or the host's
    real uplink range: the lab's wire carries only TEST-NET addresses."""
    bad = [p for p in packets if p.is_ip and any(
        ipaddress.ip_address(a) in n for a in (p.src, p.dst) if a
        for n in FORBIDDEN if n.version == p.version)]
    assert not bad, f"forbidden addresses on the lab's wire:\n{show(bad)}"


def refused_fast(result: dict[str, Any]) -> bool:
    return bool(result.get("error")) and result["error"] != "timeout" \
        and result["elapsed"] < FAST


def poll(predicate: Callable[[], Any], *, timeout: float, what: str,
         pause: float = 0.05, explain: Callable[[], str] = lambda: "") -> Any:
    """Poll until truthy (the value is returned); AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{explain()}")
        time.sleep(pause)


class Poller:
    """Runs a function in a loop in a thread (e.g. `netspectre status`), keeping each result
    with its wall-clock start; bounded in time."""

    def __init__(self, fn: Callable[[], Any], *, max_seconds: float) -> None:
        self.fn = fn
        self.results: list[tuple[float, Any]] = []
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            began = time.time()
            try:
                value = self.fn()
            except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
                value = exc
            self.results.append((began, value))

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
