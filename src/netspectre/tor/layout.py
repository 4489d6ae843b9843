"""Where the managed tor's files live under paths.tor_run and paths.tor_data. Pure.

tor_run itself is root's (the torrc tor reads as root, the pid files `stop` trusts, the
supervisor's log); paths.daemon (outside the 0700 runtime dir) belongs to the tor user, because
tor creates its control socket, cookie, notice log and own pid file there after dropping
privileges, and refuses a ControlSocket directory that the tor user does not own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netspectre.paths import Paths


@dataclass(frozen=True)
class Files:
    run: Path
    data: Path
    daemon: Path

    @classmethod
    def of(cls, paths: Paths) -> Files:
        return cls(run=paths.tor_run, data=paths.tor_data, daemon=paths.daemon)

    @property
    def torrc(self) -> Path:
        return self.run / "torrc"

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisor.pid"

    @property
    def tor_pid(self) -> Path:
        return self.run / "tor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.run / "supervisor.log"

    @property
    def control(self) -> Path:
        return self.daemon / "control"

    @property
    def cookie(self) -> Path:
        return self.daemon / "control.authcookie"

    @property
    def notice_log(self) -> Path:
        return self.daemon / "notice.log"

    @property
    def daemon_pid(self) -> Path:
        return self.daemon / "tor.pid"
