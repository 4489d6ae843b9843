#!/usr/bin/env python3
"""`netspectre watch` while traffic is idle: CPU % of one core and RSS over N seconds, in a
throwaway network namespace (a stand-in listens on TransPort/DNSPort; tor.mode = "system", so
the control port is unreachable and watch retries it every 5 s).

Usage (root): python3 bench/watch.py [--seconds 30] [--backend nft] [--python /usr/bin/python3]
Budget (#12): ≤ 2 % of a core, ≤ 30 MiB RSS. CPU counts watch itself and the counter reads it
starts (nft / iptables-save children, reaped: cutime + cstime).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from perf import FAKE_TOR  # noqa: E402


def cpu_and_rss(pid: int) -> tuple[float, int]:
    """(user+system seconds of pid and its reaped children, VmRSS in KiB)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:"))
    return ticks / os.sysconf("SC_CLK_TCK"), rss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--backend", default="nft")
    ap.add_argument("--python", default="/usr/bin/python3")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/watch.py needs root (it works in its own network namespace)")
    ns = f"ns-bench-watch-{os.getpid()}"
    in_ns = ["ip", "netns", "exec", ns]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    base = [args.python, "-m", "netspectre"]
    tmp = Path(tempfile.mkdtemp(prefix="netspectre-bench-watch-"))
    cfg = tmp / "netspectre.toml"
    cfg.write_text(f'[tor]\nmode = "system"\n[firewall]\nbackend = "{args.backend}"\n')
    subprocess.run(["ip", "netns", "add", ns], check=True)
    fake = watch = None
    try:
        subprocess.run([*in_ns, "ip", "link", "set", "lo", "up"], check=True)
        fake = subprocess.Popen([*in_ns, sys.executable, "-c", FAKE_TOR], stdout=subprocess.PIPE,
                                text=True)
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        subprocess.run([*in_ns, *base, "--config", str(cfg), "start"], env=env, check=True,
                       capture_output=True)
        watch = subprocess.Popen([*in_ns, *base, "--config", str(cfg), "watch"], env=env,
                                 stdout=subprocess.DEVNULL)
        time.sleep(3.0)  # start-up (imports, first counter read) is not the idle cost
        cpu0, _ = cpu_and_rss(watch.pid)
        t0 = time.monotonic()
        peak = 0
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            peak = max(peak, cpu_and_rss(watch.pid)[1])
        cpu1, rss = cpu_and_rss(watch.pid)
        wall = time.monotonic() - t0
        print(json.dumps({"backend": args.backend, "seconds": round(wall, 1),
                          "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / wall, 2),
                          "rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(peak / 1024, 1)}))
    finally:
        if watch is not None:
            watch.terminate()
            watch.wait()
        if fake is not None:
            fake.kill()
            fake.wait()
        subprocess.run([*in_ns, *base, "stop", "--force"], env=env, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
