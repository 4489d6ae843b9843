"""`netspectre run` against the lab's real Tor (issue #10): as uid 65534 and as root, with
netspectre active on the whole client machine (its traffic goes through Tor once: the relay's
SOCKS connection is loopback, which the rules let through untouched). The web server sees an
exit, DNS and the onion service work, UDP fails fast, two runs get circuits of their own, and
the capture on the client's uplink holds nothing but relay ORPort traffic.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netspectre import paths
from netspectre.lab import LabInfo
from netspectre.tor import connect
from tests.support import runcopy
from tests.support.harness import Bench
from tests.support.netns import missing_tools, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.fixture(scope="module")
def bench(lab: LabInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    missing = missing_tools(("ip", "nft", "tcpdump", "setpriv"))
    if missing:
        pytest.skip("missing tools: " + ", ".join(missing))
    b = Bench.create(lab, tmp_path_factory.mktemp("run"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def copy() -> Iterator[Path]:
    root = runcopy.make()
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def active(bench: Bench, copy: Path) -> Iterator[Path]:
    """netspectre active system-wide in the lab's client; the config, readable by nobody."""
    cfg = bench.config()
    public = copy / "client.toml"
    public.write_text(cfg.read_text())
    public.chmod(0o644)
    with bench.active(cfg):
        yield public


def _probe(b: Bench, copy: Path, config: Path, *steps: str, user: str = "nobody",
           timeout: float = 120) -> list[dict[str, Any]]:
    argv = runcopy.argv(copy, config, "--", runcopy.PY, str(copy / "runprobe.py"), *steps,
                        user=user)
    done = b.client.run(argv, check=False, timeout=timeout)
    print(done.stderr)  # the relay's notices (shown when a test fails)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_run_with_tor_only(bench: Bench, copy: Path) -> None:
    """`start --no-firewall`: the machine is not torified, `run` is (first in this module: the
    module's `active` fixture starts the whole-machine mode afterwards)."""
    b, info = bench, bench.info
    cfg = b.config()
    public = copy / "tor-only.toml"
    public.write_text(cfg.read_text())
    public.chmod(0o644)
    b.ensure_stopped()
    started = b.netspectre(cfg, "start", "--no-firewall", timeout=120)
    try:
        assert started.rc == 0, str(started)
        status = b.status(cfg)
        assert status["torified"] is False, status
        cap = b.capture("run-tor-only")
        http, dns = _probe(b, copy, public, f"http:{info.layout.web4}", "resolve:echo.test")
        packets = b.finish(cap)
        assert http["ok"] and http["json"]["IsTor"] is True, http
        assert http["json"]["IP"] in {str(a) for a in info.exit_addresses}, http
        assert dns["addresses"] == [str(info.layout.web4)]
        b.assert_no_leak(packets)
    finally:
        b.ensure_stopped()


@pytest.mark.parametrize("user", ["nobody", "root"])
def test_run_reaches_the_web_server_through_an_exit(bench: Bench, copy: Path, active: Path,
                                                    user: str) -> None:
    b, info = bench, bench.info
    cap = b.capture(f"run-{user}")
    http, name, dns, udp = _probe(b, copy, active, f"http:{info.layout.web4}", "http:echo.test",
                                  "resolve:echo.test", f"udp:{info.layout.web4}:4444", user=user)
    onion = _probe(b, copy, active, f"http:{info.onion}", user=user)[0]
    packets = b.finish(cap)
    exits = {str(a) for a in info.exit_addresses}
    for result in (http, name, onion):
        assert result["ok"], result
    for result in (http, name):
        assert result["json"]["IP"] in exits and result["json"]["IsTor"] is True, result
    assert dns["addresses"] == [str(info.layout.web4)]
    assert not udp["ok"] and udp["errno"] == 101 and udp["seconds"] < 0.5, udp
    b.assert_no_leak(packets)


def _circuits_of(b: Bench) -> dict[str, set[str]]:
    """SOCKS username → ids of the circuits Tor isolated for it (GETINFO circuit-status)."""
    with connect.managed_controller(paths.for_namespace(b.info.spec.client_ns)) as ctl:
        status = ctl.getinfo("circuit-status")["circuit-status"]
    found: dict[str, set[str]] = {}
    for line in status.splitlines():
        for field in line.split():
            if field.startswith("SOCKS_USERNAME="):
                found.setdefault(field.split("=", 1)[1].strip('"'), set()).add(line.split()[0])
    return found


def test_two_runs_get_circuits_of_their_own(bench: Bench, copy: Path, active: Path) -> None:
    b, info = bench, bench.info
    procs = [subprocess.Popen(b.client.argv(runcopy.argv(
        copy, active, "--", runcopy.PY, str(copy / "runprobe.py"),
        f"hold:{info.layout.web4}:60")), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            first = json.loads(p.stdout.readline())
            assert first["ok"], first
        names = {f"netspectre-run-{p.pid}" for p in procs}  # the relay is the Popen'd process
        circuits = wait_for(lambda: (c := _circuits_of(b)) and names <= c.keys() and c,
                            timeout=20, what="both runs' circuits in circuit-status")
        assert isinstance(circuits, dict)
        one, two = (circuits[n] for n in sorted(names))
        assert one.isdisjoint(two), circuits
    finally:
        for p in procs:
            p.kill()
            p.wait()
