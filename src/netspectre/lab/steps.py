"""The steps of `lab demo`, in the order it runs them: each takes the demo's one DemoState,
does its part (the lab, netspectre in the client namespace, probes, the capture) and records
its verdict (a Finding, judged by lab/checks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netspectre import paths, system
from netspectre.config import parse as parse_config
from netspectre.errors import Error
from netspectre.findings import Finding
from netspectre.lab import capture, checks, clientns, lifecycle, network, processes
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import ECHO_NAME, LabSpec
from netspectre.tor.protocol import BootstrapEvent

ONION_TIMEOUT = 60.0


@dataclass(frozen=True)
class Hooks:
    on_check: Callable[[Finding], None]
    on_event: Callable[[BootstrapEvent], None]  # Tor's bootstrap progress
    on_step: Callable[[str, float], None]  # the lab's own progress while it comes up


@dataclass(frozen=True)
class Baseline:
    """The client as it was before `start`: what `stop` must give back."""
    ipv6_sysctl: str
    ipv6_addrs: tuple[str, ...]
    mac: str  # the uplink's, so the capture tells the client's frames from the gateway's


@dataclass
class DemoState:
    spec: LabSpec
    backend: str | None
    keep: bool
    hooks: Hooks
    checks: list[Finding] = field(default_factory=list)
    info: LabInfo | None = None
    building: bool = False  # inside lifecycle.up: it tears down itself, we remove its kept logs
    baseline: Baseline | None = None
    cap: capture.Capture | None = None
    started: bool = False  # `netspectre start` was run: stop must run too
    stopped: bool = False
    stop_began: float | None = None  # wall clock
    used_backend: str = ""

    @property
    def config(self) -> Path:
        return self.spec.dir / "demo.toml"

    @property
    def cpaths(self) -> paths.Paths:
        return paths.for_namespace(self.spec.client_ns)

    @property
    def lab(self) -> LabInfo:
        assert self.info is not None, "a step after lab_up ran without a lab"
        return self.info

    def record(self, key: str, ok: bool | None, seconds: float, evidence: str,
               data: dict[str, Any] | None = None) -> Finding:
        found = checks.check(key, ok, seconds, evidence, data)
        self.checks.append(found)
        self.hooks.on_check(found)
        return found

    def skip_rest(self, why: str, *, but: tuple[str, ...] = ()) -> None:
        done = {c.check for c in self.checks}
        for key, _, _ in checks.PLAN:
            if key not in done and key not in but:
                self.record(key, None, 0.0, why)

    def netspectre(self, *args: str, timeout: float = 60) -> clientns.Outcome:
        return clientns.run(self.spec.client_ns, self.config, *args, timeout=timeout)

    def sysctl_ipv6(self) -> str:
        return clientns.sysctl(self.spec.client_ns, "net.ipv6.conf.all.disable_ipv6")


def global_ipv6(ns: str, iface: str) -> list[str]:
    out = system.run(["ip", "-j", "-n", ns, "-6", "addr", "show", "dev", iface, "scope",
                      "global"], check=False).stdout
    try:
        found = json.loads(out or "[]")
    except ValueError:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in found
            for a in link.get("addr_info", []) if "local" in a]


def lab_up(st: DemoState) -> Finding:
    t0 = time.monotonic()
    st.building = True
    try:
        st.info = lifecycle.up(st.spec, on_step=st.hooks.on_step, wait_for_onion=False)
    except Error as exc:
        st.building = False  # e.g. a lab of this name is up already: not ours to remove
        return st.record("lab_up", False, time.monotonic() - t0,
                         exc.message + (f" ({exc.hint})" if exc.hint else ""))
    st.building = False
    lay = st.info.layout
    consensus_at = st.info.timings.get("consensus", time.monotonic() - t0)
    return st.record("lab_up", True, time.monotonic() - t0,
                     f"{len(lay.relays)} relays in the consensus after {consensus_at:.1f} s "
                     f"({len(lay.authorities)} authorities, {st.spec.middles} middle, "
                     f"{len(lay.exits)} exit{'s' if len(lay.exits) != 1 else ''})",
                     {"timings": st.info.timings})


def start(st: DemoState) -> Finding:
    st.config.write_text(clientns.config_text(st.lab, backend=st.backend))
    if st.cpaths.state.exists():  # a crashed earlier demo of a namespace of this name
        st.netspectre("stop", "--force")
    shutil.rmtree(st.cpaths.tor_data, ignore_errors=True)  # other lab, other keys: cold
    ns = st.spec.client_ns
    st.baseline = Baseline(st.sysctl_ipv6(), tuple(global_ipv6(ns, network.UPLINK)),
                           capture.mac(ns, network.UPLINK))
    st.cap = capture.Capture(ns, network.UPLINK, st.spec.dir / "demo-uplink.pcap")
    st.cap.start()
    st.started = True
    out = clientns.start(ns, st.config, st.hooks.on_event)
    if out.rc != 0 or not out.data.get("active"):
        return st.record("start", False, out.seconds, out.said or f"exit {out.rc}")
    st.used_backend = str(out.data.get("backend"))
    return st.record("start", True, out.seconds,
                     f"firewall ({st.used_backend}) in force, then Tor bootstrapped 100 % in "
                     f"{out.bootstrapped_s or out.seconds:.1f} s from a cold DataDirectory",
                     {"backend": st.used_backend, "bootstrap_s": out.bootstrapped_s})


def myip(st: DemoState) -> None:
    out = st.netspectre("myip", timeout=60)
    if not out.data or "error" in out.data:
        st.record("myip", False, out.seconds, out.said or f"exit {out.rc}")
        return
    ok, text = checks.judge_myip(st.lab, out.data)
    st.record("myip", ok and out.rc == 0, out.seconds, text, out.data)


def dns(st: DemoState) -> None:
    lay = st.lab.layout
    t0 = time.monotonic()
    echo, whoami = clientns.probes(st.spec.client_ns, [
        {"kind": "dns", "server": str(lay.resolver4), "name": ECHO_NAME,
         "timeout": 15},
        {"kind": "dns", "server": str(lay.resolver4), "name": checks.WHOAMI, "timeout": 15},
    ])
    ok, text = checks.judge_dns(lay, echo, whoami)
    st.record("dns", ok, time.monotonic() - t0, text, {"echo": echo, "whoami": whoami})


def onion(st: DemoState) -> None:
    t0 = time.monotonic()
    try:
        waited = lifecycle.wait_onion(st.lab, timeout=ONION_TIMEOUT)
    except Error as exc:
        st.record("onion", False, time.monotonic() - t0, exc.message)
        return
    (r,) = clientns.probes(st.spec.client_ns, [
        {"kind": "http", "url": f"http://{st.lab.onion}/api/ip", "timeout": 45}])
    vnet = str(parse_config(st.config.read_text()).tor.virtual_network)
    ok, text = checks.judge_onion(st.lab, r, vnet)
    st.record("onion", ok, time.monotonic() - t0, text,
              {"result": r, "waited_for_descriptor_s": round(waited, 3)})


def leaks(st: DemoState) -> None:
    battery = checks.leak_battery(st.lab)
    ns = {"client": st.spec.client_ns, "guest": st.spec.guest_ns}
    ipv6_active = st.sysctl_ipv6()
    batches: dict[str, list[dict[str, Any]]] = {"client": [], "guest": []}
    for leak in battery:
        batches[leak.ns] += leak.probes
    with ThreadPoolExecutor(max_workers=2) as pool:  # both namespaces at once
        futures = {where: pool.submit(clientns.probes, ns[where], batch)
                   for where, batch in batches.items() if batch}
        results = {where: f.result() for where, f in futures.items()}
    pos = {"client": 0, "guest": 0}
    for leak in battery:
        n = len(leak.probes)
        got = results[leak.ns][pos[leak.ns]:pos[leak.ns] + n]
        pos[leak.ns] += n
        ok, text = leak.judge(got)
        if leak.key == "leak_ipv6":
            text = f"disable_ipv6={ipv6_active}; {text}"
        seconds = max(float(r.get("elapsed", 0)) for r in got)
        st.record(leak.key, ok, seconds, text, {"results": got})


def verify(st: DemoState) -> None:
    out = st.netspectre("verify", timeout=90)
    ok, text = checks.judge_verify(out.data or {}, out.rc)
    st.record("verify", ok, out.seconds, text, out.data)


def stop_and_judge(st: DemoState, *, judge: bool = True) -> None:
    """Stop netspectre (the capture spans the whole active phase, stop included), judge the
    capture, then check that the client is back to normal."""
    lay = st.lab.layout
    t0 = time.monotonic()
    st.stop_began = time.time()
    out = st.netspectre("stop", timeout=90)
    st.stopped = out.rc == 0
    if judge:
        judge_capture(st)
    elif st.cap is not None:
        st.cap.stop()
        st.cap = None
    if out.rc != 0:
        st.record("stop", False, out.seconds, out.said or f"exit {out.rc}")
        return
    before = st.baseline or Baseline("", (), "")
    direct4, direct6 = clientns.probes(st.spec.client_ns, [
        {"kind": "http", "url": f"http://{lay.web4}/api/ip", "timeout": 5},
        {"kind": "http", "url": f"http://[{lay.web6}]/api/ip", "timeout": 5}])
    ipv6_after = st.sysctl_ipv6()
    seen4 = (direct4.get("json") or {}).get("IP")
    seen6 = (direct6.get("json") or {}).get("IP")
    lost = sorted(set(before.ipv6_addrs) - set(global_ipv6(st.spec.client_ns, network.UPLINK)))
    ok = (seen4 == str(lay.client4) and seen6 == str(lay.client6)
          and ipv6_after == before.ipv6_sysctl and not lost)
    text = (f"stopped in {out.seconds:.1f} s; direct requests reach the web server again "
            f"(it sees {seen4 or direct4.get('error')} and "
            f"{seen6 or direct6.get('error')}); disable_ipv6 back to {ipv6_after} (was "
            f"{before.ipv6_sysctl} before start)")
    if lost:
        # The kernel deletes an interface's IPv6 addresses when IPv6 is disabled on it;
        # restoring the sysctl alone does not bring static ones back.
        text += f"; static IPv6 address {', '.join(lost)} did NOT come back"
    st.record("stop", ok, time.monotonic() - t0, text,
              {"direct": [direct4, direct6], "ipv6_after": ipv6_after,
               "ipv6_lost": lost, "report": out.data})


def judge_capture(st: DemoState) -> None:
    t0 = time.monotonic()
    cap, st.cap = st.cap, None
    packets = cap.stop() if cap is not None else []
    relays = {(str(r.v4), r.or_port): f"{r.nick} {r.v4}:{r.or_port}"
              for r in st.lab.layout.relays}
    v = capture.judge(packets, relays, own_mac=st.baseline.mac if st.baseline else "",
                      stopped_at=st.stop_began)
    data = {"packets": v.packets, "received": v.received, "non_ip": v.non_ip,
            "bytes": v.bytes, "by_relay": v.by_relay, "after_stop": v.after_stop,
            "offending": v.offending, "examples": list(v.examples),
            "pcap": str(st.spec.dir / "demo-uplink.pcap")}
    text = v.summary
    ok = v.ok
    if cap is None or cap.ended_early is not None:
        ok = False
        text = ("the capture did not run to the end (tcpdump exit "
                f"{cap.ended_early if cap else 'unknown'}): " + text)
    if v.ok:
        text += " (" + ", ".join(f"{k.split()[0]} {n}" for k, n in v.by_relay.items()) + ")"
    if v.after_stop:
        text += (f"; not counted: {v.after_stop} IPv6 link-local packets once `stop` had "
                 "lifted the rules and re-enabled IPv6")
    st.record("capture", ok, time.monotonic() - t0, text, data)


def lab_down(st: DemoState) -> None:
    t0 = time.monotonic()
    if st.keep:
        st.record("lab_down", True, 0.0, f"kept (--keep): {', '.join(st.spec.namespaces)}"
                  " stay up; `netspectre lab down` removes them")
        return
    try:
        teardown(st)
    except Error as exc:
        st.record("lab_down", False, time.monotonic() - t0, exc.message)
        return
    left = sorted(network.existing_namespaces() & set(st.spec.namespaces))
    procs = processes.find(st.spec)
    ok = not left and not procs and not st.spec.dir.exists()
    st.record("lab_down", ok, time.monotonic() - t0,
              "namespaces, processes and files removed" if ok else
              f"left behind: {left + [str(p.pid) for p in procs]}")


def teardown(st: DemoState) -> None:
    lifecycle.down(st.spec)
    if not os.environ.get("NETSPECTRE_LIB_DIR"):
        # Tor's data for a namespace that no longer exists, keyed to a network that is gone.
        shutil.rmtree(st.cpaths.lib, ignore_errors=True)
