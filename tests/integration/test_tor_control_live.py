"""The managed tor for real: a tor binary under our supervisor in a fresh network namespace.

The namespace has only loopback, and the tor is told (TestingTorNetwork + one DirAuthority on
TEST-NET-3, 203.0.113.1) about a network that does not exist: it never reaches anything, so it
stays at a low bootstrap phase, which is all the control-port behaviour needs. Bootstrap to
100 %, myip and .onion need the private Tor network (src/netspectre/lab, issue 4).

The launch runs inside the namespace (`ip netns exec … python -c`); the control socket is a
file, so this process talks to it directly, and stop/kill work on pids from here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netspectre import config, proc
from netspectre.errors import ConfigError, TorError
from netspectre.paths import Paths
from netspectre.plan import derive
from netspectre.policy import HostFacts
from netspectre.tor import bootstrap, connect, process, running, users
from netspectre.tor import managed as tor_managed
from netspectre.tor.control import Controller
from netspectre.tor.layout import Files
from netspectre.tor.protocol import BootstrapEvent, parse_bootstrap
from netspectre.tor.record import Endpoints, TorRecord

pytestmark = pytest.mark.root

SRC = Path(__file__).resolve().parents[2] / "src"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "torrc"
TOR = shutil.which("tor", path="/usr/sbin:/usr/bin:/sbin:/bin")
AUTHORITY = (
    "DirAuthority nowhere orport=5000 no-v2 v3ident=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "
    "203.0.113.1:7000 BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
)


def config_text(*, ports: tuple[int, int, int] = (19040, 19053, 19060), extra: str = "") -> str:
    trans, dns, socks = ports
    return (
        f"[tor]\ntrans_port = {trans}\ndns_port = {dns}\nsocks_port = {socks}\n"
        f'bootstrap_timeout = 2\ntorrc_extra = ["TestingTorNetwork 1", "{AUTHORITY}"{extra}]\n'
        '[check]\nurl = "http://203.0.113.1/api/ip"\ntimeout = 2\n'
    )


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tor's privilege drop)"
    if TOR is None:
        return "tor is not installed (apt install tor)"
    if shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
        return "ip (iproute2) is not installed"
    try:
        users.resolve("auto")
    except ConfigError:
        return "no tor account on this machine"
    return None


@dataclass
class Env:
    ns: str
    base: Path
    cfg_path: Path
    config: config.Config
    paths: Paths

    @property
    def files(self) -> Files:
        return Files.of(self.paths)

    def in_ns(self, code: str, cfg_path: Path | None = None) -> Any:
        """Run `code` with config/paths/facts in the namespace; it prints one JSON value."""
        prelude = (
            "import json, sys\n"
            "from netspectre import config as C, paths as P\n"
            "from netspectre.errors import Error\n"
            "from netspectre.policy import HostFacts\n"
            "from netspectre import plan as PL, system as S\n"
            "from netspectre.tor import connect, managed, running, users\n"
            "from netspectre.tor.record import Endpoints, TorRecord\n"
            f"cfg = C.parse(open({str(cfg_path or self.cfg_path)!r}).read(), "
            f"path={str(cfg_path or self.cfg_path)!r})\n"
            "p = P.detect()\n"
            "name, uid = users.resolve(cfg.tor.user)\n"
            "facts = HostFacts(tor_uid=uid, tor_user=name)\n"
            "plan = PL.derive(cfg, facts, p, which=S.which)\n"
            "end = Endpoints.of(cfg)\n"
            "rec = lambda d: TorRecord.from_json(d, fallback=end)\n"
            "out = lambda v: print(json.dumps(v))\n"
        )
        env = dict(os.environ, PYTHONPATH=str(SRC), NETSPECTRE_RUN_DIR=str(self.paths.run),
                   NETSPECTRE_LIB_DIR=str(self.paths.lib))
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", prelude + code],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, f"in {self.ns}: exit {done.returncode}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    ns = f"ns-tor-{secrets.token_hex(4)}"
    # Not pytest's tmp_path: its 0700 parents would keep the tor account out.
    base = Path(tempfile.mkdtemp(prefix="netspectre-tor-", dir="/tmp"))
    os.chmod(base, 0o711)
    cfg_path = base / "netspectre.toml"
    cfg_path.write_text(config_text())
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield Env(
            ns=ns, base=base, cfg_path=cfg_path,
            config=config.parse(cfg_path.read_text(), path=str(cfg_path)),
            paths=Paths(run=base / "run", lib=base / "lib", daemon=base / "run-tor"),
        )
    finally:
        # Only processes we started can be in our namespace: end them by pid, then delete it.
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(base, ignore_errors=True)


def control_answers(paths: Paths) -> bool:
    try:
        with connect.managed_controller(paths, timeout=1.0) as ctl:
            ctl.getinfo("version")
        return True
    except TorError:
        return False


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def managed(env: Env) -> Iterator[dict[str, Any]]:
    record: dict[str, Any] = env.in_ns(
        "managed.preflight(cfg, p, plan)\nout(managed.launch(cfg, p, plan, facts).to_json())")
    try:
        wait_until(lambda: control_answers(env.paths), 30, "tor's control socket")
        yield record
    finally:
        tor_managed.stop(TorRecord.from_json(record, fallback=Endpoints.of(env.config)),
                         env.paths)


def test_control_authenticate_getinfo_getconf(env: Env, managed: dict[str, Any]) -> None:
    files = env.files
    with Controller.connect(files.control) as ctl:
        assert ctl.authenticate(files.cookie) == "SAFECOOKIE"
        phase = parse_bootstrap(ctl.getinfo("status/bootstrap-phase")["status/bootstrap-phase"])
        assert phase is not None and 0 <= phase.progress < 100
        conf = ctl.getconf(
            "TransPort", "DNSPort", "SocksPort", "VirtualAddrNetworkIPv4",
            "AutomapHostsOnResolve", "AutomapHostsSuffixes", "User", "DirAuthority",
            "TestingTorNetwork", "ControlPort",
        )
        assert conf["TransPort"] == ["127.0.0.1:19040"]
        assert conf["DNSPort"] == ["127.0.0.1:19053"]
        assert conf["SocksPort"] == ["127.0.0.1:19060 ExtendedErrors"]
        assert conf["VirtualAddrNetworkIPv4"] == ["10.192.0.0/10"]
        assert conf["AutomapHostsOnResolve"] == ["1"]
        assert conf["AutomapHostsSuffixes"] == [".onion,.exit"]
        assert conf["User"] == [managed["tor_user"]]
        assert conf["TestingTorNetwork"] == ["1"]
        assert conf["DirAuthority"] == [AUTHORITY.removeprefix("DirAuthority ")]
        assert conf["ControlPort"] == []
        listeners = ctl.getinfo("net/listeners/trans", "net/listeners/dns")
        assert listeners == {"net/listeners/trans": '"127.0.0.1:19040"',
                             "net/listeners/dns": '"127.0.0.1:19053"'}
    tor = process.ours(files)["tor"]
    uid_line = next(ln for ln in Path(f"/proc/{tor}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert int(uid_line.split()[2]) == users.by_name(managed["tor_user"]).uid  # type: ignore[union-attr]


def test_newnym_reports_the_rate_limit(env: Env, managed: dict[str, Any]) -> None:
    first = running.newnym(Endpoints.of(env.config), env.paths).to_json()
    second = running.newnym(Endpoints.of(env.config), env.paths).to_json()
    assert first["accepted"] and not first["rate_limited"]
    assert second["rate_limited"] and 1 <= second["delay_seconds"] <= 10
    assert "rate-limits NEWNYM" in second["message"]


def test_bootstrap_timeout_names_the_last_phase(env: Env, managed: dict[str, Any]) -> None:
    events: list[BootstrapEvent] = []
    with pytest.raises(TorError, match=r"within 2 s; last phase \d+ %") as err:
        bootstrap.wait(Endpoints.of(env.config), env.paths, events.append,
                       timeout=env.config.tor.bootstrap_timeout)
    assert events and events[0].progress < 100
    assert err.value.hint is not None and "traffic is blocked" in err.value.hint


def test_status_in_the_namespace(env: Env, managed: dict[str, Any]) -> None:
    status = env.in_ns(f"out(running.status(end, p, rec({managed!r})).to_json())")
    assert status["running"] and status["supervisor_running"] and status["up"]
    assert status["trans_port_listening"] and status["dns_port_listening"]
    assert status["bootstrap"] is not None and status["bootstrap"] < 100
    assert status["message"].startswith("Tor is bootstrapping")


def test_myip_fails_clearly_without_a_network(env: Env, managed: dict[str, Any]) -> None:
    result = env.in_ns(
        "try:\n    out(running.myip(cfg, end).to_json())\n"
        "except Error as e:\n    out({'error': e.message, 'hint': e.hint})\n"
    )
    assert result["error"].startswith("no exit-check service answered through Tor")
    assert "http://203.0.113.1/api/ip" in result["error"]


def test_supervisor_brings_tor_back_after_kill9(
    env: Env, managed: dict[str, Any], record_property: Any
) -> None:
    files = env.files
    supervisor = process.ours(files)["supervisor"]
    rss_kib = int(next(ln for ln in Path(f"/proc/{supervisor}/status").read_text().splitlines()
                       if ln.startswith("VmRSS:")).split()[1])
    record_property("supervisor_rss_kib", rss_kib)
    assert rss_kib <= 30 * 1024, f"supervisor RSS {rss_kib} KiB is over the 30 MiB goal"
    for attempt in range(3):
        old = process.ours(files)["tor"]
        os.kill(old, signal.SIGKILL)
        start = time.monotonic()
        wait_until(lambda old=old: process.ours(files).get("tor", old) != old, 10, "a new tor")
        respawned = time.monotonic() - start
        wait_until(lambda: control_answers(env.paths), 15, "the new tor's control socket")
        answering = time.monotonic() - start
        record_property(f"restart_{attempt}_respawn_s", round(respawned, 3))
        record_property(f"restart_{attempt}_control_s", round(answering, 3))
        print(f"kill -9 → new tor in {respawned:.2f} s, control answering in {answering:.2f} s")
        assert process.ours(files)["supervisor"] == supervisor
    assert "exited with signal 9" in files.supervisor_log.read_text()


def test_status_while_tor_is_down_and_the_supervisor_stalled(
    env: Env, managed: dict[str, Any]
) -> None:
    files = env.files
    found = process.ours(files)
    os.kill(found["supervisor"], signal.SIGSTOP)
    try:
        os.kill(found["tor"], signal.SIGKILL)
        wait_until(lambda: not proc.alive(found["tor"]), 5, "tor to die")
        status = env.in_ns(f"out(running.status(end, p, rec({managed!r})).to_json())")
        assert not status["up"] and not status["running"]
        assert status["message"].startswith("Tor is down — traffic blocked")
    finally:
        os.kill(found["supervisor"], signal.SIGCONT)
    wait_until(lambda: control_answers(env.paths), 15, "tor to come back")


def test_stop_without_record_ends_only_ours(env: Env, managed: dict[str, Any]) -> None:
    files = env.files
    found = process.ours(files)
    decoy = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(found["supervisor"], signal.SIGKILL)  # a crashed supervisor: its tor lives on
        wait_until(lambda: not proc.alive(found["supervisor"]), 5, "the supervisor to die")
        assert process.ours(files) == {"tor": found["tor"]}
        process.write_pid(files.tor_pid, decoy.pid)  # and a stale pid file naming a stranger
        tor_managed.stop(None, env.paths)  # finds tor through tor's own PidFile
        assert decoy.poll() is None, "stop killed a process that is not ours"
        assert not proc.alive(found["supervisor"]) and not proc.alive(found["tor"])
        assert process.ours(files) == {}
        assert not files.supervisor_pid.exists()
        assert any(files.data.iterdir()), "the DataDirectory stays for a warm start"
        tor_managed.stop(None, env.paths)  # again: nothing to do, no error
    finally:
        decoy.kill()
        decoy.wait()


def test_preflight_reports_a_port_clash(env: Env) -> None:
    other = env.base / "clash.toml"
    other.write_text(config_text(ports=(19140, 19153, 19160)))
    result = env.in_ns(
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 19140))\n"
        "try:\n    managed.preflight(cfg, p, plan)\n    out({})\n"
        "except Error as e:\n    out({'error': e.message, 'hint': e.hint})\n",
        cfg_path=other,
    )
    assert "19140/tcp (tor.trans_port)" in result["error"]
    assert "python" in result["error"]  # who holds it
    assert "tor.trans_port" in result["hint"]


def test_preflight_runs_tor_verify_config(env: Env) -> None:
    bad = dataclasses.replace(
        env.config,
        tor=dataclasses.replace(env.config.tor, torrc_extra=("NoSuchOption 1",)),
    )
    facts = HostFacts(tor_uid=0, tor_user=users.resolve("auto")[0])
    with pytest.raises(ConfigError, match="tor rejects the generated torrc.*NoSuchOption"):
        tor_managed.preflight(bad, env.paths, derive(bad, facts, env.paths))


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.torrc")))
def test_golden_torrcs_are_valid_for_tor(golden: str) -> None:
    if TOR is None:
        pytest.skip("tor is not installed")
    done = subprocess.run(
        [TOR, "--verify-config", "-f", str(GOLDEN / golden), "--defaults-torrc", os.devnull],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


SYSTEM_LINES = [
    "TransPort 127.0.0.1:29040",
    "DNSPort 127.0.0.1:29053",
    "VirtualAddrNetworkIPv4 10.192.0.0/10",
    "AutomapHostsOnResolve 1",
]


@pytest.mark.parametrize("complete", [False, True])
def test_system_mode_reads_the_running_tor(env: Env, complete: bool) -> None:
    """A tor set up like a distribution's (own ControlSocket + cookie) in the namespace."""
    account = users.by_name(users.resolve("auto")[0])
    assert account is not None
    home = env.base / f"system-tor-{int(complete)}"
    for sub in ("", "data"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
        os.chown(home / sub, account.uid, account.gid)
    torrc = home.with_suffix(".torrc")
    torrc.write_text("\n".join([
        f"User {account.name}", f"DataDirectory {home / 'data'}", "SocksPort 127.0.0.1:29050",
        f"ControlSocket {home / 'control'}", "CookieAuthentication 1",
        f"CookieAuthFile {home / 'control.authcookie'}", f"Log notice file {home / 'log'}",
        "TestingTorNetwork 1", AUTHORITY, *(SYSTEM_LINES if complete else []),
    ]) + "\n")
    cfg = env.base / f"system-{int(complete)}.toml"
    cfg.write_text(
        f'[tor]\nmode = "system"\ncontrol = "{home / "control"}"\n'
        "trans_port = 29040\ndns_port = 29053\n"
    )
    tor = subprocess.Popen(
        ["ip", "netns", "exec", env.ns, str(TOR), "-f", str(torrc), "--defaults-torrc",
         os.devnull], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (home / "control").exists(), 30, "the system tor's control socket")
        result = env.in_ns(
            "try:\n    managed.preflight(cfg, p, plan)\n"
            "    out({'proxy': connect.socks_proxy(end)})\n"
            "except Error as e:\n    out({'error': e.message, 'hint': e.hint})\n",
            cfg_path=cfg,
        )
    finally:
        tor.terminate()
        tor.wait(15)
    if complete:
        assert result == {"proxy": ["127.0.0.1", 29050]}
    else:
        assert "lacks what netspectre needs (read over its control port)" in result["error"]
        assert result["hint"].splitlines()[1:] == [f"    {line}" for line in SYSTEM_LINES]
