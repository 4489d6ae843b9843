"""CLI behaviour as a user sees it: one-line errors with a hint, exit codes, nothing changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def run(*args: str, env: dict[str, str] | None = None, user: str | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=SRC)
    full_env.update(env or {})
    argv = [sys.executable, "-m", "netspectre", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=30,
                          cwd=cwd or "/")


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("netspectre: error: ") and needle in lines[0], proc.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_every_command() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("start", "stop", "restart", "status", "rules", "myip", "newnym", "verify", "lab",
                "doctor", "enable", "disable"):
        assert cmd in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root+setpriv")
@pytest.mark.parametrize("command", ["start", "stop", "restart", "status", "newnym", "verify",
                                     "enable", "disable"])
def test_non_root_is_refused_with_a_hint(command: str) -> None:
    proc = run(command, user="nobody")
    assert_clean_error(proc, 4, "must run as root")
    assert f"sudo netspectre {command}" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root+setpriv")
def test_non_root_boot_start_is_refused_before_any_lockdown() -> None:
    proc = run("start", "--boot", user="nobody")
    assert_clean_error(proc, 4, "must run as root")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root+setpriv")
def test_rules_needs_no_root(tmp_path: Path) -> None:
    proc = run("rules", "--backend", "nft", user="nobody")
    assert proc.returncode == 0, proc.stderr
    assert "table inet netspectre {" in proc.stdout


def test_bad_config_is_one_line_with_exit_3(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[tor]\ntrans_port = 70000\n")
    proc = run("--config", str(cfg), "rules")
    assert proc.returncode == 3
    assert proc.stderr.startswith("netspectre: error: invalid tor.trans_port = 70000")


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    assert_clean_error(run("--config", str(tmp_path / "nope.toml"), "rules"), 3, "not found")


def test_unknown_tor_user(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tor]\nuser = "no-such-user-here"\n')
    assert_clean_error(run("--config", str(cfg), "rules"), 3, "no such account")


def test_missing_nft_is_named_with_the_package(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[firewall]\nbackend = "nft"\n[tor]\nmode = "system"\n')
    proc = run("--config", str(cfg), "start", env={"PATH": str(bindir)})
    if os.geteuid() != 0:
        pytest.skip("root check comes first")
    assert_clean_error(proc, 5, "`nft` not found")
    assert "apt install nftables" in proc.stderr


def test_json_error_output(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[firewall]\nipv6 = 1\n")
    proc = run("--json", "--config", str(cfg), "rules")
    assert proc.returncode == 3
    assert '"error": "invalid firewall.ipv6 = 1' in proc.stdout


def test_output_into_a_closed_pipe_is_not_a_traceback() -> None:
    """`netspectre rules | head`: the reader is gone before we print."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "netspectre", "rules", "--backend", "nft"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has started
    err = proc.stderr.read()
    proc.wait()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
