"""CLI behaviour as a user sees it: one-line errors with a hint, exit codes, nothing changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.cli import assert_clean_error, checkout_env, run


def test_help_lists_every_command() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("start", "stop", "restart", "status", "rules", "myip", "newnym", "verify", "lab",
                "doctor", "enable", "disable"):
        assert cmd in proc.stdout


def test_help_hides_the_internal_commands() -> None:
    proc = run("--help")
    assert "SUPPRESS" not in proc.stdout
    for hidden in ("_supervise", "_man", "_completion", "_units"):
        assert hidden not in proc.stdout


def test_units_needs_an_explicit_root(tmp_path: Path) -> None:
    """A typo must not write the running system's /etc/systemd/system."""
    proc = run("_units", "--exec", "/usr/bin/netspectre")
    assert proc.returncode == 2 and "--root" in proc.stderr and not proc.stdout
    done = run("_units", "--root", str(tmp_path), "--exec", "/usr/bin/netspectre")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "etc/systemd/system/netspectre.service").is_file()


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


def test_json_error_output(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[firewall]\nipv6 = 1\n")
    proc = run("--json", "--config", str(cfg), "rules")
    assert proc.returncode == 3
    assert '"error": "invalid firewall.ipv6 = 1' in proc.stdout


def test_output_into_a_closed_pipe_is_not_a_traceback() -> None:
    """`netspectre rules | head`: the reader is gone before we print."""
    proc = subprocess.Popen([sys.executable, "-m", "netspectre", "rules", "--backend", "nft"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=checkout_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has started
    err = proc.stderr.read()
    proc.wait()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert "No module named" not in err, err  # it ran netspectre, not an interpreter error
