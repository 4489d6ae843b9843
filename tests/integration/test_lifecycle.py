"""Issue 2, points 2 and 7: stop from any state, sysctls put back exactly, the start lock, and
`kill -9` of `start` at sampled instructions (fail closed, then a clean stop)."""

from __future__ import annotations

import ast
import functools
import json
import linecache
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import wait_for
from tests.support.topology import (
    BACKENDS,
    DNS_OUT,
    HERE,
    WEB,
    WEB6,
    Topology,
    netspectre_argv,
    netspectre_env,
    outgoing,
    show,
)

pytestmark = pytest.mark.root

TRACEKILL = HERE / "tracekill.py"
MIN_KILL_POINTS = 15  # ~20 sampled: every subprocess call, state and sysctl write, plus a spread


def _state(t: Topology) -> Path:
    return t.state_dir / "state.json"


# --- sysctls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sysctls_restored_exactly(clean: Topology, backend: str) -> None:
    t = clean
    t.client.set_sysctl("net.ipv6.conf.gw0.disable_ipv6", "1")  # off before we came
    t.client.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    before = t.ipv6_sysctls()
    assert before["net/ipv6/conf/all/disable_ipv6"] == "0"
    cfg = t.config(backend, ipv6="disable")
    t.start(cfg)
    during = t.ipv6_sysctls()
    assert during["net/ipv6/conf/all/disable_ipv6"] == "1"
    assert during["net/ipv6/conf/up0/disable_ipv6"] == "1"
    restart = t.netspectre(cfg, "restart")
    assert restart.rc == 0, str(restart)
    t.stop(cfg)
    assert t.ipv6_sysctls() == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_sysctls_all_disabled_before(clean: Topology, backend: str) -> None:
    t = clean
    t.client.set_sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    t.client.set_sysctl("net.ipv6.conf.default.disable_ipv6", "1")
    t.client.set_sysctl("net.ipv6.conf.lo.disable_ipv6", "0")
    before = t.ipv6_sysctls()
    cfg = t.config(backend, ipv6="disable")
    t.start(cfg)
    t.stop(cfg)
    assert t.ipv6_sysctls() == before


# --- stop from any state ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_twice(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    first, second = t.stop(cfg), t.stop(cfg)
    assert first.data["was_active"] is True
    assert second.data["was_active"] is False
    assert t.ours_present() == []
    assert not _state(t).exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_without_state_removes_rules(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    _state(t).unlink()
    assert t.ours_present(), "rules should still be in force without the state file"
    run = t.stop(cfg)
    assert any("no state" in n for n in run.data["notes"]), run.data
    assert t.ours_present() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_stale_state_is_reported_and_cleaned(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    data = json.loads(_state(t).read_text())
    data["boot_id"] = "00000000-0000-0000-0000-000000000000"
    _state(t).write_text(json.dumps(data))
    run = t.stop(cfg)
    assert any("previous boot" in n for n in run.data["notes"]), run.data
    assert t.ours_present() == []
    assert not _state(t).exists()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "phase": "active"}'],
                         ids=["corrupt", "unknown-version"])
def test_unreadable_state_needs_force(clean: Topology, backend: str, content: str) -> None:
    t = clean
    cfg = t.config(backend)
    t.start(cfg)
    _state(t).write_text(content)
    refused = t.netspectre(cfg, "stop")
    assert refused.rc != 0, str(refused)
    assert "hint:" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert t.ours_present(), "a refused stop must leave the blocking rules in force"
    forced = t.stop(cfg, "--force")
    assert t.ours_present() == [], str(forced)
    assert not _state(t).exists()


# --- the start lock --------------------------------------------------------------------------


def _locked_line() -> tuple[str, int]:
    """state.py's line right after the lock is taken (the `yield` inside `locked`)."""
    import inspect

    from netspectre import state

    lines, first = inspect.getsourcelines(state.locked)
    for offset, line in enumerate(lines):
        if line.strip() == "yield":
            return "netspectre/state.py", first + offset
    raise AssertionError("no `yield` in state.locked")


