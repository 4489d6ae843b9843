"""netspectre as a normal Python package (`pipx install .`): the wheel built from the checkout
holds every module and the console script, and works from a fresh venv. No network."""

from __future__ import annotations

import pwd
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.install.throwaway import REPO


def test_wheel_holds_the_package_and_the_entry_point(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "src" / "netspectre"
    expected = {str(p.relative_to(REPO / "src")) for p in package.rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "netspectre/py.typed" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\nnetspectre = netspectre.cli:main" in text


def test_wheel_installs_and_runs_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install",
                    "--quiet", "--disable-pip-version-check", "--no-index", str(wheel)],
                   check=True, timeout=300)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(venv / "bin/netspectre"), *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc

    helped = run("--help")
    assert "start" in helped.stdout and "rules" in helped.stdout
    # The installed copy is the one that runs, not the checkout's src/ on some path.
    where = subprocess.run([str(venv / "bin/python"), "-c",
                            "import netspectre; print(netspectre.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert where.stdout.startswith(str(venv)), where.stdout
    # rules renders without root; with the default config it probes tor's account.
    tor_accounts = {"debian-tor", "tor", "toranon", "_tor"} & {p.pw_name for p in pwd.getpwall()}
    if tor_accounts:
        assert "table inet netspectre {" in run("rules", "--backend", "nft").stdout
    config = tmp_path / "netspectre.toml"
    config.write_text('[tor]\nuser = "nobody"\n')  # an account every machine has
    rules = run("--config", str(config), "rules", "--backend", "iptables-nft")
    assert "NETSPECTRE" in rules.stdout
