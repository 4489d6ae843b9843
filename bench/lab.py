#!/usr/bin/env python3
"""The lab's numbers (issues #3 and #4), measured over N runs in a lab of its own (prefix
`nsbench-`), which it always takes down again.

Usage (root): .venv/bin/python bench/lab.py [--runs 3] [--mib 20] [--no-demo]

Per run: lab up → consensus, → netspectre's managed tor bootstrapped (cold), → onion published;
whole-lab RSS; `start` → Tor 100 % with a cold DataDirectory and with a warm one (stop, start);
the supervisor's RSS; kill -9 of the managed tor → a request through the transparent proxy
succeeds again; a bulk download through TransPort, through the SocksPort, by `netspectre run`
and by the guest through the `[gateway]` over the same relays (entry, middle and exit pinned
over the control port); `lab down`; then `lab demo`
(in the same prefix, after down). Prints a table; the medians are the numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from netspectre import paths, proc, system
from netspectre.lab import LabSpec, clientns, lifecycle, network, processes
from netspectre.lab.info import LabInfo
from netspectre.tor.control import Controller
from netspectre.tor.layout import Files
from netspectre.tor.protocol import BootstrapEvent

SPEC = LabSpec(prefix="nsbench-")
TARGETS = {
    "lab up → client bootstrapped (s)": "≤ 20",
    "lab demo wall time (s)": "≤ 60",
    "TransPort / SocksPort throughput": "≥ 0.95",
    "run / SocksPort throughput": "≥ 0.9",
    "gateway guest / TransPort throughput": "≥ 0.95",
    "supervisor RSS (MiB)": "≤ 30",
}


def rss_mib(pid: int | None) -> float:
    kib = proc.rss_kib(pid) if pid else 0
    return kib / 1024 if kib else float("nan")


def quiet(_: BootstrapEvent) -> None:
    pass


class Run:
    def __init__(self, mib: int, pairs: int) -> None:
        self.mib, self.pairs = mib, pairs
        self.m: dict[str, float] = {}
        self.info: LabInfo | None = None
        self.config = SPEC.dir / "bench.toml"
        self.cpaths = paths.for_namespace(SPEC.client_ns)
        self.files = Files.of(self.cpaths)

    def ns(self, *args: str, timeout: float = 90) -> clientns.Outcome:
        out = clientns.run(SPEC.client_ns, self.config, *args, timeout=timeout)
        if out.rc != 0:
            raise SystemExit(f"netspectre {' '.join(args)} failed: {out.said}")
        return out

    def start(self, what: str) -> float:
        out = clientns.start(SPEC.client_ns, self.config, quiet)
        if out.rc != 0 or out.bootstrapped_s is None:
            raise SystemExit(f"netspectre start ({what}) failed: {out.said}")
        return out.bootstrapped_s

    def probe(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return clientns.probes(SPEC.client_ns, batch, timeout=180)

    def up_and_cold_start(self) -> None:
        t0 = time.monotonic()
        self.info = info = lifecycle.up(SPEC, wait_for_onion=False)
        self.m["lab up → consensus (s)"] = info.timings["consensus"]
        onion_at: list[float] = []

        def watch() -> None:
            lifecycle.wait_onion(info, timeout=120)
            onion_at.append(time.monotonic() - t0)

        watcher = threading.Thread(target=watch)
        watcher.start()
        # The guest link as a [gateway] interface (issue 11): the guest's bulk download below.
        self.config.write_text(clientns.config_text(info)
                               + f'\n[gateway]\ninterfaces = ["{network.GUEST_LINK}"]\n')
        shutil.rmtree(self.cpaths.tor_data, ignore_errors=True)
        started = time.monotonic() - t0
        cold = self.start("cold")
        self.m["start → 100 %, cold DataDirectory (s)"] = cold
        self.m["lab up → client bootstrapped (s)"] = started + cold
        watcher.join()
        if onion_at:
            self.m["lab up → onion published (s)"] = onion_at[0]
        self.m["supervisor RSS (MiB)"] = rss_mib(processes.read_pid(self.files.supervisor_pid))
        self.m["managed tor RSS (MiB)"] = rss_mib(processes.read_pid(self.files.tor_pid))
        procs = processes.find(SPEC)
        self.m["lab RSS without the client (MiB)"] = sum(
            p.rss_kib for p in procs if p.ns != SPEC.client_ns) / 1024
        self.m["whole lab RSS incl. client (MiB)"] = sum(p.rss_kib for p in procs) / 1024

    def bulk(self) -> None:
        """The same relays for both: Tor isolates streams by listener, so the two downloads
        use two circuits; pinning entry, middle and exit makes them the same path."""
        assert self.info is not None
        fp = self.info.fingerprints
        lay = self.info.layout
        guard = lay.authorities[0].nick
        with Controller.connect(self.files.control) as ctl:
            ctl.authenticate(self.files.cookie)
            ctl.command(f"SETCONF EntryNodes=${fp[guard]} MiddleNodes=${fp['middle1']} "
                        f"ExitNodes=${fp['exit1']} StrictNodes=1")
            ctl.signal("NEWNYM")
        n = self.mib << 20
        url = f"http://{lay.web4}/bytes/{n}"
        trans = {"kind": "http", "url": url, "timeout": 120}
        socks = trans | {"socks": "127.0.0.1:9060"}
        self.probe([trans | {"url": f"http://{lay.web4}/api/ip"},
                    socks | {"url": f"http://{lay.web4}/api/ip"}])  # build both circuits
        (warm,) = clientns.probes(SPEC.guest_ns, [trans | {"url": f"http://{lay.web4}/api/ip"}])
        if (warm.get("json") or {}).get("IsTor") is not True:
            raise SystemExit(f"the guest is not torified through the gateway: {warm}")
        rates: dict[str, list[float]] = {"trans": [], "socks": [], "run": [], "guest": []}
        for _ in range(self.pairs):
            for name, p in (("socks", socks), ("trans", trans), ("guest", trans)):
                # The guest: the same request from the guest namespace, through the gateway
                (r,) = (clientns.probes(SPEC.guest_ns, [p], timeout=180) if name == "guest"
                        else self.probe([p]))
                if r.get("bytes") != n:
                    raise SystemExit(f"bulk download via {name} failed: {r}")
                rates[name].append(n / (r["total_s"] - r["first_byte_s"]) / 1e6)
            rates["run"].append(self.run_bulk(str(lay.web4), n))
        with Controller.connect(self.files.control) as ctl:
            ctl.authenticate(self.files.cookie)
            status = ctl.getinfo("circuit-status")["circuit-status"]
        paths = {line.split()[2] for line in status.splitlines()
                 if " BUILT " in line and "PURPOSE=GENERAL" in line
                 and line.split()[2].count(",") == 2}  # not one-hop directory circuits
        want = f"${fp[guard]}~{guard},${fp['middle1']}~middle1,${fp['exit1']}~exit1"
        if paths - {want}:
            print(f"  note: 3-hop circuits on other paths too: {sorted(paths)}")
        t, s = statistics.median(rates["trans"]), statistics.median(rates["socks"])
        self.m[f"bulk {self.mib} MiB via TransPort (MB/s)"] = t
        self.m[f"bulk {self.mib} MiB via SocksPort (MB/s)"] = s
        self.m["TransPort / SocksPort throughput"] = t / s
        via_run = statistics.median(rates["run"])
        self.m[f"bulk {self.mib} MiB via netspectre run (MB/s)"] = via_run
        self.m["run / SocksPort throughput"] = via_run / s
        guest = statistics.median(rates["guest"])
        self.m[f"bulk {self.mib} MiB by the gateway's guest (MB/s)"] = guest
        self.m["gateway guest / TransPort throughput"] = guest / t

    def run_bulk(self, host: str, n: int) -> float:
        """The same download by a program inside `netspectre run` (its relay → the SocksPort;
        the pinned path applies to the run's own circuit too)."""
        client = Path(__file__).resolve().parent / "runclient.py"
        argv = ["ip", "netns", "exec", SPEC.client_ns, sys.executable, "-m", "netspectre",
                "--config", str(self.config), "run", "--", sys.executable, str(client),
                "http-bulk", host, "80", str(n)]
        done = system.run(argv, timeout=300)
        result = json.loads(done.stdout)
        if result.get("bytes") != n:
            raise SystemExit(f"bulk download via netspectre run failed: {result}")
        return float(result["mb_per_s"])

    def warm_start(self) -> None:
        self.ns("stop")
        self.m["start → 100 %, warm DataDirectory (s)"] = self.start("warm")

    def verify(self) -> None:
        """`netspectre verify`: rules, 10 leak probes, the exit check through Tor."""
        t0 = time.monotonic()
        self.ns("verify")  # exits the benchmark unless every check passed
        self.m["verify: rules + probes + exit check (s)"] = time.monotonic() - t0

    def kill_tor(self) -> None:
        assert self.info is not None
        pid = processes.read_pid(self.files.tor_pid)
        if pid is None:
            raise SystemExit("no managed tor to kill")
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        url = f"http://{self.info.layout.web4}/api/ip"
        (r,) = self.probe([{"kind": "http", "url": url, "timeout": 5, "retry_for": 90}])
        if (r.get("json") or {}).get("IsTor") is not True:
            raise SystemExit(f"traffic did not come back through Tor after kill -9: {r}")
        self.m["kill -9 tor → traffic flows again (s)"] = r["done_at"] - killed

    def down(self) -> None:
        self.ns("stop")
        t0 = time.monotonic()
        lifecycle.down(SPEC)
        self.m["lab down (s)"] = time.monotonic() - t0
        shutil.rmtree(self.cpaths.lib, ignore_errors=True)


def demo_wall() -> float:
    cfg = Path(f"/tmp/netspectre-bench-{os.getpid()}.toml")
    cfg.write_text(f'[lab]\nprefix = "{SPEC.prefix}"\n')
    try:
        t0 = time.monotonic()
        r = system.run([sys.executable, "-m", "netspectre", "--config", str(cfg), "--json",
                        "lab", "demo"], check=False, timeout=300)
        wall = time.monotonic() - t0
    finally:
        cfg.unlink()
    report = json.loads(r.stdout or "{}")
    if not report.get("ok"):
        failed = [c for c in report.get("checks", []) if c["verdict"] != "PASS"]
        print(f"  lab demo did not pass: {failed or r.stderr[-500:]}")
    return wall


def cleanup() -> None:
    """Whatever a run left: netspectre in the client (its rules die with the namespace, but
    its supervisor and tor would not), then the lab."""
    config = SPEC.dir / "bench.toml"
    if config.exists():
        clientns.run(SPEC.client_ns, config, "stop", "--force", timeout=90)
    lifecycle.down(SPEC)
    shutil.rmtree(paths.for_namespace(SPEC.client_ns).lib, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=20, help="bulk download size")
    ap.add_argument("--pairs", type=int, default=5,
                    help="bulk downloads per port and run, alternating SocksPort and TransPort")
    ap.add_argument("--no-demo", action="store_true", help="skip timing `lab demo`")
    ap.add_argument("--json", type=Path, help="also write every sample here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/lab.py needs root (network namespaces)")
    lifecycle.down(SPEC)  # leftovers of an interrupted earlier run
    samples: dict[str, list[float]] = {}
    try:
        for i in range(args.runs):
            run = Run(args.mib, args.pairs)
            try:
                run.up_and_cold_start()
                run.bulk()
                run.warm_start()
                run.verify()
                run.kill_tor()
                run.down()
            finally:
                cleanup()
            if not args.no_demo:
                run.m["lab demo wall time (s)"] = demo_wall()
            for key, value in run.m.items():
                samples.setdefault(key, []).append(value)
            print(f"run {i + 1}/{args.runs}: " + ", ".join(
                f"{k.split(' (')[0]} {v:.2f}" for k, v in run.m.items()), flush=True)
    finally:
        cleanup()
    cpus = os.cpu_count()
    print(f"\nnetspectre lab benchmarks: {args.runs} runs, {cpus} CPUs, tor "
          f"{system.run(['tor', '--version']).stdout.split()[2].rstrip('.')}")
    width = max(len(k) for k in samples)
    print(f"{'metric':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}  target")
    for key, values in samples.items():
        print(f"{key:<{width}}  {statistics.median(values):8.2f}  {min(values):8.2f}  "
              f"{max(values):8.2f}  {TARGETS.get(key, '')}")
    if args.json:
        args.json.write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
