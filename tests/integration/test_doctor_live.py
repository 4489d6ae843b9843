"""`netspectre doctor` on each broken condition, made for real in a namespace of the test's own.

Every test runs `python -m netspectre --json doctor` inside a fresh network namespace (with
NETSPECTRE_RUN_DIR/LIB_DIR pointing at a temp dir), once on the broken variant and once on the
healthy one, so each can fail. Clock skew is the one exception: a real tor with a faked clock is
too heavy, so the notice-log line tor writes is a fixture in the daemon dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netspectre import config, state
from netspectre.backends import Backend
from netspectre.paths import Paths
from netspectre.tor import users
from netspectre.tor.record import Endpoints, TorRecord
from tests.support import netns
from tests.support.netns import Netns

pytestmark = pytest.mark.root

SRC = Path(__file__).resolve().parents[2] / "src"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOR = shutil.which("tor", path=SYSTEM_PATH)
AUTHORITY = (  # TEST-NET-3, never reachable from the namespace: tor stays at a low phase
    "DirAuthority nowhere orport=5000 no-v2 v3ident=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "
    "203.0.113.1:7000 BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = netns.missing_tools(("ip", "nft"))
    return "missing tools: " + ", ".join(missing) if missing else None


@dataclass
class Doc:
    ns: Netns
    base: Path  # 0711 under /tmp: the tor account must reach the daemon dir below it

    @property
    def paths(self) -> Paths:
        return Paths(run=self.base / "run", lib=self.base / "lib", daemon=self.base / "run-tor")

    def env(self, path: str = SYSTEM_PATH) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(SRC), PATH=path,
                    NETSPECTRE_RUN_DIR=str(self.paths.run), NETSPECTRE_LIB_DIR=str(self.paths.lib))

    def config(self, text: str, name: str = "netspectre.toml") -> Path:
        path = self.base / name
        path.write_text(text)
        return path

    def doctor(self, config: Path | None = None, *, path: str = SYSTEM_PATH,
               python: str = sys.executable, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
        cfg = ["--config", str(config)] if config else []
        argv = ["/usr/sbin/ip", "netns", "exec", self.ns.name, *prefix, python, "-m",
                "netspectre", *cfg, "--json", "doctor"]
        done = subprocess.run(argv, env=self.env(path), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode in (0, 1), f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        data: dict[str, Any] = json.loads(done.stdout)
        assert data["ok"] is (done.returncode == 0)
        assert data["ok"] is all(c["ok"] is not False for c in data["checks"])
        return data

    def write_state(self, **changes: Any) -> None:
        self.paths.run.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = state.State(phase=state.Phase.ACTIVE, backend=Backend.NFT, since=time.time(),
                             boot_id=state.boot_id(),
                             tor=TorRecord(Endpoints.of(config.Config())))
        state.save(self.paths.state, record.with_(**changes))

    def apply_our_table(self) -> None:
        """netspectre's real nft ruleset (as `netspectre rules` renders it), in the namespace."""
        rules = subprocess.run(
            [sys.executable, "-m", "netspectre", "--json", "rules", "--backend", "nft"],
            env=self.env(), capture_output=True, text=True, check=True, timeout=60)
        self.ns.run(["nft", "-f", "-"], input=json.loads(rules.stdout)["rules"])

    def resolv_conf(self, text: str) -> None:
        """/etc/netns/<name>/resolv.conf: `ip netns exec` bind-mounts it over /etc/resolv.conf."""
        d = Path("/etc/netns") / self.ns.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(text)


def check(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in data["checks"] if c["check"].startswith(prefix)]
    assert len(found) == 1, f"{prefix!r} in {[c['check'] for c in data['checks']]}"
    return found[0]


@pytest.fixture
def doc() -> Iterator[Doc]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="netspectre-doctor-", dir="/tmp"))
    os.chmod(base, 0o711)
    made_etc_netns = not Path("/etc/netns").exists()
    with netns.namespaces("doc") as (ns,):
        try:
            yield Doc(ns, base)
        finally:
            shutil.rmtree(Path("/etc/netns") / ns.name, ignore_errors=True)
            if made_etc_netns:
                try:
                    os.rmdir("/etc/netns")
                except OSError:
                    pass  # another test's namespace still uses it
            shutil.rmtree(base, ignore_errors=True)


