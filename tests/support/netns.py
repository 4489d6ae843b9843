"""Network namespaces, veth links, a packet capture and a tiny pcap reader for integration tests.

Everything here acts only inside namespaces it created (`ip netns exec`), never on the host's
own network stack. Reusable by any integration test (the core suite, the lab's).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The pcap reader moved to the package (`lab demo` judges its capture with it); re-exported here.
from netspectre.lab.pcap import (
    ACK,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    FIN,
    ICMP,
    ICMPV6,
    PSH,
    RST,
    SYN,
    TCP,
    UDP,
    URG,
    Packet,
    parse_frame,
    read_pcap,
)

__all__ = [
    # re-exported from netspectre.lab.pcap
    "ACK", "ETH_ARP", "ETH_IPV4", "ETH_IPV6", "FIN", "ICMP", "ICMPV6", "PSH", "RST", "SYN", "TCP",
    "UDP", "URG", "Packet", "parse_frame", "read_pcap",
    # this module's own
    "AGENT", "TOOLS", "Agent", "Capture", "Netns", "call_all", "create", "delete", "missing_tools",
    "namespaces", "unique_name", "veth", "wait_for",
]

AGENT = Path(__file__).resolve().parent / "agent.py"
TOOLS = ("ip", "nft", "tcpdump")


def missing_tools(names: Sequence[str] = TOOLS) -> list[str]:
    return [n for n in names if shutil.which(n, path="/usr/sbin:/sbin:/usr/bin:/bin") is None]


def wait_for(predicate: Callable[[], object], *, timeout: float = 10.0, what: str = "") -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Netns:
    """A named network namespace this process created (and will delete)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(argv), input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {' '.join(argv)} exited {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["ip", *args], check=check)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    def sysctl(self, key: str) -> str:
        return self.run(["cat", f"/proc/sys/{key.replace('.', '/')}"]).stdout.strip()

    def set_sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def create(prefix: str) -> Netns:
    ns = Netns(unique_name(prefix))
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
    ns.ip("link", "set", "lo", "up")
    return ns


def delete(ns: Netns) -> None:
    """Kill what still runs inside (all started by this test run) and delete the namespace."""
    for pid in ns.pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "delete", ns.name], check=False, capture_output=True)
    shutil.rmtree(f"/run/netspectre/netns-{ns.name}", ignore_errors=True)
    shutil.rmtree(f"/var/lib/netspectre/netns-{ns.name}", ignore_errors=True)


@contextmanager
def namespaces(*prefixes: str) -> Iterator[list[Netns]]:
    """Fresh, uniquely named namespaces, always deleted on exit (even on failure)."""
    made: list[Netns] = []
    try:
        for prefix in prefixes:
            made.append(create(prefix))
        yield made
    finally:
        for ns in reversed(made):
            delete(ns)


def veth(a: Netns, a_name: str, b: Netns, b_name: str, *, a_mac: str | None = None,
         b_mac: str | None = None) -> None:
    """A veth pair created directly inside the two namespaces (never in the host's)."""
    a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
    if a_mac:
        a.ip("link", "set", a_name, "address", a_mac)
    if b_mac:
        b.ip("link", "set", b_name, "address", b_mac)
    a.ip("link", "set", a_name, "up")
    b.ip("link", "set", b_name, "up")


# --- agents (agent.py in a namespace) -------------------------------------------------------


class Agent:
    """One agent.py process inside a namespace, optionally running as another user."""

    def __init__(self, ns: Netns, user: str | None = None) -> None:
        argv = [sys.executable, str(AGENT)] + (["--user", user] if user else [])
        self.ns, self.user = ns, user
        self.proc = ns.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.buf = b""
        self.call("ping")

    def send(self, op: str, **kwargs: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **kwargs}) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, op: str = "", timeout: float = 30.0) -> Any:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"agent in {self.ns.name} did not answer {op} in {timeout}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"agent in {self.ns.name} died: {err}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"agent {op} failed: {reply['error']}")
        return reply["result"]

    def call(self, op: str, _timeout: float = 30.0, **kwargs: Any) -> Any:
        self.send(op, **kwargs)
        return self.receive(op, _timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()



def call_all(requests: Sequence[tuple[Agent, list[dict[str, Any]]]]) -> list[list[Any]]:
    """Run a batch of probes on several agents at the same time; results in request order."""
    for agent, probes in requests:
        agent.send("batch", probes=probes)
    return [agent.receive("batch") for agent, _ in requests]


# --- capture --------------------------------------------------------------------------------


class Capture:
    """tcpdump on one interface of a namespace, written to a pcap file we parse ourselves."""

    def __init__(self, ns: Netns, iface: str, path: Path, *, snaplen: int = 200) -> None:
        self.ns, self.iface, self.path, self.snaplen = ns, iface, path, snaplen
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = b""

    def start(self, timeout: float = 10.0) -> Capture:
        self.proc = self.ns.popen(
            ["tcpdump", "--immediate-mode", "-U", "-n", "-i", self.iface, "-s", str(self.snaplen),
             "-w", str(self.path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while b"listening on" not in self.stderr:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"tcpdump did not start: {self.stderr.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                self.stderr += chunk
        return self

    def packets(self) -> list[Packet]:
        try:
            return read_pcap(self.path.read_bytes())
        except FileNotFoundError:
            return []

    def sync(self, send_marker: Callable[[], None], is_marker: Callable[[Packet], bool],
             timeout: float = 10.0) -> list[Packet]:
        """Everything captured up to now: send a marker packet and wait until it is on file."""
        def seen() -> list[Packet] | None:
            pkts = self.packets()
            return pkts if any(is_marker(p) for p in pkts) else None

        deadline = time.monotonic() + timeout
        while True:
            send_marker()
            try:
                got = wait_for(seen, timeout=min(1.0, max(0.05, deadline - time.monotonic())),
                               what="capture marker")
                return got  # type: ignore[return-value]
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
