"""scripts/build-deb for the package tests: builds netspectre_<version>_all.deb offline, as
any user (no root, no network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from netspectre import __version__
from tests.install.throwaway import REPO

VERSION = __version__  # the one place the version is written


def build(out: Path, *, local: str | None = None, lintian: bool = False, repo: Path = REPO,
          epoch: int | None = None) -> Path:
    """repo: a checkout (or a copy of one); epoch: SOURCE_DATE_EPOCH (else the last commit)."""
    argv = [str(repo / "scripts/build-deb"), "--out", str(out)]
    argv += ["--local", local] if local else []
    argv += [] if lintian else ["--no-lintian"]
    env = dict(os.environ)
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    version = VERSION + (f"+{local}" if local else "")
    deb = out / f"netspectre_{version}_all.deb"
    assert deb.is_file(), done.stdout
    return deb