def path_without(tmp: Path, *names: str) -> str:
    """A PATH of one directory with every system program except `names` (symlinks)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for name in entries:
            if name not in names and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(d, name))
    return str(bin_dir)


# -- tor --------------------------------------------------------------------------------------


def test_tor_missing(doc: Doc) -> None:
    healthy = check(doc.doctor(), "tor installed")
    assert healthy["ok"] is True and healthy["detail"].endswith("/tor")
    broken = check(doc.doctor(path=path_without(doc.base, "tor")), "tor installed")
    assert broken["ok"] is False and "no `tor` program" in broken["detail"]
    if shutil.which("apt-get", path=SYSTEM_PATH):
        assert broken["fix"] == "sudo apt install tor"


@pytest.mark.skipif(TOR is None, reason="tor is not installed")
def test_real_tor_not_bootstrapped_and_system_mode(doc: Doc) -> None:
    try:
        users.resolve("auto")
    except Exception:
        pytest.skip("no tor account on this machine")
    from netspectre.tor import managed

    cfg_path = doc.config(f'[tor]\ntorrc_extra = ["TestingTorNetwork 1", "{AUTHORITY}"]\n')
    control = doc.paths.daemon / "control"
    system_cfg = doc.config(f'[tor]\nmode = "system"\ncontrol = "{control}"\n', "system.toml")
    before = doc.doctor(cfg_path)
    assert check(before, "tor bootstrapped")["ok"] is None  # not running, not active: no fault
    unreachable = check(doc.doctor(system_cfg), "system tor reachable")
    assert unreachable["ok"] is False and str(control) in unreachable["detail"]
    assert unreachable["fix"].startswith("sudo systemctl start tor")
    assert "TransPort 127.0.0.1:9040" in unreachable["fix"]
    launch = subprocess.run(
        doc.ns.argv([sys.executable, "-c",
                     "import json\n"
                     "from netspectre import config, facts as F, paths, plan, system\n"
                     f"cfg = config.load({str(cfg_path)!r})\n"
                     "p = paths.detect()\n"
                     "facts = F.gather(cfg)\n"
                     "pl = plan.derive(cfg, facts, p, which=system.which)\n"
                     "from netspectre.tor import managed\n"
                     "managed.preflight(cfg, p, pl)\n"
                     "print(json.dumps(managed.launch(cfg, p, pl, facts).to_json()))\n"]),
        env=doc.env(), capture_output=True, text=True, timeout=60)
    assert launch.returncode == 0, launch.stderr
    record = json.loads(launch.stdout)
    try:
        netns.wait_for(control.exists, timeout=30, what="tor's control socket")

        def stuck() -> dict[str, Any] | None:
            found = check(doc.doctor(cfg_path), "tor bootstrapped")
            return found if found["detail"].startswith("Tor is at") else None

        found = netns.wait_for(stuck, timeout=30, what="doctor to read the bootstrap phase")
        assert isinstance(found, dict) and found["ok"] is False
        assert " % (" in found["detail"]  # "Tor is at 5 % (conn: Connecting to a relay)"
        # the managed tor as a "system" tor: reachable over its socket, offers every line
        reachable = check(doc.doctor(system_cfg), "system tor reachable")
        assert reachable["ok"] is True, reachable
        ports = doc.doctor(cfg_path)
        assert check(ports, "port 9040/tcp")["ok"] is True
        assert "netspectre's tor" in check(ports, "port 9040/tcp")["detail"]
    finally:
        managed.stop(TorRecord.from_json(record, fallback=Endpoints.of(config.load(str(cfg_path)))),
                     doc.paths)


def test_active_without_tor_says_the_kill_switch_holds(doc: Doc) -> None:
    assert check(doc.doctor(), "tor bootstrapped")["ok"] is None
    doc.apply_our_table()
    doc.write_state()
    data = doc.doctor()
    assert check(data, "netspectre active")["ok"] is True
    tor = check(data, "tor bootstrapped")
    assert tor["ok"] is False and "kill switch holds, nothing gets out" in tor["detail"]
    assert tor["fix"] == "sudo netspectre restart"


def test_clock_skew_from_tor_notice_log(doc: Doc) -> None:
    doc.paths.daemon.mkdir(parents=True)
    log = doc.paths.daemon / "notice.log"
    log.write_text("Jan 01 00:00:00.000 [notice] Tor 0.4.9.11 opening new log file.\n"
                   "Jan 01 00:00:01.000 [notice] Bootstrapped 5% (conn): Connecting to a relay\n")
    assert check(doc.doctor(), "clock")["ok"] is True
    with log.open("a") as f:
        f.write("Jan 01 00:00:02.000 [warn] Our clock is 2 hours, 3 minutes behind the time "
                "published in the consensus network status document (2025-01-01 02:00:00 UTC)."
                "  Tor needs an accurate clock to work correctly. Please check your time and "
                "date settings!\n")
    broken = check(doc.doctor(), "clock")
    assert broken["ok"] is False and "2 hours, 3 minutes behind" in broken["detail"]
    assert broken["fix"].startswith("sudo date -s '+2 hours 3 minutes'")


# -- ports ------------------------------------------------------------------------------------


LISTENER = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[2] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
if sys.argv[2] == "tcp":
    s.listen()
print("ready", flush=True)
sys.stdin.read()
"""


