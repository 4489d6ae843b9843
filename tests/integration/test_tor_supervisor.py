"""The supervisor's restart loop with a stand-in tor (a shell script): no root, no tor needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netspectre import proc
from netspectre.paths import Paths
from netspectre.tor import process
from netspectre.tor.layout import Files

SRC = Path(__file__).resolve().parents[2] / "src"


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def start(files: Files, fake_tor: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from netspectre.tor import supervisor\n"
        "from netspectre.tor.layout import Files\n"
        f"files = Files(run=Path({str(files.run)!r}), data=Path({str(files.data)!r}), "
        f"daemon=Path({str(files.daemon)!r}))\n"
        "with open(files.supervisor_log, 'a') as log:\n"
        f"    sys.exit(supervisor.run(files, tor={str(fake_tor)!r}, log=log))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(SRC))
    )


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    f = Files.of(Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "run-tor"))
    f.run.mkdir(parents=True)
    f.torrc.write_text("# not read by the stand-in\n")
    yield f


def fake(tmp_path: Path, body: str) -> Path:
    """A stand-in tor in Python: it keeps its argv (-f <torrc>) visible in /proc, like tor."""
    script = tmp_path / "tor"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    script.chmod(0o755)
    return script


def test_restarts_a_killed_tor_and_stops_it_on_sigterm(tmp_path: Path, files: Files) -> None:
    tor = fake(tmp_path, 'print("fake tor", *sys.argv[1:], flush=True)\ntime.sleep(60)')
    sup = start(files, tor)
    try:
        wait_until(lambda: process.read_pid(files.tor_pid), 10, "the first tor")
        first = process.read_pid(files.tor_pid)
        assert first is not None and process.is_our_tor(first, files)
        assert process.read_pid(files.supervisor_pid) == sup.pid
        wait_until(lambda: "fake tor -f" in files.supervisor_log.read_text(), 10, "its output")
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        wait_until(lambda: process.read_pid(files.tor_pid) not in (None, first), 10, "a new tor")
        assert time.monotonic() - t0 < 2.0  # first backoff is 0.2 s
        second = process.read_pid(files.tor_pid)
        assert second is not None and proc.alive(second)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(15) == 0
        assert not proc.alive(second)
        assert not files.tor_pid.exists() and not files.supervisor_pid.exists()
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    log = files.supervisor_log.read_text()
    assert f"fake tor -f {files.torrc} --defaults-torrc /dev/null" in log
    assert "exited with signal 9" in log and "restarting in 0.2 s" in log


def test_backoff_grows_and_sigterm_interrupts_it(tmp_path: Path, files: Files) -> None:
    tor = fake(tmp_path, "sys.exit(1)")
    sup = start(files, tor)
    try:
        wait_until(lambda: "restarting in 1.6 s" in files.supervisor_log.read_text()
                   if files.supervisor_log.exists() else False, 15, "the backoff to grow")
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(5) == 0
        assert time.monotonic() - t0 < 1.0  # not after the backoff
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    log = files.supervisor_log.read_text()
    assert "exited with status 1" in log
    assert [w for w in ("0.2 s", "0.4 s", "0.8 s", "1.6 s") if f"restarting in {w}" in log] == [
        "0.2 s", "0.4 s", "0.8 s", "1.6 s"]
