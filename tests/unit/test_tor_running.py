"""tor/running, managed and bootstrap without a tor: messages, log digests, newnym refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspectre import config
from netspectre.errors import TorError
from netspectre.paths import Paths
from netspectre.tor import bootstrap, managed, running
from netspectre.tor.layout import Files
from netspectre.tor.record import Endpoints, TorRecord

CFG = config.parse("[tor]\ntrans_port = 39040\ndns_port = 39053\nsocks_port = 39060\n")
END = Endpoints.of(CFG)


def paths(tmp_path: Path) -> Paths:
    return Paths(run=tmp_path / "run", lib=tmp_path / "lib", daemon=tmp_path / "run-tor")


def test_status_when_nothing_runs(tmp_path: Path) -> None:
    idle = running.status(END, paths(tmp_path), None)
    assert idle.message == "Tor is not running"
    assert not idle.up and idle.bootstrap is None
    active = running.status(END, paths(tmp_path), TorRecord(END, supervisor_pid=1))
    assert active.message == "Tor is down — traffic blocked"
    assert active.to_json()["mode"] == "managed" and "control" not in active.to_json()


def test_stop_with_nothing_to_stop_is_quiet(tmp_path: Path) -> None:
    managed.stop(None, paths(tmp_path))
    system = Endpoints.of(config.parse('[tor]\nmode = "system"\n'))
    managed.stop(TorRecord(system), paths(tmp_path))


def test_newnym_without_tor_says_so(tmp_path: Path) -> None:
    with pytest.raises(TorError, match="cannot connect to tor's control port") as err:
        running.newnym(END, paths(tmp_path))
    assert err.value.hint is not None and "netspectre status" in err.value.hint


def test_complaint_prefers_errors(tmp_path: Path) -> None:
    files = Files.of(paths(tmp_path))
    files.daemon.mkdir(parents=True)
    files.run.mkdir(parents=True)
    files.supervisor_log.write_text(
        "Nov 27 15:46:28.062 [warn] TestingTorNetwork is set.\n"
        "Nov 27 15:46:28.063 [err] Reading config failed--see warnings above.\n"
    )
    files.notice_log.write_text("Nov 27 15:46:29.000 [warn] Could not bind to 127.0.0.1:9040\n")
    assert bootstrap.complaint(files) == "Reading config failed--see warnings above."
    files.supervisor_log.write_text("")
    assert bootstrap.complaint(files) == "Could not bind to 127.0.0.1:9040"
