#!/usr/bin/env python3
"""`netspectre run`'s numbers (issue #10), side by side with the SocksPort used directly.

Usage (root): .venv/bin/python bench/run.py [--mib 200] [--runs 3] [--true-runs 21]

In a network namespace of its own, with a SOCKS5 stand-in (tests/support/socksstub.py) as
"Tor", so the numbers are the relay's own cost, not Tor's: the same program (bench/runclient.py,
as uid 65534) downloads, opens connections and holds 100 at once, once inside `netspectre run`
and once talking SOCKS5 to the stand-in itself. Also the relay's peak RSS, and `run -- true`
from start to exit next to a bare `python3 -c pass`. Prints a table; medians are the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from netspectre import proc as proc_mod

REPO = Path(__file__).resolve().parents[1]
PY = "/usr/bin/python3"
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
TARGET = "198.51.100.7"  # nothing has it: only the relay and the stand-in see the name
TARGETS = {"bulk: run / SocksPort": "≥ 0.9", "set-up overhead (ms, median)": "≤ 5",
           "relay RSS peak (MiB)": "≤ 30", "run -- true (ms, median)": "≤ 150",
           "100 concurrent: ok": "100"}


class Bench:
    def __init__(self, mib: int) -> None:
        self.ns = f"nsbench-run-{secrets.token_hex(3)}"
        self.root = Path("/tmp") / self.ns
        self.root.mkdir(mode=0o755)
        shutil.copytree(REPO / "src" / "netspectre", self.root / "netspectre")
        shutil.copy(REPO / "tests" / "support" / "socksstub.py", self.root)
        shutil.copy(REPO / "bench" / "runclient.py", self.root)
        subprocess.run(["chmod", "-R", "a+rX", str(self.root)], check=True)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.stub = subprocess.Popen(self._ns([PY, str(self.root / "socksstub.py"), "0", "-",
                                               "--bulk", str(mib)]), stdout=subprocess.PIPE)
        assert self.stub.stdout is not None
        self.socks = int(self.stub.stdout.readline().split()[1])
        self.config = self.root / "netspectre.toml"
        self.config.write_text(f"[tor]\nsocks_port = {self.socks}\n")
        self.config.chmod(0o644)

    def _ns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run_argv(self, *program: str) -> list[str]:
        return self._ns([*NOBODY, "env", f"PYTHONPATH={self.root}", PY, "-m", "netspectre",
                         "--config", str(self.config), "run", "--", *program])

    def client(self, mode: str, *args: str, inside: bool, peak: list[float] | None = None
               ) -> dict[str, float]:
        prog = [PY, str(self.root / "runclient.py"), mode if inside else f"socks-{mode}",
                TARGET, *args]
        argv = self.run_argv(*prog) if inside else self._ns([*NOBODY, *prog])
        if not inside:
            argv.append(str(self.socks))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        if peak is not None:  # the relay is the Popen'd process (ip netns exec, setpriv exec)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.01):
                    peak.append(proc_mod.rss_kib(proc.pid) / 1024)
            t = threading.Thread(target=sample)
            t.start()
        out, _ = proc.communicate(timeout=600)
        if peak is not None:
            done.set()
            t.join()
        if proc.returncode != 0:
            raise SystemExit(f"{argv} exited {proc.returncode}")
        result: dict[str, float] = json.loads(out)
        return result

    def time_true(self, runs: int) -> tuple[float, float]:
        def once(argv: list[str]) -> float:
            t0 = time.perf_counter()
            subprocess.run(argv, check=True)
            return (time.perf_counter() - t0) * 1000
        floor = [once(self._ns([*NOBODY, PY, "-c", "pass"])) for _ in range(runs)]
        runs_ms = [once(self.run_argv("true")) for _ in range(runs)]
        return statistics.median(runs_ms), statistics.median(floor)

    def close(self) -> None:
        self.stub.kill()
        self.stub.wait()
        subprocess.run(["ip", "netns", "delete", self.ns], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--true-runs", type=int, default=21)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py: run as root (namespaces)", file=sys.stderr)
        return 4
    b = Bench(args.mib)
    try:
        ratios, inside_mibs, direct_mibs, peak = [], [], [], [0.0]
        for _ in range(args.runs):  # alternating, so drift hits both alike
            d = b.client("bulk", "9", "0", inside=False)["mib_per_s"]
            i = b.client("bulk", "9", "0", inside=True, peak=peak)["mib_per_s"]
            direct_mibs.append(d)
            inside_mibs.append(i)
            ratios.append(i / d)
        s_in = b.client("setup", "80", "200", inside=True)
        s_out = b.client("setup", "80", "200", inside=False)
        conc = b.client("concurrent", "80", "100", inside=True, peak=peak)
        true_ms, floor_ms = b.time_true(args.true_runs)
    finally:
        b.close()
    rows = [
        ("bulk through run (MiB/s, median)", f"{statistics.median(inside_mibs):.0f}"),
        ("bulk through the SocksPort (MiB/s, median)", f"{statistics.median(direct_mibs):.0f}"),
        ("bulk: run / SocksPort", f"{statistics.median(ratios):.2f}"),
        ("set-up through run (ms, median)", f"{s_in['median_ms']:.2f}"),
        ("set-up through the SocksPort (ms, median)", f"{s_out['median_ms']:.2f}"),
        ("set-up overhead (ms, median)", f"{s_in['median_ms'] - s_out['median_ms']:.2f}"),
        ("100 concurrent: ok", f"{conc['ok']:.0f} in {conc['seconds']:.2f} s"),
        ("relay RSS peak (MiB)", f"{max(peak):.1f}"),
        ("run -- true (ms, median)", f"{true_ms:.0f}"),
        ("python3 -c pass (ms, median)", f"{floor_ms:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>16}  target")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>16}  {TARGETS.get(name, '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