def test_ports_taken_name_the_process(doc: Doc) -> None:
    healthy = doc.doctor()
    assert check(healthy, "port 9040/tcp")["ok"] is True
    assert check(healthy, "port 9053/udp")["ok"] is True
    holders = [doc.ns.popen([sys.executable, "-c", LISTENER, port, proto],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
               for port, proto in (("9040", "tcp"), ("9053", "udp"))]
    try:
        for h in holders:
            assert h.stdout is not None and h.stdout.readline() == b"ready\n"
        data = doc.doctor()
        for (name, key), h in zip((("port 9040/tcp", "trans_port"), ("port 9053/udp", "dns_port")),
                                  holders, strict=True):
            found = check(data, name)
            assert found["ok"] is False and f"(pid {h.pid}," in found["detail"], found
            assert found["fix"].startswith(f"sudo kill {h.pid}, or set `{key} = ")
    finally:
        for h in holders:
            h.kill()
            h.wait()
            for stream in (h.stdin, h.stdout):
                if stream is not None:
                    stream.close()


# -- firewall ---------------------------------------------------------------------------------


def test_nft_missing(doc: Doc) -> None:
    cfg = doc.config('[firewall]\nbackend = "nft"\n')
    assert check(doc.doctor(cfg), "firewall tools")["ok"] is True
    no_nft = path_without(doc.base, "nft")
    broken = check(doc.doctor(cfg, path=no_nft), "firewall tools")
    assert broken["ok"] is False and "`nft` not found" in broken["detail"]
    assert "nftables" in broken["fix"] and 'backend = "auto"' in broken["fix"]
    auto = check(doc.doctor(path=no_nft), "firewall tools")  # auto falls back to iptables
    assert auto["ok"] is True and "iptables" in auto["detail"]


@pytest.mark.skipif(bool(netns.missing_tools(("iptables-legacy", "iptables-nft"))),
                    reason="needs iptables-legacy and iptables-nft")
def test_iptables_legacy_and_nft_mismatch(doc: Doc) -> None:
    system = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                            env={"PATH": SYSTEM_PATH}).stdout
    assert check(doc.doctor(), "iptables flavours")["ok"] is True
    other, mine = ("legacy", "nft") if "nf_tables" in system else ("nft", "legacy")
    doc.ns.run([f"iptables-{other}", "-A", "OUTPUT", "-d", "203.0.113.7", "-j", "DROP"])
    hidden = check(doc.doctor(), "iptables flavours")
    assert hidden["ok"] is False and f"1 rule(s) sit in iptables-{other}" in hidden["detail"]
    assert f"iptables-{other}-save" in hidden["fix"]
    doc.ns.run([f"iptables-{mine}", "-A", "OUTPUT", "-d", "203.0.113.8", "-j", "DROP"])
    both = check(doc.doctor(), "iptables flavours")
    assert both["ok"] is False and "two iptables rule sets coexist" in both["detail"]
    assert "update-alternatives --set iptables" in both["fix"]


# -- state, leftovers -------------------------------------------------------------------------


def test_leftover_rules_without_state(doc: Doc) -> None:
    assert check(doc.doctor(), "state")["ok"] is True
    doc.apply_our_table()
    broken = check(doc.doctor(), "state")
    assert broken["ok"] is False and "nft" in broken["detail"] and "no internet" in broken["detail"]
    assert broken["fix"] == "sudo netspectre stop"


def test_state_active_but_rules_gone(doc: Doc) -> None:
    doc.apply_our_table()
    doc.write_state()
    assert check(doc.doctor(), "netspectre active")["ok"] is True
    doc.ns.run(["nft", "delete", "table", "inet", "netspectre"])
    broken = check(doc.doctor(), "netspectre active")
    assert broken["ok"] is False and "NOT protected" in broken["detail"]
    assert broken["fix"] == "sudo netspectre restart"


def test_stale_interrupted_and_corrupt_state(doc: Doc) -> None:
    assert check(doc.doctor(), "state")["ok"] is True
    doc.write_state(boot_id="0000-a-previous-boot")
    old = check(doc.doctor(), "state")
    assert old["ok"] is False and "previous boot" in old["detail"]
    doc.write_state(phase=state.Phase.APPLYING)
    half = check(doc.doctor(), "state")
    assert half["ok"] is False and "interrupted" in half["detail"]
    doc.paths.state.write_text("{not json")
    corrupt = check(doc.doctor(), "state")
    assert corrupt["ok"] is False and corrupt["fix"].startswith("sudo netspectre stop --force")


