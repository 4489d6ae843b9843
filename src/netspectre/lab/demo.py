"""`netspectre lab demo`: build a lab, run netspectre in its client namespace and prove, step by
step and with a capture of the client's uplink, that everything goes through Tor or nowhere;
then stop netspectre and take the lab down. Always cleans up (unless keep).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from netspectre import paths, system
from netspectre.errors import CleanupFailed, Error, PermissionError_
from netspectre.lab import capture, checks, clientns, lifecycle, network, processes
from netspectre.lab.checks import Check
from netspectre.lab.info import LabInfo
from netspectre.lab.spec import LabSpec, validate
from netspectre.tor.protocol import BootstrapEvent

ONION_TIMEOUT = 60.0
BACKENDS = ("nft", "iptables-nft", "iptables-legacy")


@dataclass(frozen=True)
class Hooks:
    on_check: Callable[[Check], None]
    on_event: Callable[[BootstrapEvent], None]  # Tor's bootstrap progress
    on_step: Callable[[str, float], None]  # the lab's own progress while it comes up


def intro(spec: LabSpec) -> dict[str, Any]:
    """What the first screen explains: the namespaces, the ranges, the checks."""
    validate(spec)
    return {
        "namespaces": {"internet": spec.inet_ns, "client": spec.client_ns,
                       "guest": spec.guest_ns},
        "ranges": [str(n) for n in spec.networks()],
        "relays": {"authorities": 3, "middles": spec.middles, "exits": spec.exits},
        "plan": [{"key": k, "title": t, "proves": p} for k, t, p in checks.PLAN],
    }


def global_ipv6(ns: str, iface: str) -> list[str]:
    out = system.run(["ip", "-j", "-n", ns, "-6", "addr", "show", "dev", iface, "scope",
                      "global"], check=False).stdout
    try:
        found = json.loads(out or "[]")
    except ValueError:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in found
            for a in link.get("addr_info", []) if "local" in a]


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Cleanup runs to the end: a second Ctrl-C must not leave half a lab behind."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Demo:
    def __init__(self, spec: LabSpec, *, backend: str | None, keep: bool, hooks: Hooks) -> None:
        self.spec, self.backend, self.keep, self.hooks = spec, backend, keep, hooks
        self.checks: list[Check] = []
        self.info: LabInfo | None = None
        self.config = spec.dir / "demo.toml"
        self.cpaths = paths.for_namespace(spec.client_ns)
        self.cap: capture.Capture | None = None
        self.packets: list[Any] = []
        self.started = False  # `netspectre start` was run: stop must run too
        self.stopped = False
        self.building = False
        self.ipv6_before = ""
        self.ipv6_active = ""
        self.client_mac = ""
        self.ipv6_addrs: list[str] = []
        self.stop_began: float | None = None
        self.used_backend = ""

    # -- bookkeeping ---------------------------------------------------------------------------

    def record(self, key: str, ok: bool | None, seconds: float, evidence: str,
               data: dict[str, Any] | None = None) -> Check:
        check = Check(key, checks.TITLES[key], ok, seconds, evidence, data or {})
        self.checks.append(check)
        self.hooks.on_check(check)
        return check

    def skip_rest(self, why: str, *, but: tuple[str, ...] = ()) -> None:
        done = {c.key for c in self.checks}
        for key, _, _ in checks.PLAN:
            if key not in done and key not in but:
                self.record(key, None, 0.0, why)

    def _netspectre(self, *args: str, timeout: float = 60) -> clientns.Outcome:
        return clientns.run(self.spec.client_ns, self.config, *args, timeout=timeout)

    def _sysctl_ipv6(self) -> str:
        return clientns.sysctl(self.spec.client_ns, "net.ipv6.conf.all.disable_ipv6")

    def probes(self, ns: str, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return clientns.probes(ns, batch)

    # -- the steps -----------------------------------------------------------------------------

    def lab_up(self) -> bool:
        t0 = time.monotonic()
        self.building = True  # interrupted in `up`: it tears down, we remove its kept logs
        try:
            self.info = lifecycle.up(self.spec, on_step=self.hooks.on_step, wait_for_onion=False)
        except Error as exc:
            self.building = False  # e.g. a lab of this name is up already: not ours to remove
            self.record("lab_up", False, time.monotonic() - t0,
                        exc.message + (f" ({exc.hint})" if exc.hint else ""))
            return False
        self.building = False
        lay = self.info.layout
        consensus_at = self.info.timings.get("consensus", time.monotonic() - t0)
        self.record("lab_up", True, time.monotonic() - t0,
                    f"{len(lay.relays)} relays in the consensus after {consensus_at:.1f} s "
                    f"({len(lay.authorities)} authorities, {self.spec.middles} middle, "
                    f"{len(lay.exits)} exit)", {"timings": self.info.timings})
        return True

    def start(self) -> bool:
        assert self.info is not None
        self.config.write_text(clientns.config_text(self.info, backend=self.backend))
        if self.cpaths.state.exists():  # a crashed earlier demo of a namespace of this name
            self._netspectre("stop", "--force")
        shutil.rmtree(self.cpaths.tor_data, ignore_errors=True)  # other lab, other keys: cold
        self.ipv6_before = self._sysctl_ipv6()
        self.ipv6_addrs = global_ipv6(self.spec.client_ns, network.UPLINK)
        self.client_mac = capture.mac(self.spec.client_ns, network.UPLINK)
        self.cap = capture.Capture(self.spec.client_ns, network.UPLINK,
                                   self.spec.dir / "demo-uplink.pcap")
        self.cap.start()
        self.started = True
        out = clientns.start(self.spec.client_ns, self.config, self.hooks.on_event)
        if out.rc != 0 or not out.data.get("active"):
            self.record("start", False, out.seconds, out.said or f"exit {out.rc}")
            return False
        self.used_backend = str(out.data.get("backend"))
        self.record("start", True, out.seconds,
                    f"firewall ({self.used_backend}) in force, then Tor bootstrapped 100 % in "
                    f"{out.bootstrapped_s or out.seconds:.1f} s from a cold DataDirectory",
                    {"backend": self.used_backend, "bootstrap_s": out.bootstrapped_s})
        return True

    def myip(self) -> None:
        assert self.info is not None
        out = self._netspectre("myip", timeout=60)
        if not out.data or "error" in out.data:
            self.record("myip", False, out.seconds, out.said or f"exit {out.rc}")
            return
        ok, text = checks.judge_myip(self.info, out.data)
        self.record("myip", ok and out.rc == 0, out.seconds, text, out.data)

    def dns(self) -> None:
        assert self.info is not None
        lay = self.info.layout
        t0 = time.monotonic()
        echo, whoami = self.probes(self.spec.client_ns, [
            {"kind": "dns", "server": str(lay.resolver4), "name": lifecycle.ECHO_NAME,
             "timeout": 15},
            {"kind": "dns", "server": str(lay.resolver4), "name": checks.WHOAMI, "timeout": 15},
        ])
        ok, text = checks.judge_dns(lay, echo, whoami)
        self.record("dns", ok, time.monotonic() - t0, text, {"echo": echo, "whoami": whoami})

    def onion(self) -> None:
        assert self.info is not None
        t0 = time.monotonic()
        try:
            waited = lifecycle.wait_onion(self.info, timeout=ONION_TIMEOUT)
        except Error as exc:
            self.record("onion", False, time.monotonic() - t0, exc.message)
            return
        (r,) = self.probes(self.spec.client_ns, [
            {"kind": "http", "url": f"http://{self.info.onion}/api/ip", "timeout": 45}])
        from netspectre import config

        vnet = str(config.parse(self.config.read_text()).tor.virtual_network)
        ok, text = checks.judge_onion(self.info, r, vnet)
        self.record("onion", ok, time.monotonic() - t0, text,
                    {"result": r, "waited_for_descriptor_s": round(waited, 3)})

    def leaks(self) -> None:
        assert self.info is not None
        battery = checks.leak_battery(self.info)
        ns = {"client": self.spec.client_ns, "guest": self.spec.guest_ns}
        self.ipv6_active = self._sysctl_ipv6()
        batches: dict[str, list[dict[str, Any]]] = {"client": [], "guest": []}
        for leak in battery:
            batches[leak.ns] += leak.probes
        with ThreadPoolExecutor(max_workers=2) as pool:  # both namespaces at once
            futures = {where: pool.submit(self.probes, ns[where], batch)
                       for where, batch in batches.items() if batch}
            results = {where: f.result() for where, f in futures.items()}
        pos = {"client": 0, "guest": 0}
        for leak in battery:
            n = len(leak.probes)
            got = results[leak.ns][pos[leak.ns]:pos[leak.ns] + n]
            pos[leak.ns] += n
            ok, text = leak.judge(got)
            if leak.key == "leak_ipv6":
                text = f"disable_ipv6={self.ipv6_active}; {text}"
            seconds = max(float(r.get("elapsed", 0)) for r in got)
            self.record(leak.key, ok, seconds, text, {"results": got})

    def verify(self) -> None:
        out = self._netspectre("verify", timeout=90)
        ok, text = checks.judge_verify(out.data or {}, out.rc)
        self.record("verify", ok, out.seconds, text, out.data)

    def stop_and_judge(self, *, judge_capture: bool = True) -> None:
        """Stop netspectre (the capture spans the whole active phase, stop included), judge
        the capture, then check that the client is back to normal."""
        assert self.info is not None
        t0 = time.monotonic()
        self.stop_began = time.time()
        out = self._netspectre("stop", timeout=90)
        self.stopped = out.rc == 0
        if judge_capture:
            self.judge_capture()
        elif self.cap is not None:
            self.cap.stop()
            self.cap = None
        if out.rc != 0:
            self.record("stop", False, out.seconds, out.said or f"exit {out.rc}")
            return
        lay = self.info.layout
        direct4, direct6 = self.probes(self.spec.client_ns, [
            {"kind": "http", "url": f"http://{lay.web4}/api/ip", "timeout": 5},
            {"kind": "http", "url": f"http://[{lay.web6}]/api/ip", "timeout": 5}])
        ipv6_after = self._sysctl_ipv6()
        seen4 = (direct4.get("json") or {}).get("IP")
        seen6 = (direct6.get("json") or {}).get("IP")
        lost = sorted(set(self.ipv6_addrs) - set(global_ipv6(self.spec.client_ns,
                                                             network.UPLINK)))
        ok = (seen4 == str(lay.client4) and seen6 == str(lay.client6)
              and ipv6_after == self.ipv6_before and not lost)
        text = (f"stopped in {out.seconds:.1f} s; direct requests reach the web server again "
                f"(it sees {seen4 or direct4.get('error')} and "
                f"{seen6 or direct6.get('error')}); disable_ipv6 back to {ipv6_after} (was "
                f"{self.ipv6_before} before start)")
        if lost:
            # The kernel deletes an interface's IPv6 addresses when IPv6 is disabled on it;
            # restoring the sysctl alone does not bring static ones back.
            text += f"; static IPv6 address {', '.join(lost)} did NOT come back"
        self.record("stop", ok, time.monotonic() - t0, text,
                    {"direct": [direct4, direct6], "ipv6_after": ipv6_after,
                     "ipv6_lost": lost, "report": out.data})

    def judge_capture(self) -> None:
        assert self.info is not None
        t0 = time.monotonic()
        cap, self.cap = self.cap, None
        self.packets = cap.stop() if cap is not None else []
        relays = {(str(r.v4), r.or_port): f"{r.nick} {r.v4}:{r.or_port}"
                  for r in self.info.layout.relays}
        v = capture.judge(self.packets, relays, own_mac=self.client_mac,
                          stopped_at=self.stop_began)
        data = {"packets": v.packets, "received": v.received, "non_ip": v.non_ip,
                "bytes": v.bytes, "by_relay": v.by_relay, "after_stop": v.after_stop,
                "offending": v.offending, "examples": list(v.examples),
                "pcap": str(self.spec.dir / "demo-uplink.pcap")}
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
        self.record("capture", ok, time.monotonic() - t0, text, data)

    def lab_down(self) -> None:
        t0 = time.monotonic()
        if self.keep:
            self.record("lab_down", True, 0.0, f"kept (--keep): {', '.join(self.spec.namespaces)}"
                        " stay up; `netspectre lab down` removes them")
            return
        try:
            self.teardown()
        except Error as exc:
            self.record("lab_down", False, time.monotonic() - t0, exc.message)
            return
        left = sorted(network.existing_namespaces() & set(self.spec.namespaces))
        procs = processes.find(self.spec)
        ok = not left and not procs and not self.spec.dir.exists()
        self.record("lab_down", ok, time.monotonic() - t0,
                    "namespaces, processes and files removed" if ok else
                    f"left behind: {left + [str(p.pid) for p in procs]}")

    def teardown(self) -> None:
        lifecycle.down(self.spec)
        if not os.environ.get("NETSPECTRE_LIB_DIR"):
            # Tor's data for a namespace that no longer exists, keyed to a network that is gone.
            shutil.rmtree(self.cpaths.lib, ignore_errors=True)

    # -- the whole -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        finished = False
        try:
            if self.lab_up():
                if self.start():
                    self.myip()
                    self.dns()
                    self.onion()
                    self.leaks()
                    self.verify()
                    self.stop_and_judge()
                else:
                    self.skip_rest("netspectre did not start", but=("stop", "lab_down"))
                    self.stop_and_judge(judge_capture=False)
                self.lab_down()
            else:
                self.skip_rest("the lab did not come up")
            finished = True
        finally:
            if not finished:
                with _no_interrupt():
                    self.cleanup()
        return self.report(time.monotonic() - t0)

    def cleanup(self) -> None:
        """After an exception or Ctrl-C: stop netspectre in the client, take the lab down."""
        if self.cap is not None:
            self.cap.stop()
            self.cap = None
        if self.keep or (self.info is None and not self.building):
            return
        failures: list[Error] = []
        if self.started and not self.stopped:
            out = self._netspectre("stop", "--force", timeout=90)
            if out.rc != 0:
                failures.append(Error(f"netspectre stop in {self.spec.client_ns}: {out.said}"))
        try:
            self.teardown()
        except CleanupFailed as exc:
            failures += exc.failures
        except Error as exc:
            failures.append(exc)
        if failures:
            error = CleanupFailed(failures)
            error.hint = "`netspectre lab down` (with the same --config) removes what is left"
            raise error

    def report(self, total: float) -> dict[str, Any]:
        failed = [c.key for c in self.checks if c.ok is False]
        skipped = [c.key for c in self.checks if c.ok is None]
        return {
            "ok": not failed and not skipped and bool(self.checks),
            "total_s": round(total, 3),
            "passed": sum(1 for c in self.checks if c.ok),
            "failed": failed,
            "skipped": skipped,
            "checks": [c.as_dict() for c in self.checks],
            "backend": self.used_backend or None,
            "kept": self.keep,
            "lab": intro(self.spec) | {"onion": self.info.onion if self.info else None},
        }


def require(spec: LabSpec) -> None:
    validate(spec)
    if os.geteuid() != 0:
        raise PermissionError_("the lab demo needs root (network namespaces)",
                               "run it with sudo: sudo netspectre lab demo")
    for tool in ("ip", "tor", "tor-gencert", "sysctl", "tcpdump"):
        system.require(tool)


def run(spec: LabSpec, *, hooks: Hooks, backend: str | None = None,
        keep: bool = False) -> dict[str, Any]:
    """The whole demo; returns the report ({"ok": ..., "checks": [...]})."""
    require(spec)
    if backend is not None and backend not in BACKENDS:
        raise Error(f"unknown backend {backend!r}", "one of " + ", ".join(BACKENDS))
    return Demo(spec, backend=backend, keep=keep, hooks=hooks).run()
