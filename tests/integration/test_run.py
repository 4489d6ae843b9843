"""`netspectre run` for real: user, network, mount and PID namespaces, as an unprivileged user
(uid 65534) and as root, against a stand-in SocksPort (tests/support/socksstub.py).

The run's host is a namespace of ours with an uplink to a peer; the capture on the peer is
where a leak would show. Each leak check has its positive control: the same probe run without
`netspectre run` is seen on the peer.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netspectre.run import netsetup
from tests.support import netns, runcopy
from tests.support.netns import Capture, Netns, wait_for
from tests.support.runcopy import NOBODY, PY, REPO

TARGET4, TARGET6 = "198.51.100.5", "2001:db8:99::5"  # off-link: routed to the peer
NAMES = {"echo.test": "203.0.113.80"}


@dataclass
class Env:
    host: Netns
    peer: Netns
    root: Path  # world-readable copy of the package, the probe and the stub
    config: Path
    log: Path  # the stub's requests, one JSON line each
    stub: subprocess.Popen[bytes]

    def argv(self, *run_args: str, user: str = "nobody") -> list[str]:
        return runcopy.argv(self.root, self.config, *run_args, user=user)

    def run(self, *run_args: str, user: str = "nobody", timeout: float = 30) -> \
            subprocess.CompletedProcess[str]:
        return self.host.run(self.argv(*run_args, user=user), check=False, timeout=timeout)

    def probe(self, *steps: str, user: str = "nobody",
              direct: bool = False) -> list[dict[str, object]]:
        probe = [PY, str(self.root / "runprobe.py"), *steps]
        if direct:  # the positive control: the same program outside the sandbox
            argv = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                    *probe]
            done = self.host.run(argv, check=False)
        else:
            done = self.run("--", *probe, user=user)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def requests(self) -> list[dict[str, object]]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines()]
        except FileNotFoundError:
            return []


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, setpriv to uid 65534)")
    missing = netns.missing_tools(("ip", "nft", "tcpdump", "setpriv"))
    if missing or not os.path.exists(PY):
        pytest.skip(f"needs {missing or PY}")
    root = runcopy.make()
    log = root / "requests.jsonl"
    with netns.namespaces("nsrun-host", "nsrun-peer") as (host, peer):
        netns.veth(host, "up0", peer, "down0")
        host.ip("addr", "add", "203.0.113.2/24", "dev", "up0")
        host.ip("addr", "add", "2001:db8:77::2/64", "dev", "up0", "nodad")
        peer.ip("addr", "add", "203.0.113.1/24", "dev", "down0")
        peer.ip("addr", "add", "2001:db8:77::1/64", "dev", "down0", "nodad")
        host.ip("route", "add", "default", "via", "203.0.113.1")
        host.ip("-6", "route", "add", "default", "via", "2001:db8:77::1")
        # `ip netns exec` binds this over /etc/resolv.conf: the direct probe's DNS goes to the
        # peer, never to the machine's own resolver.
        etc = Path("/etc/netns") / host.name
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 203.0.113.1\n")
        stub = host.popen([PY, str(root / "socksstub.py"), "0", str(log),
                           *(f"{k}={v}" for k, v in NAMES.items())], stdout=subprocess.PIPE)
        assert stub.stdout is not None
        port = int(stub.stdout.readline().split()[1])
        config = root / "netspectre.toml"
        config.write_text(f"[tor]\nsocks_port = {port}\n")
        config.chmod(0o644)
        try:
            yield Env(host, peer, root, config, log, stub)
        finally:
            stub.kill()
            stub.wait()
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(etc, ignore_errors=True)


def _capture(env: Env, tmp_path: Path) -> Capture:
    return Capture(env.peer, "down0", tmp_path / "peer.pcap").start()


def _sent_by_host(env: Env, cap: Capture) -> list[netns.Packet]:
    """IP packets from the host, marker excluded (synced: everything up to now is on file)."""
    marker = 40999

    def send() -> None:
        env.host.run([PY, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                      f".sendto(b'm', ('203.0.113.1', {marker}))"])

    pkts = cap.sync(send, lambda p: p.dport == marker)
    return [p for p in pkts if p.src in ("203.0.113.2", "2001:db8:77::2") and p.dport != marker
            and p.proto in (netns.TCP, netns.UDP, netns.ICMP)]


LEAK_STEPS = (f"tcp:{TARGET4}:443", f"tcp:[{TARGET6}]:80", f"udp:{TARGET4}:4444",
              f"udp:[{TARGET6}]:4444", "resolve:echo.test")


@pytest.mark.parametrize("user", ["nobody", "root"])
def test_tcp_and_dns_go_to_tor_and_nothing_reaches_the_wire(env: Env, tmp_path: Path,
                                                            user: str) -> None:
    control = _capture(env, tmp_path)
    try:
        env.probe(*LEAK_STEPS, direct=True)
        seen = _sent_by_host(env, control)
    finally:
        control.stop()
    assert {p.dst for p in seen} >= {TARGET4, TARGET6}, "positive control: the probe leaks"

    before = len(env.requests())
    cap = Capture(env.peer, "down0", tmp_path / "run.pcap").start()
    try:
        out = env.probe(*LEAK_STEPS, user=user)
        leaked = _sent_by_host(env, cap)
    finally:
        cap.stop()
    assert leaked == []
    tcp4, tcp6, udp4, udp6, dns = out
    assert tcp4["ok"] and str(tcp4["banner"]).startswith(f"{TARGET4} 443 netspectre-run-")
    assert tcp6["ok"] and str(tcp6["banner"]).startswith(f"{TARGET6} 80 netspectre-run-")
    for udp in (udp4, udp6):  # refused before a packet exists, not a timeout
        assert not udp["ok"] and udp["errno"] == 101 and float(str(udp["seconds"])) < 0.5
    assert dns["addresses"] == ["203.0.113.80"]
    new = env.requests()[before:]
    assert {(r["command"], r["host"]) for r in new} == {
        ("connect", TARGET4), ("connect", TARGET6), ("resolve", "echo.test")}
    assert len({r["username"] for r in new}) == 1  # one run, one set of credentials


def test_onion_names_map_and_connect_by_name(env: Env) -> None:
    name = "a" * 56 + ".onion"
    before = len(env.requests())
    resolved, conn = env.probe(f"resolve:{name}", f"tcp:{name}:80")
    assert str(resolved["addresses"][0]).startswith("10.")  # type: ignore[index]
    assert conn["ok"] and str(conn["banner"]).startswith(f"{name} 80 ")
    assert [r["host"] for r in env.requests()[before:]] == [name]  # never resolved, connected


def test_unknown_names_fail_and_dns_to_any_server_is_answered(env: Env) -> None:
    script = ("import socket,sys; sys.path.insert(0, '" + str(env.root) + "'); "
              "from netspectre import dnswire; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
              " s.settimeout(3); s.sendto(dnswire.query('echo.test', 7), ('198.51.100.53', 53));"
              " r=dnswire.parse(s.recv(512), 7); print(r.rcode, r.answers)")
    done = env.run("--", PY, "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 ['203.0.113.80']"
    (nx,) = env.probe("resolve:nonexistent.test")
    assert not nx["ok"]


@pytest.mark.parametrize("user", ["nobody", "root"])
def test_no_raw_packet_or_ping_socket_and_no_capability(env: Env, user: str) -> None:
    raw, packet, ping, caps, uid = env.probe("raw", "packet", "ping", "caps", "uid", user=user)
    for refused in (raw, packet, ping):
        assert not refused["ok"] and refused["errno"] in (1, 13), refused
    assert set(caps["caps"].values()) == {"0000000000000000"}  # type: ignore[attr-defined]
    assert (uid["uid"], uid["gid"]) == (NOBODY, NOBODY)


@pytest.mark.parametrize("user", ["nobody", "root"])
def test_the_program_cannot_undo_its_sandbox(env: Env, user: str) -> None:
    """Trying to break out: flush the namespace's ruleset (then TCP must still reach "Tor", not
    fail for lack of a redirect), and ptrace PID 1, the init that holds the capabilities over
    the namespace. Control for the ptrace: the program may trace its own child."""
    nft = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert nft is not None
    probe = f"{PY} {env.root / 'runprobe.py'}"
    script = (f"{nft} flush ruleset; echo flush=$?; {probe} tcp:{TARGET4}:443 ptrace:1; "
              f"sleep 30 & {probe} ptrace:$!; kill $!")
    done = env.run("--", "sh", "-c", script, user=user)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] != "flush=0", done.stdout
    tcp, init, child = (json.loads(line) for line in lines[1:])
    assert tcp["ok"] and str(tcp["banner"]).startswith(f"{TARGET4} 443 "), tcp
    assert not init["ok"] and init["errno"] == 1, init  # EPERM
    assert child["ok"], child


def test_exit_status_and_missing_command(env: Env) -> None:
    assert env.run("--", "sh", "-c", "exit 7").returncode == 7
    assert env.run("--", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    missing = env.run("--", "no-such-command-here")
    assert missing.returncode == 127 and "command not found" in missing.stderr


def test_concurrent_runs_get_their_own_credentials_unless_shared(env: Env) -> None:
    def banners(*extra: str) -> list[str]:
        probe = [PY, str(env.root / "runprobe.py")]
        procs = [subprocess.Popen(
            env.host.argv(env.argv(*extra, "--", *probe, f"tcp:{TARGET4}:{p}")),
            stdout=subprocess.PIPE, text=True) for p in (81, 82)]
        return [json.loads(p.communicate(timeout=30)[0])["banner"].split()[2] for p in procs]

    own = banners()
    assert own[0] != own[1]
    shared = banners("--shared")
    assert shared[0] == shared[1] == "netspectre-run-shared"


def _run_pids(env: Env, marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd:
                found.append(int(entry))
    return found


def _in_namespace(kind: str, inode: int) -> list[int]:
    """Every process whose `kind` namespace (pid, net) is the one with this inode."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/{kind}").st_ino == inode:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_kill9_of_run_leaves_no_process(env: Env) -> None:
    marker = netns.unique_name("nsrun-sleep")
    proc = subprocess.Popen(env.host.argv(env.argv("--", "sh", "-c", f"sleep 300; : {marker}")))
    # ip netns exec, setpriv and env exec one another: proc.pid becomes the relay itself.
    wait_for(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:3] == [
        PY.encode(), b"-m", b"netspectre"], what="the relay")
    shell = wait_for(lambda: [p for p in _run_pids(env, marker)
                              if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sh\0")],
                     what="the run's program")
    pid_ns = os.stat(f"/proc/{shell[0]}/ns/pid").st_ino  # type: ignore[index]
    net_ns = os.stat(f"/proc/{shell[0]}/ns/net").st_ino  # type: ignore[index]
    assert len(_in_namespace("pid", pid_ns)) >= 3  # init, sh, sleep
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: not _in_namespace("pid", pid_ns) and not _in_namespace("net", net_ns),
             what="every process of the run, and its namespaces, to be gone")
    proc.wait(timeout=10)


