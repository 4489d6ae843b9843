#!/usr/bin/env python3
"""Time-to-protect, stop and --help, measured in a throwaway network namespace.

Usage (root): python3 bench/perf.py [--runs N] [--python /usr/bin/python3] [--src DIR]
                                    [--tor-router FILE] [--raw-guard auto|on|off]
Tor is "already running": a stand-in listens on TransPort/DNSPort (tor.mode = "system"),
so the numbers are netspectre's own cost: Python start-up, rendering, one nft/iptables commit.

--tor-router FILE: tor-router's script, the reference (not part of this repository; get it with
  git clone https://github.com/edu4rdshl/tor-router && \
  git -C tor-router show 290d0b1:files/tor-router > /tmp/tor-router
  290d0b1 is the last commit whose script parses: later ones have a `;;` syntax error). Its
`start` (iptables-save, two flushes, a dozen `iptables` calls: the same class of work as ours,
flush and load rules) runs in the same namespace, alternating with netspectre's, with stand-ins
for `systemctl`/`service`/`tor` on PATH and /var/tmp (where it saves the old rules) on a tmpfs
private to the bench. The firewall it applies is real. Without FILE the comparison is skipped.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_TOR = """
import socket, sys, time
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 9040)); t.listen()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 9053))
print("ready", flush=True)
time.sleep(3600)
"""


def sh(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)  # type: ignore


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr}")
    return elapsed


def many_networks(n: int) -> list[str]:
    rng = random.Random(7)
    nets: set[str] = set()
    while len(nets) < n:
        # Config values only: never addressed. Spread over 100.64.0.0/10-free space.
        addr = rng.randrange(1 << 24, 223 << 24)
        nets.add(str(ipaddress.ip_network((addr & ~0xFF, 24))))
    return sorted(nets)


STUB = "#!/bin/sh\nexit 0\n"


def reference_env(stubs: Path, env: dict[str, str]) -> dict[str, str]:
    """PATH for tor-router: our stand-ins first (it asks systemd whether tor.service is active
    and for tor's account), then the system's, so its iptables calls are the real ones."""
    stubs.mkdir(exist_ok=True)
    for name in ("systemctl", "service", "tor"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    if subprocess.run(["id", "-u", "debian-tor"], capture_output=True).returncode != 0:
        (stubs / "id").write_text("#!/bin/sh\necho 0\n")  # no tor account on this machine
        (stubs / "id").chmod(0o755)
    return {**env, "PATH": f"{stubs}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}


def inner(runs: int, cfg: str, reference: str, base: list[str]) -> int:
    """Inside the namespace: time `start` and `stop` as a user would run them; with a reference
    script, its `start` alternates with ours (and goes first every other round)."""
    env = dict(os.environ)
    starts, stops, refs = [], [], []
    if reference:
        # This process has its own mount namespace (`ip netns exec`): the tmpfs stays here.
        sh("mount", "-t", "tmpfs", "bench-var-tmp", "/var/tmp")
        ref_env = reference_env(Path(cfg).parent / "stubs", env)
    for i in range(runs):
        if reference and i % 2 == 0:
            refs.append(reference_round(reference, ref_env))
        starts.append(timed([*base, "--config", cfg, "start"], env))
        stops.append(timed([*base, "--config", cfg, "stop"], env))
        if reference and i % 2 == 1:
            refs.append(reference_round(reference, ref_env))
    print(json.dumps([starts, stops, refs]))
    return 0


def reference_round(script: str, env: dict[str, str]) -> float:
    """tor-router start (timed), then its stop and an empty filter table (not timed): its stop
    restores only what iptables-save printed before, and leaves the filter rules in place."""
    elapsed = timed(["bash", script, "start"], env)
    timed(["bash", script, "stop"], env)
    for table in ("filter", "nat"):
        sh("iptables", "-t", table, "-F")
    return elapsed


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        return inner(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--backend", default="nft")
    ap.add_argument("--raw-guard", choices=["auto", "on", "off"],
                    help="[firewall] raw_guard (default: the config's default); 'off' times the "
                         "rest without the guard's probe, netdev table and watcher")
    ap.add_argument("--no-site", action="store_true",
                    help="python -S: leave out site-packages .pth hooks of this machine")
    ap.add_argument("--src", type=Path, default=ROOT / "src",
                    help="the netspectre sources to time (e.g. an export of an older commit)")
    ap.add_argument("--tor-router", type=Path, metavar="FILE",
                    help="tor-router's script, timed as the reference (see the docstring)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/perf.py needs root (it works in its own network namespace)")
    reference = ""
    if args.tor_router is None or not args.tor_router.is_file():
        print("tor-router: no script given (--tor-router FILE); comparison skipped. Get it:\n"
              "  git clone https://github.com/edu4rdshl/tor-router && "
              "git -C tor-router show 290d0b1:files/tor-router > /tmp/tor-router",
              file=sys.stderr)
    elif shutil.which("iptables") is None:
        print("tor-router: iptables not installed; comparison skipped", file=sys.stderr)
    else:
        reference = str(args.tor_router.resolve())
    ns = f"ns-bench-{os.getpid()}"
    # Byte-code caching on, as on a user's machine (this sandbox sets PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(args.src.resolve())
    flags = ["-S"] if args.no_site else []
    tmp = Path(tempfile.mkdtemp(prefix="netspectre-bench-"))
    # Timed from inside the namespace: `ip netns exec` itself (a mount namespace and a sysfs
    # remount per call) is not part of what a user's `start` costs.
    base = [args.python, *flags, "-m", "netspectre"]
    in_ns = ["ip", "netns", "exec", ns]
    results: dict[str, dict[str, float]] = {}
    ratios: dict[str, float] = {}
    sh("ip", "netns", "add", ns)
    fake = None
    try:
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        fake = subprocess.Popen([*in_ns, sys.executable, "-c", FAKE_TOR],
                                stdout=subprocess.PIPE, text=True)
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        cases = {"default": [], "10000 networks": many_networks(10_000)}
        for name, extra in cases.items():
            cfg = tmp / f"{name.replace(' ', '_')}.toml"
            lan = json.dumps(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", *extra])
            guard = f'raw_guard = "{args.raw_guard}"\n' if args.raw_guard else ""
            cfg.write_text(f'[tor]\nmode = "system"\n[firewall]\nbackend = "{args.backend}"\n'
                           f"lan = {lan}\n{guard}")
            out = sh(*in_ns, sys.executable, __file__, "--inner", str(args.runs), str(cfg),
                     reference, *base, env=env).stdout
            starts, stops, refs = json.loads(out)
            results[f"start ({name})"] = summary(starts)
            results[f"stop ({name})"] = summary(stops)
            if refs:
                results[f"tor-router start ({name})"] = summary(refs)
                ratios[name] = (results[f"start ({name})"]["median_ms"]
                                / results[f"tor-router start ({name})"]["median_ms"])
        helps = [timed([args.python, *flags, "-m", "netspectre", "--help"], env)
                 for _ in range(args.runs)]
        results["--help"] = summary(helps)
    finally:
        if fake is not None:
            fake.kill()
            fake.wait()
        subprocess.run([*in_ns, *base, "stop", "--force"], env=env, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"python: {args.python} {' '.join(flags)}; backend: {args.backend}; runs: {args.runs}")
    floor = [timed([args.python, *flags, "-c", "pass"], env) for _ in range(args.runs)]
    results["python -c pass (floor)"] = summary(floor)
    for key, val in results.items():
        print(f"{key:<36} median {val['median_ms']:7.1f} ms   p90 {val['p90_ms']:7.1f} ms")
    for name, ratio in ratios.items():
        print(f"start / tor-router start ({name}): {ratio:.2f}x (target <= 1.5x)")
    return 0


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"median_ms": statistics.median(ms), "p90_ms": ms[int(len(ms) * 0.9) - 1]}


if __name__ == "__main__":
    sys.exit(main())
