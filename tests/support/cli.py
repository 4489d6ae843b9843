"""Run `python -m netspectre` from the checkout as a user would, and judge its error output
(shared by tests/unit/test_cli.py and tests/integration/test_cli_root.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def checkout_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the checkout's src first: no installed netspectre needed."""
    return {**os.environ, "PYTHONPATH": SRC, **(extra or {})}


def run(*args: str, env: dict[str, str] | None = None, user: str | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "netspectre", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=checkout_env(env), timeout=30,
                          cwd=cwd or "/")


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("netspectre: error: ") and needle in lines[0], proc.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), proc.stderr
    assert "Traceback" not in proc.stderr
