"""#12 item 3: `netspectre watch` names a refused attempt's uid, program, class and destination
within 2 s, shows nothing without one (positive control), and ends with status 0 on Ctrl-C."""

from __future__ import annotations

import json
import os
import pwd
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.topology import WEB, Topology, netspectre_argv, netspectre_env

pytestmark = pytest.mark.root

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    try:
        s.sendto(b"quic-ish", (sys.argv[1], int(sys.argv[2])))
    except OSError:
        pass
    time.sleep(0.2)
time.sleep(2)  # a real QUIC client keeps its socket: the program is still findable
"""


class Watch:
    def __init__(self, t: Topology) -> None:
        self.proc = subprocess.Popen(t.client.argv(netspectre_argv(None, "watch")),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=netspectre_env())
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait(self, pred: Any, timeout: float) -> dict[str, Any] | None:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                obj = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if pred(obj):
                return obj
        return None

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)  # the ip-netns-exec wrapper execs: the watch
        rc = self.proc.wait(timeout=10)
        assert self.proc.stderr is not None
        return rc, self.proc.stderr.read()


@pytest.fixture
def leaky_app() -> Iterator[Path]:
    """python3 under the name `leaky-app` (what /proc/<pid>/comm shows), runnable by nobody."""
    work = Path(tempfile.mkdtemp(prefix="netspectre-watch-"))
    os.chmod(work, 0o755)
    app = work / "leaky-app"
    shutil.copy2(os.path.realpath(sys.executable), app)
    (work / "send.py").write_text(SENDER)
    try:
        yield app
    finally:
        shutil.rmtree(work)


def _refused(uid: int, program: str, port: int) -> Any:
    return lambda o: (o.get("type") == "refused" and o["uid"] == uid
                      and o["program"] == program and o["dst"] == WEB and o["port"] == port)


@pytest.mark.parametrize("backend", ["nft", "iptables-nft"])
def test_watch_names_the_program_of_a_refused_attempt(clean: Topology, backend: str,
                                                      leaky_app: Path) -> None:
    t = clean
    t.start(t.config(backend))
    watch = Watch(t)
    try:
        first = watch.wait(lambda o: o.get("type") == "summary", 10)
        assert first is not None, "no summary frame from watch"
        assert "blocked_udp" in first["counters"], first
        nobody = pwd.getpwnam("nobody").pw_uid
        # Control: without the attempt no such line (the kernel's own IPv6 chatter may show).
        assert watch.wait(_refused(nobody, "leaky-app", 443), 1.5) is None
        sender = t.client.popen(["runuser", "-u", "nobody", "--", str(leaky_app),
                                 str(leaky_app.parent / "send.py"), WEB, "443"])
        sent = time.monotonic()
        seen = watch.wait(_refused(nobody, "leaky-app", 443), 2.0)
        elapsed = time.monotonic() - sent
        sender.wait(timeout=10)
        assert seen is not None, "watch did not name leaky-app's UDP 443 attempt within 2 s"
        assert seen["class"] == "blocked_udp" and seen["label"] == "QUIC", seen
        assert elapsed < 2.0
    finally:
        rc, err = watch.interrupt()
    assert rc == 0, err


def test_watch_refuses_when_not_active(clean: Topology) -> None:
    done = subprocess.run(t_argv := clean.client.argv(netspectre_argv(None, "watch")),
                          capture_output=True, text=True, timeout=30, env=netspectre_env())
    assert done.returncode != 0, t_argv
    assert "not active" in done.stderr and "hint: start it first" in done.stderr