def test_boot_lockdown_marker(doc: Doc) -> None:
    assert check(doc.doctor(), "boot lockdown")["ok"] is True
    doc.paths.run.mkdir(mode=0o700, parents=True)
    doc.paths.lockdown.write_text(json.dumps({"reason": "`tor` not found", "since": time.time()}))
    broken = check(doc.doctor(), "boot lockdown")
    assert broken["ok"] is False and "`tor` not found" in broken["detail"]
    assert "sudo netspectre stop" in broken["fix"]


def test_ipv6_sysctls_left_off(doc: Doc) -> None:
    for key in ("all", "default"):
        doc.ns.set_sysctl(f"net.ipv6.conf.{key}.disable_ipv6", "0")
    assert check(doc.doctor(), "IPv6 sysctls")["ok"] is True
    for key in ("all", "default"):
        doc.ns.set_sysctl(f"net.ipv6.conf.{key}.disable_ipv6", "1")
    broken = check(doc.doctor(), "IPv6 sysctls")
    assert broken["ok"] is False and "not active" in broken["detail"]
    assert broken["fix"] == ("sudo sysctl -w net.ipv6.conf.all.disable_ipv6=0 "
                             "net.ipv6.conf.default.disable_ipv6=0")


# -- DNS --------------------------------------------------------------------------------------


def _resolved_running() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "systemd-resolve":
                return True
        except OSError:
            continue
    return False


def test_resolv_conf_variants(doc: Doc) -> None:
    cfg = doc.config('[firewall]\nlan = ["198.51.100.0/24"]\n')
    doc.resolv_conf("nameserver 203.0.113.53\n")
    healthy = doc.doctor(cfg)
    assert check(healthy, "DNS config")["ok"] is True
    assert "203.0.113.53" in check(healthy, "DNS config")["detail"]
    if not _resolved_running():
        assert check(healthy, "systemd-resolved")["ok"] is True
    for text, words in (
        ("", "is empty"),
        ("search example.org\n", "has no nameserver line"),
        ("nameserver 2001:db8::53\n", "only IPv6 nameservers"),
        ("nameserver 198.51.100.53\noptions use-vc\n", "refuses TCP 53 to the LAN"),
    ):
        doc.resolv_conf(text)
        found = check(doc.doctor(cfg), "DNS config")
        assert found["ok"] is False and words in found["detail"], (text, found)
    doc.resolv_conf("nameserver 198.51.100.53\n")  # UDP to a LAN resolver: fine
    assert check(doc.doctor(cfg), "DNS config")["ok"] is True
    if _resolved_running():
        return  # the stub then works: the failing variant needs a machine without resolved
    doc.resolv_conf("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
    stub = check(doc.doctor(cfg), "systemd-resolved")
    assert stub["ok"] is False and "not running" in stub["detail"]
    assert stub["fix"].startswith("sudo systemctl start systemd-resolved")


# -- config, root -----------------------------------------------------------------------------


def test_config_error_is_a_finding_and_the_rest_continues(doc: Doc) -> None:
    good = doc.config("[tor]\ntrans_port = 9041\n")
    assert check(doc.doctor(good), "config")["ok"] is True
    assert check(doc.doctor(good), "port 9041/tcp")["ok"] is True
    bad = doc.config("[tor]\ntrans_prot = 9041\n", "bad.toml")
    data = doc.doctor(bad)
    found = check(data, "config")
    assert found["ok"] is False and "unknown key 'tor.trans_prot'" in found["detail"]
    assert "known keys in [tor]" in found["fix"]
    assert check(data, "port 9040/tcp")["ok"] is True  # the defaults, still checked
    assert check(data, "tor installed")["ok"] is True


@pytest.mark.skipif(shutil.which("setpriv", path=SYSTEM_PATH) is None
                    or not os.path.exists("/usr/bin/python3"), reason="needs setpriv, python3")
def test_not_root_skips_what_needs_root(doc: Doc) -> None:
    version = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info >= "
                              "(3, 11))"], capture_output=True, text=True).stdout.strip()
    if version != "True":
        pytest.skip("/usr/bin/python3 is older than 3.11")
    assert check(doc.doctor(), "state")["ok"] is True
    data = doc.doctor(python="/usr/bin/python3",
                      prefix=("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"))
    for name in ("root", "netspectre active", "state", "boot lockdown", "iptables flavours"):
        found = check(data, name)
        assert found["ok"] is None and found["detail"].startswith("not root"), found
        assert found["fix"] == "sudo netspectre doctor"

