"""The boot unit: its text, `systemd-analyze verify`, enable/disable in a throwaway root."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netspectre import commands, paths, units
from netspectre.config import Config
from netspectre.errors import Error

EXE = str(Path(sys.executable).with_name("netspectre"))


def _sections(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp


def test_unit_closes_the_firewall_before_the_network_and_never_opens_it() -> None:
    text = units.render([EXE])[units.UNIT]
    unit = _sections(text)
    assert unit["Unit"]["DefaultDependencies"] == "no"
    assert "network-pre.target" in unit["Unit"]["Before"].split()
    assert "network-pre.target" in unit["Unit"]["Wants"].split()
    assert "systemd-sysctl.service" in unit["Unit"]["After"].split()
    # NetSpectre's two mistakes: waiting for the network, and tying the firewall to tor.
    for key in ("Requires", "BindsTo", "PartOf", "Requisite"):
        assert key not in unit["Unit"], key
    assert "network-online" not in text and "network.target" not in text
    assert "tor.service" not in text
    for key in ("ExecStop", "ExecStopPost", "ExecReload"):
        assert key not in unit["Service"], f"{key} could lift the firewall"
    assert unit["Service"]["ExecStart"] == f"{EXE} start --boot"
    assert unit["Service"]["RemainAfterExit"] == "yes"


def test_command_for_console_script_and_module() -> None:
    assert units.command_for("/usr/local/bin/netspectre", "/py", None) == [
        "/usr/local/bin/netspectre"]
    assert units.command_for("/x/netspectre/__main__.py", "/venv/bin/python", "/etc/n.toml") == [
        "/venv/bin/python", "-m", "netspectre", "--config", "/etc/n.toml"]
    text = units.render(["/opt/my dir/netspectre", "--config", "/etc/n s.toml"])[units.UNIT]
    assert "ExecStart='/opt/my dir/netspectre' --config '/etc/n s.toml' start --boot" in text


def _manpath(tmp: Path) -> dict[str, str]:
    """A MANPATH holding our generated page, so Documentation=man:netspectre(8) resolves."""
    from netspectre import cli, docs

    page = tmp / "man" / "man8" / "netspectre.8"
    page.parent.mkdir(parents=True)
    page.write_text(docs.manpage(cli._parser()))
    return {**os.environ, "MANPATH": str(tmp / "man")}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze absent (scripts/test installs systemd)")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    written = units.install(str(tmp_path), [EXE])
    assert written == [str(tmp_path / units.UNIT_DIR / units.UNIT)]
    result = subprocess.run(["systemd-analyze", "verify", *written], capture_output=True,
                            text=True, env=_manpath(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze absent (scripts/test installs systemd)")
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check can fail: a unit whose ExecStart does not exist is reported."""
    written = units.install(str(tmp_path), [str(tmp_path / "no-such-netspectre")])
    result = subprocess.run(["systemd-analyze", "verify", *written], capture_output=True,
                            text=True, env=_manpath(tmp_path))
    assert result.returncode != 0
    assert "no-such-netspectre" in result.stderr


@pytest.mark.root
@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl absent")
def test_enable_then_disable_in_a_throwaway_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ctx = commands.Context(config=Config(), paths=paths.detect())
    data = commands.enable(ctx, root=str(tmp_path))
    unit = tmp_path / units.UNIT_DIR / units.UNIT
    link = tmp_path / units.UNIT_DIR / "sysinit.target.wants" / units.UNIT
    assert data["unit"] == [str(unit)]
    assert link.is_symlink() and os.readlink(link).endswith(units.UNIT)
    state = subprocess.run(["systemctl", f"--root={tmp_path}", "is-enabled", units.UNIT],
                           capture_output=True, text=True)
    assert state.stdout.strip() == "enabled"
    data = commands.disable(ctx, root=str(tmp_path))
    assert data["removed"] == [str(unit)]
    assert not link.exists() and not link.is_symlink() and not unit.exists()
    leftovers = [p for p in tmp_path.rglob("*") if not p.is_dir()]
    assert leftovers == []


@pytest.mark.root
@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl absent")
def test_enable_refuses_a_command_that_cannot_run_at_boot(tmp_path: Path) -> None:
    """`python -S -m netspectre` cannot import netspectre without site-packages (nor would a
    checkout run through PYTHONPATH): the unit would fail at boot, so enable writes nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ctx = commands.Context(config=Config(), paths=paths.detect())
    with pytest.raises(Error) as raised:
        commands.enable(ctx, root=str(tmp_path), command=[sys.executable, "-S", "-m",
                                                           "netspectre"])
    assert "fails without your environment" in raised.value.message
    assert "No module named netspectre" in raised.value.message
    assert [p for p in tmp_path.rglob("*")] == []
