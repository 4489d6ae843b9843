"""The systemd unit that protects from boot: rendered here (pure), written by `install`.

Design (issue #5), against NetSpectre's unit which starts After=network-online.target (so the
machine talks in the clear until then) and Requires=tor.service with ExecStop=… stop (so
stopping or upgrading tor restores the clearnet):

- DefaultDependencies=no and Before=network-pre.target: the ruleset is in force before any
  network is configured; After=systemd-sysctl.service so that sysctl.d cannot re-enable IPv6
  behind us.
- No Requires=/BindsTo= on tor, and no ExecStop=: nothing in the unit lifts the firewall. A
  stopped unit (or a stopped tor) leaves the kill switch closed; only `netspectre stop` opens it.
- `start --boot` does not wait for Tor (the network is not up yet) and, if start fails, still
  applies the blocking ruleset (see commands.boot).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from netspectre import fsutil

UNIT = "netspectre.service"
UNIT_DIR = "etc/systemd/system"  # relative to the root: the administrator's unit directory


def render(command: Sequence[str]) -> dict[str, str]:
    """{file name: text} for the unit(s) that run `command` (argv of netspectre) at boot."""
    start = shlex.join([*command, "start", "--boot"])
    return {
        UNIT: f"""\
# Written by netspectre (`netspectre enable` or install.sh); `netspectre disable` removes it.
[Unit]
Description=netspectre: all traffic through Tor, kill switch closed from boot
Documentation=man:netspectre(8)
DefaultDependencies=no
After=local-fs.target systemd-sysctl.service
Before=network-pre.target shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
# No ExecStop: stopping this unit (or tor) never opens the firewall; `netspectre stop` does.
ExecStart={start}
TimeoutStartSec=120

[Install]
WantedBy=sysinit.target
""",
    }


def command_for(argv0: str, executable: str, config_path: str | None) -> list[str]:
    """The argv that runs this same netspectre (console script or `python -m netspectre`)."""
    if os.path.basename(argv0) == "netspectre":
        cmd = [os.path.abspath(argv0)]
    else:
        cmd = [executable, "-m", "netspectre"]
    if config_path:
        cmd += ["--config", os.path.abspath(config_path)]
    return cmd


def install(root: str, command: Sequence[str]) -> list[str]:
    """Write the unit files under root; return the paths written (install.sh's manifest)."""
    directory = os.path.join(root, UNIT_DIR)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = []
    for name, text in render(command).items():
        path = os.path.join(directory, name)
        fsutil.write_atomic(path, text, mode=0o644)
        written.append(path)
    return written


def remove(root: str) -> list[str]:
    """Delete our unit files under root; return those that existed."""
    removed = []
    for name in render(["netspectre"]):
        path = os.path.join(root, UNIT_DIR, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


@dataclass(frozen=True)
class UnitReport:
    """enable / disable: the unit files written or removed, and what happened now."""

    enabled: bool
    paths: tuple[str, ...]
    now: bool | None = None  # with --now: started (enable) / stopped (disable)
    note: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {("unit" if self.enabled else "removed"): list(self.paths),
                     "at_boot": self.enabled}
        if self.now is not None:
            out["started" if self.enabled else "stopped"] = self.now
        else:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Written:
    """`_units`: the files written."""

    written: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"written": list(self.written)}
