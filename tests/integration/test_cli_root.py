"""CLI behaviour that needs root to observe (moved from tests/unit, which stays pure): a normal
user is refused with a hint, `rules` needs no root, a missing nft is named with its package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.cli import assert_clean_error, checkout_env, run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop to nobody, to run start)"),
]
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv absent")


@needs_setpriv
@pytest.mark.parametrize("command", ["start", "stop", "restart", "status", "newnym", "verify",
                                     "enable", "disable"])
def test_non_root_is_refused_with_a_hint(command: str) -> None:
    proc = run(command, user="nobody")
    assert_clean_error(proc, 4, "must run as root")
    assert f"sudo netspectre {command}" in proc.stderr


@needs_setpriv
def test_non_root_boot_start_is_refused_before_any_lockdown() -> None:
    proc = run("start", "--boot", user="nobody")
    assert_clean_error(proc, 4, "must run as root")


@needs_setpriv
def test_rules_needs_no_root() -> None:
    proc = run("rules", "--backend", "nft", user="nobody")
    assert proc.returncode == 0, proc.stderr
    assert "table inet netspectre {" in proc.stdout


@pytest.mark.skipif(bool(netns.missing_tools(["ip"])), reason="ip (iproute2) absent")
def test_missing_nft_is_named_with_the_package(tmp_path: Path) -> None:
    """As root, with no nft on PATH: in a fresh namespace, so nothing of the host is in reach."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[firewall]\nbackend = "nft"\n[tor]\nmode = "system"\n')
    ip = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert ip is not None
    with netns.namespaces("nscli") as (ns,):
        argv = ns.argv([sys.executable, "-m", "netspectre", "--config", str(cfg), "start"])
        argv[0] = ip  # the PATH below holds no ip
        proc = subprocess.run(
            argv,
            capture_output=True, text=True, timeout=30, cwd="/",
            env=checkout_env({"PATH": str(bindir)}))
    assert_clean_error(proc, 5, "`nft` not found")
    assert "apt install nftables" in proc.stderr
