"""The boot unit's text (pure). `systemd-analyze verify` and enable/disable in a throwaway root
are in tests/integration/test_units_systemd.py."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

from netspectre import units

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