def _tracekill(t: Topology, cfg: Path, *flags: str, command: str = "start",
               **kwargs: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, str(TRACEKILL), *flags, "--",
            *netspectre_argv(cfg, command)[3:]]
    return subprocess.Popen(t.client.argv(argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=netspectre_env(), **kwargs)


def _process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_start_meets_the_lock(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    where, line = _locked_line()
    first = _tracekill(t, cfg, "--stop-at", f"{where}:{line}")
    try:
        wait_for(lambda: _process_state(first.pid) in ("T", "gone"), timeout=20,
                 what="first start to hold the lock")
        assert _process_state(first.pid) == "T", first.communicate()
        second = t.netspectre(cfg, "start")
        assert second.rc != 0, str(second)
        assert "lock" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert t.ours_present()


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_starts_exactly_one_wins(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend)
    argv = t.client.argv(netspectre_argv(cfg, "start"))
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=netspectre_env()) for _ in range(2)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    winners = [r for r in results if r[0] == 0]
    losers = [r for r in results if r[0] != 0]
    assert len(winners) == 1, results
    assert "lock" in losers[0][2] or "already active" in losers[0][2], losers[0][2]


# --- kill -9 of `start` ----------------------------------------------------------------------

INTERESTING = ("subprocess.run(", "subprocess.Popen(", "os.replace(", "os.write(",
               "write_text(", "fcntl.flock(")
SPREAD = 5


@functools.cache
def _statement_end(path: str, line: int) -> int:
    """Last line of the statement that starts at `line` (calls spread over several lines)."""
    tree = ast.parse(Path(path).read_text())
    ends = [n.end_lineno for n in ast.walk(tree)
            if isinstance(n, ast.stmt) and n.lineno == line and n.end_lineno is not None]
    return max(ends, default=line)


def _sample(events: list[tuple[str, int, int]], spread: int = SPREAD) -> list[int]:
    """Kill points (1-based event numbers): just before and just after every subprocess call,
    state write, sysctl write and lock (the last event of the statement, and the next line of
    the same frame), plus `spread` points evenly over the whole run (imports, config …)."""
    marks: set[int] = set()
    for i, (path, line, depth) in enumerate(events, start=1):
        if not any(s in linecache.getline(path, line) for s in INTERESTING):
            continue
        last = _statement_end(path, line)
        after = next((j for j in range(i + 1, len(events) + 1)
                      if events[j - 1][2] <= depth
                      and not (events[j - 1][0] == path and line <= events[j - 1][1] <= last)),
                     None)
        nxt = next((j for j in range(i + 1, len(events) + 1) if events[j - 1][2] <= depth),
                   None)
        if nxt is not None and nxt != after:
            continue  # still evaluating the arguments: a later event is the last one before
        marks.add(i)
        if after is not None and "os.write(" not in linecache.getline(path, line):
            marks.add(after)  # (after os.write comes os.fsync: still before os.replace)
    total = len(events)
    for k in range(1, spread + 1):
        marks.add(max(1, round(k * total / (spread + 1))))
    return sorted(marks)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill9_during_start(clean: Topology, backend: str) -> None:
    t = clean
    cfg = t.config(backend, ipv6="disable")
    sysctls_before = t.ipv6_sysctls()
    t.start(cfg)  # a first start/stop leaves what every later one finds (e.g. empty tables)
    t.stop(cfg)
    t.reset()
    record = t.workdir / f"events-{backend}.json"
    counted = _tracekill(t, cfg, "--record", str(record))
    _, err = counted.communicate(timeout=60)
    assert counted.returncode == 0, err
    events = json.loads(record.read_text())
    t.stop(cfg)
    assert t.ipv6_sysctls() == sysctls_before
    t.reset()
    sysctls_before = t.ipv6_sysctls()
    points = _sample(events)
    assert len(points) >= MIN_KILL_POINTS, points
    in_force = 0
    leftovers: dict[int, list[str]] = {}
    seen: set[str] = set()
    windows: dict[int, tuple[float, float, str]] = {}
    cap = t.capture("kill9")
    for n in points:
        path, line, _ = events[n - 1]
        k = sum(1 for e in events[:n] if e[0] == path and e[1] == line)
        victim = _tracekill(t, cfg, "--kill-at", f"{path}:{line}:{k}")
        _, err = victim.communicate(timeout=60)
        code = linecache.getline(path, line).strip()
        where = f"kill at event {n}/{len(events)} ({path}:{line} #{k}: {code})"
        assert victim.returncode == -signal.SIGKILL, f"{where}: exited {victim.returncode} {err}"
        if t.ours_present():
            in_force += 1
            begin = time.time()
            t.probe({
                "tcp": (t.root, "tcp", {"dst": WEB, "port": 80, "timeout": 0.3}),
                "udp": (t.root, "udp", {"dst": WEB, "port": 3478, "timeout": 0.2}),
                "dns": (t.nobody, "dns", {"dst": DNS_OUT, "name": "k.example", "timeout": 0.2}),
                "icmp": (t.root, "icmp", {"dst": WEB, "timeout": 0.2}),
                "tcp6": (t.root, "tcp", {"dst": WEB6, "port": 80, "timeout": 0.2}),
                "guest": (t.guest_agent, "udp", {"dst": WEB, "port": 443, "timeout": 0.2}),
            })
            windows[n] = (begin, time.time(), where)
        stop = t.netspectre(cfg, "stop")
        assert stop.rc == 0, f"{where}: {stop}"
        assert t.ours_present() == [], f"{where}: rules left after stop"
        assert t.ipv6_sysctls() == sysctls_before, f"{where}: sysctls not restored"
        assert not _state(t).exists(), f"{where}: state file left"
        left = list(t.state_dir.iterdir()) if t.state_dir.exists() else []
        extra = {p.name for p in left if p.name != "lock"} - seen
        if extra:
            leftovers[n] = sorted(extra)
            seen |= extra
    packets = t.finish(cap)
    open_holes = []
    for begin, end, where in windows.values():
        leaked = outgoing(packets, since=begin, until=end)
        if leaked:
            open_holes.append(f"{where}: {len(leaked)} packets, e.g.\n{show(leaked, 4)}")
    assert not open_holes, "rules partly in force but not blocking after:\n" + "\n".join(
        open_holes)
    t.reset()
    assert in_force > 0, "no kill point fell after the ruleset was applied"
    assert not leftovers, f"stop left files in {t.state_dir} (kill point: new files): {leftovers}"
