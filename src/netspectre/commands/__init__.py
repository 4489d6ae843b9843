"""The orchestration: what each command does to the system, in order. No string building.

lifecycle.py: start / stop / restart over one converge; boot.py: start --boot, the lockdown,
enable / disable; report.py: status, verify, rules, newnym, myip (read-only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from netspectre import system
from netspectre.config import Config
from netspectre.errors import PermissionError_
from netspectre.paths import Paths


@dataclass(frozen=True)
class Context:
    config: Config
    paths: Paths
    runner: system.Runner = system.HOST  # every firewall command goes through it


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError_(
            f"`netspectre {command}` must run as root",
            f"run: sudo netspectre {command}",
        )
