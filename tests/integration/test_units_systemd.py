"""The boot unit on a real system (moved from tests/unit, which stays pure): `systemd-analyze
verify` of the unit as written for the venv's console script, and enable/disable in a throwaway
root with the real systemctl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netspectre import paths, units
from netspectre.commands import Context, boot
from netspectre.config import Config
from netspectre.errors import Error

pytestmark = pytest.mark.root

# The installed console script next to the interpreter (systemd-analyze checks that it exists).
EXE = str(Path(sys.executable).with_name("netspectre"))


def _manpath(tmp: Path) -> dict[str, str]:
    """A MANPATH holding our generated page, so Documentation=man:netspectre(8) resolves."""
    from netspectre import cli_parser, docs

    page = tmp / "man" / "man8" / "netspectre.8"
    page.parent.mkdir(parents=True)
    page.write_text(docs.manpage(cli_parser.parser()))
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


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl absent")
def test_enable_then_disable_in_a_throwaway_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ctx = Context(config=Config(), paths=paths.detect())
    data = boot.enable(ctx, root=str(tmp_path)).to_json()
    unit = tmp_path / units.UNIT_DIR / units.UNIT
    link = tmp_path / units.UNIT_DIR / "sysinit.target.wants" / units.UNIT
    assert data["unit"] == [str(unit)]
    assert link.is_symlink() and os.readlink(link).endswith(units.UNIT)
    state = subprocess.run(["systemctl", f"--root={tmp_path}", "is-enabled", units.UNIT],
                           capture_output=True, text=True)
    assert state.stdout.strip() == "enabled"
    data = boot.disable(ctx, root=str(tmp_path)).to_json()
    assert data["removed"] == [str(unit)]
    assert not link.exists() and not link.is_symlink() and not unit.exists()
    leftovers = [p for p in tmp_path.rglob("*") if not p.is_dir()]
    assert leftovers == []


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl absent")
def test_enable_refuses_a_command_that_cannot_run_at_boot(tmp_path: Path) -> None:
    """`python -S -m netspectre` cannot import netspectre without site-packages (nor would a
    checkout run through PYTHONPATH): the unit would fail at boot, so enable writes nothing."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ctx = Context(config=Config(), paths=paths.detect())
    with pytest.raises(Error) as raised:
        boot.enable(ctx, root=str(tmp_path), command=[sys.executable, "-S", "-m",
                                                           "netspectre"])
    assert "fails without your environment" in raised.value.message
    assert "No module named netspectre" in raised.value.message
    assert [p for p in tmp_path.rglob("*")] == []