def test_sigterm_reaches_the_program(env: Env) -> None:
    script = ("import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: (print('got TERM',"
              " flush=True), sys.exit(3))); print('ready', flush=True); time.sleep(30)")
    proc = subprocess.Popen(env.host.argv(env.argv("--", PY, "-c", script)),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGTERM)  # the relay (see the kill -9 test)
    assert proc.stdout.readline().strip() == "got TERM"
    assert proc.wait(timeout=10) == 3


def test_terminal_ctrl_c_reaches_the_program_and_io_is_unbuffered(env: Env) -> None:
    script = ("import signal,sys; signal.signal(signal.SIGINT, lambda *a: (print('got INT',"
              " flush=True), sys.exit(5))); [print('echo', l.strip(), flush=True) for l in "
              "iter(sys.stdin.readline, '')]")
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("ip", env.host.argv(env.argv("--", PY, "-c", script)))
    seen = b""

    def read_until(needle: bytes) -> bool:
        nonlocal seen
        deadline = time.monotonic() + 20
        while needle not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        return needle in seen

    os.write(fd, b"hello\n")
    assert read_until(b"echo hello"), seen
    os.write(fd, b"\x03")  # Ctrl-C: the terminal signals the foreground group
    assert read_until(b"got INT"), seen
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5
    os.close(fd)


