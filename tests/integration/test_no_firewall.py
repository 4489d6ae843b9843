"""Issue 10 item 2: `start --no-firewall` for real, with a real tor under our supervisor in a
fresh namespace (only loopback; the tor is told about a network that does not exist, as in
test_tor_control_live.py, so it never reaches anything). No ruleset, no sysctl, tor running,
status and verify say the machine is NOT torified, the endpoints are readable by nobody,
restart keeps the mode, a full start converges from it (keeping the tor), stop cleans up and
(Tor only) runs no firewall command at all."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netspectre import proc
from tests.integration.test_tor_control_live import AUTHORITY, skip_reason
from tests.support.netns import wait_for

pytestmark = pytest.mark.root

SRC = Path(__file__).resolve().parents[2] / "src"
CONFIG = (
    "[tor]\ntrans_port = 19240\ndns_port = 19253\nsocks_port = 19260\nbootstrap_timeout = 2\n"
    f'torrc_extra = ["TestingTorNetwork 1", "{AUTHORITY}"]\n'
)


@dataclass
class Env:
    ns: str
    base: Path
    cfg: Path

    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(SRC), NETSPECTRE_RUN_DIR=str(self.base / "run"),
                    NETSPECTRE_LIB_DIR=str(self.base / "lib"))

    def run(self, *args: str, json_out: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "netspectre", "--config", str(self.cfg),
                *(["--json"] if json_out else []), *args]
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], env=self.env(),
                              capture_output=True, text=True, timeout=120)

    def sh(self, *argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                              text=True, check=True).stdout

    def kernel(self) -> dict[str, str]:
        """What a start with the firewall would change: rules of every kind, the sysctls."""
        return {"nft": self.sh("nft", "list", "ruleset"),
                "iptables": self.sh("iptables-save") if shutil.which("iptables-save") else "",
                "sysctls": self.sh("sh", "-c", "grep -H . /proc/sys/net/ipv6/conf/*/disable_ipv6"
                                   " /proc/sys/net/ipv4/ip_forward")}


@pytest.fixture
def env() -> Iterator[Env]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    ns = f"ns-nofw-{secrets.token_hex(4)}"
    base = Path(tempfile.mkdtemp(prefix="netspectre-nofw-", dir="/tmp"))
    os.chmod(base, 0o711)  # the tor account and nobody must get through to their files
    cfg = base / "netspectre.toml"
    cfg.write_text(CONFIG)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield Env(ns=ns, base=base, cfg=cfg)
    finally:
        e = Env(ns=ns, base=base, cfg=cfg)
        e.run("stop", "--force")
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():  # only processes we started live in our namespace
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _status(e: Env) -> dict[str, Any]:
    done = e.run("status")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _tor_pid(e: Env) -> int | None:
    pid = _status(e)["tor"].get("tor_pid")
    return pid if isinstance(pid, int) and proc.alive(pid) else None


def test_no_firewall_runs_tor_only_and_says_so(env: Env) -> None:
    e = env
    before = e.kernel()
    done = e.run("start", "--no-firewall", "--no-wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["torified"] is False
    assert e.kernel() == before  # no ruleset of any kind, no sysctl touched
    tor = wait_for(lambda: _tor_pid(e), timeout=30, what="the managed tor")
    status = _status(e)
    assert (status["active"], status["firewall"], status["torified"]) == (True, False, False)
    assert status["tor"]["supervisor_running"] is True, status["tor"]
    text = e.run("status", json_out=False).stdout
    assert ("WARNING: this machine's own traffic is NOT torified (started with --no-firewall); "
            "only `netspectre run` uses Tor") in text, text
    # verify does not claim protection: it fails, naming why; the firewall rows do not apply.
    verify = e.run("verify", "--no-myip")
    checks = {c["check"]: c for c in json.loads(verify.stdout)["checks"]}
    assert verify.returncode == 1
    assert checks["this machine's own traffic torified"]["ok"] is False
    assert checks["ruleset in force equals the policy"]["ok"] is None
    # The endpoints for `netspectre run`, readable by an unprivileged user; the state is not.
    endpoints = e.base / "run-public" / "endpoints.json"
    assert oct(endpoints.stat().st_mode & 0o777) == "0o644"
    as_nobody = subprocess.run(["cat", str(endpoints)], user=65534, group=65534,
                               capture_output=True, text=True)
    assert as_nobody.returncode == 0, as_nobody.stderr
    published = json.loads(as_nobody.stdout)
    assert (published["socks_port"], published["firewall"]) == (19260, False)
    state_read = subprocess.run(["cat", str(e.base / "run" / "state.json")], user=65534,
                                group=65534, capture_output=True, text=True)
    assert state_read.returncode != 0
    # Nothing to bypass, and a second --no-firewall start is refused.
    bypass = e.run("bypass", "--", "true")
    assert bypass.returncode != 0 and "Tor only" in bypass.stderr, bypass.stderr
    again = e.run("start", "--no-firewall", "--no-wait")
    assert again.returncode != 0 and "already running Tor only" in again.stderr
    # restart keeps the mode (and the tor: nothing changed).
    restart = e.run("restart", "--no-wait")
    assert restart.returncode == 0, restart.stderr
    assert json.loads(restart.stdout)["firewall"] is False
    assert e.kernel() == before and _tor_pid(e) == tor
    # stop ends tor and runs no firewall command at all.
    stop = e.run("--debug", "stop")
    assert stop.returncode == 0, stop.stderr
    traced = [line for line in stop.stderr.splitlines() if line.startswith("+ ")]
    assert not [t for t in traced if t.split()[1].startswith(("nft", "iptables", "ip6tables"))
                ], traced
    assert tor is not None
    wait_for(lambda: not proc.alive(tor), timeout=15, what="tor to end")
    assert e.kernel() == before
    assert not (e.base / "run" / "state.json").exists() and not endpoints.exists()


def test_a_full_start_over_tor_only_converges_and_keeps_the_tor(env: Env) -> None:
    e = env
    before = e.kernel()
    assert e.run("start", "--no-firewall", "--no-wait").returncode == 0
    tor = wait_for(lambda: _tor_pid(e), timeout=30, what="the managed tor")
    done = e.run("start", "--no-wait")
    assert done.returncode == 0, done.stderr
    status = _status(e)
    assert (status["firewall"], status["torified"], status["ruleset_in_force"]) == (
        True, True, True), status
    assert "table inet netspectre" in e.sh("nft", "list", "ruleset")
    assert e.kernel()["sysctls"] != before["sysctls"]  # ipv6 = "disable" (the default)
    assert _tor_pid(e) == tor  # the same torrc: the tor was kept
    # The reverse is refused: --no-firewall never lifts a firewall in force.
    down = e.run("start", "--no-firewall", "--no-wait")
    assert down.returncode != 0 and "stop" in down.stderr, down.stderr
    assert e.run("stop").returncode == 0
    assert e.kernel() == before
