"""Pid files and "is this process ours?" on fixture /proc trees; system-mode torrc checks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from netspectre import config, proc
from netspectre.paths import Paths
from netspectre.tor import process, systemtor
from netspectre.tor.layout import Files

FILES = Files.of(Paths(run=Path("/run/netspectre"), lib=Path("/var/lib/netspectre"),
                       daemon=Path("/run/netspectre-tor/host")))


def fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    return root


def add(root: Path, pid: int, argv: list[str], *, state: str = "S", cwd: str = "/") -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "stat").write_text(f"{pid} (x y) {state} 1 {pid} {pid} 0 -1\n")
    (d / "comm").write_text(Path(argv[0]).name + "\n")
    (d / "status").write_text(f"Name:\t{Path(argv[0]).name}\nUid:\t102\t102\t102\t102\n")
    (d / "cwd").symlink_to(cwd)
    (d / "fd").mkdir()


def test_pid_files(tmp_path: Path) -> None:
    path = tmp_path / "tor.pid"
    assert process.read_pid(path) is None
    process.write_pid(path, 4242)
    assert process.read_pid(path) == 4242
    for junk in ("", "abc", "1", "-5"):
        path.write_text(junk)
        assert process.read_pid(path) is None
    process.remove(path)
    process.remove(path)  # twice is fine


def test_ours_by_argv_and_cwd(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    add(root, 100, ["/usr/bin/tor", "-f", str(FILES.torrc), "--defaults-torrc", "/dev/null"])
    add(root, 101, ["/usr/bin/tor", "-f", "/etc/tor/torrc"])  # the system tor
    add(root, 102, ["/usr/bin/python3", "-m", "netspectre", "_supervise"], cwd=str(FILES.run))
    add(root, 103, ["/usr/bin/python3", "-m", "netspectre", "_supervise"], cwd="/run/other")
    add(root, 104, ["/usr/bin/tor", "-f", str(FILES.torrc)], state="Z")
    assert process.is_our_tor(100, FILES, root)
    assert not process.is_our_tor(101, FILES, root)
    assert process.is_our_supervisor(102, FILES, root)
    assert not process.is_our_supervisor(103, FILES, root)  # another namespace's supervisor
    assert not process.is_our_supervisor(100, FILES, root)
    assert proc.alive(100, root) and not proc.alive(104, root)
    assert not proc.alive(999, root)


def row(n: int, local: str, remote: str, state: str, inode: int) -> str:
    """A /proc/net/tcp line (as the kernel prints it, spacing aside)."""
    queues = "00000000:00000000 00:00000000 00000000"
    return f"{n:4}: {local} {remote} {state} {queues} 102 0 {inode} 1\n"


def test_port_owners(tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    (root / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue ... uid timeout inode\n"
    (root / "net" / "tcp").write_text(
        header
        + row(0, "0100007F:2350", "00000000:0000", "0A", 5551)
        + row(1, "0100007F:2350", "0100007F:D431", "01", 5552)
    )
    (root / "net" / "udp").write_text(header + row(0, "0100007F:235D", "00000000:0000", "07", 6661))
    add(root, 812, ["/usr/bin/tor"])
    add(root, 900, ["/usr/bin/ssh"])
    (root / "812" / "fd" / "3").symlink_to("socket:[5551]")
    (root / "812" / "fd" / "4").symlink_to("socket:[6661]")
    (root / "900" / "fd" / "3").symlink_to("socket:[5552]")  # an established connection only
    assert process.port_owners(9040, udp=False, proc=root) == [812]
    assert process.port_owners(9053, udp=True, proc=root) == [812]
    assert process.port_owners(9060, udp=False, proc=root) == []
    assert process.describe(812, root) == "tor (pid 812, uid 102)"


def test_terminate_only_what_verifies() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process.terminate(child.pid, lambda pid: False, timeout=1)  # not ours: left alone
        assert child.poll() is None
        assert process.terminate(child.pid, lambda pid: pid == child.pid, timeout=5)
        assert child.wait(5) == -15
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert process.terminate(child.pid, lambda pid: True)  # already gone: fine


def test_terminate_all_at_once_within_one_grace_period() -> None:
    """The lab ends a dozen daemons in one go: one SIGTERM each, one wait, no pid skipped."""
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(4)]
    try:
        mine = {c.pid for c in children[:3]}
        start = time.monotonic()
        assert proc.terminate_all(mine, lambda pid: pid in mine, timeout=5) == set()
        assert time.monotonic() - start < 4
        assert [c.wait(5) for c in children[:3]] == [-15] * 3
        assert children[3].poll() is None  # never named
        assert proc.terminate_all([children[3].pid], lambda pid: False) == set()  # not ours
        assert children[3].poll() is None
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()


def test_terminate_escalates_to_sigkill() -> None:
    child = subprocess.Popen([
        sys.executable, "-c",
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
    ], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert process.terminate(child.pid, lambda pid: True, timeout=0.3)
        assert child.wait(5) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- system mode ----------------------------------------------------------------------------

CFG = config.parse("")
GOOD_LISTENERS = {
    "net/listeners/trans": '"127.0.0.1:9040"',
    "net/listeners/dns": '"127.0.0.1:9053"',
}
GOOD_CONF = {"VirtualAddrNetworkIPv4": ["10.192.0.0/10"], "AutomapHostsOnResolve": ["1"]}


def test_system_tor_with_everything() -> None:
    assert systemtor.missing(CFG, GOOD_LISTENERS, GOOD_CONF) == []


def test_system_tor_debian_default_lacks_all_four() -> None:
    listeners = {"net/listeners/trans": "", "net/listeners/dns": ""}
    conf = {"VirtualAddrNetworkIPv4": ["127.192.0.0/10"], "AutomapHostsOnResolve": ["0"]}
    assert systemtor.missing(CFG, listeners, conf) == [
        "TransPort 127.0.0.1:9040",
        "DNSPort 127.0.0.1:9053",
        "VirtualAddrNetworkIPv4 10.192.0.0/10",
        "AutomapHostsOnResolve 1",
    ]
    error = systemtor.refuse(systemtor.missing(CFG, listeners, conf), how="x")
    assert error.hint is not None and "\n    TransPort 127.0.0.1:9040\n" in error.hint
    assert "/etc/tor/torrc" in error.hint


def test_system_tor_on_other_port_or_address() -> None:
    listeners = {"net/listeners/trans": '"127.0.0.1:9041"',
                 "net/listeners/dns": '"0.0.0.0:9053" "[::]:9053"'}
    assert systemtor.missing(CFG, listeners, GOOD_CONF) == ["TransPort 127.0.0.1:9040"]


def test_system_tor_port_fallback() -> None:
    assert systemtor.from_ports(CFG, trans=True, dns=False) == ["DNSPort 127.0.0.1:9053"]