def test_no_tor_is_a_one_line_error_and_nothing_starts(env: Env, tmp_path: Path) -> None:
    config = env.root / "notor.toml"
    config.write_text("[tor]\nsocks_port = 1\n")
    config.chmod(0o644)
    argv = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "env",
            f"PYTHONPATH={env.root}", PY, "-m", "netspectre", "--config", str(config), "run",
            "--", "true"]
    done = env.host.run(argv, check=False)
    assert done.returncode == 7
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("netspectre: error: no Tor SocksPort at 127.0.0.1:1")
    assert lines[1].startswith("hint: start it: sudo netspectre start --no-firewall")
    as_nobody_user = env.run("--user", "root", "--", "true")
    assert as_nobody_user.returncode == 4 and "--user needs root" in as_nobody_user.stderr


def test_resolving_daemons_sockets_are_hidden(env: Env) -> None:
    """systemd-resolved's varlink socket, nscd's, avahi's and the D-Bus system bus: reachable
    from outside (control), never from inside the run."""
    run_argv = env.argv("--")
    done = env.host.run(["unshare", "-m", "--propagation", "private", PY,
                         str(env.root / "runsockets.py"), *run_argv], check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert all(step["ok"] for step in result["direct"]), result["direct"]
    assert all(n >= 1 for n in result["direct_accepted"].values()), result
    assert not any(step["ok"] for step in result["inside"]), result["inside"]
    assert set(result["from_sandbox"].values()) == {0}


def test_rtnetlink_setup_equals_the_ip_batches() -> None:
    """run/rtnl.py does what netsetup.ip_batches says, as `ip -batch` would (each in a fresh
    user+net namespace of its own, compared by `ip`'s own listing)."""
    listing = ("ip -4 rule; ip -6 rule; ip -4 route show table all; ip -6 route show table 100;"
               " ip -o link show lo")
    batches = "; ".join(f"printf '{b}' | ip {f} -batch -" for f, b in netsetup.ip_batches(True))
    by_ip = subprocess.run(["unshare", "-rn", "sh", "-c", f"{batches}; {listing}"],
                           capture_output=True, text=True, check=True).stdout
    code = ("import subprocess, sys; sys.path.insert(0, {!r}); from netspectre.run import rtnl,"
            " netsetup; rtnl.apply(True, netsetup.ROUTE_TABLE, netsetup.DNS_PORT);"
            " print(subprocess.run(['sh', '-c', {!r}], capture_output=True, text=True).stdout,"
            " end='')").format(str(REPO / "src"), listing)
    by_rtnl = subprocess.run(["unshare", "-rn", PY, "-c", code], capture_output=True, text=True,
                             check=True).stdout
    assert "ipproto tcp lookup 100" in by_ip and by_rtnl == by_ip
