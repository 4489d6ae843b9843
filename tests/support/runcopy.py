"""A world-readable copy of the package and the run helpers, for `netspectre run` as an
unprivileged user (the checkout may sit under a 0700 home; root's venv python is not theirs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import netns

REPO = Path(__file__).resolve().parents[2]
PY = "/usr/bin/python3"
NOBODY = 65534
HELPERS = ("runprobe.py", "socksstub.py", "runsockets.py")


def make() -> Path:
    root = Path("/tmp") / netns.unique_name("nsrun")
    root.mkdir(mode=0o755)
    shutil.copytree(REPO / "src" / "netspectre", root / "netspectre")
    for name in HELPERS:
        shutil.copy(REPO / "tests" / "support" / name, root / name)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root


def argv(root: Path, config: Path, *run_args: str, user: str = "nobody") -> list[str]:
    """`netspectre run ...` as uid 65534 (user="nobody") or as root for the sudo user 65534."""
    base = ["env", f"PYTHONPATH={root}", PY, "-m", "netspectre", "--config", str(config),
            "run", *run_args]
    if user == "nobody":
        return ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                *base]
    return ["env", f"SUDO_UID={NOBODY}", f"SUDO_GID={NOBODY}", *base]
