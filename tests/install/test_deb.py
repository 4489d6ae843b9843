"""The Debian package as built (scripts/build-deb): what it holds, its control data, its
maintainer scripts, lintian. No root, no network; installing it is test_debootstrap's job."""

from __future__ import annotations

import gzip
import io
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.install.debpkg import VERSION, build
from tests.install.throwaway import copy_checkout


def _files(deb: Path) -> dict[str, tarfile.TarInfo]:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {m.name.removeprefix("./"): m for m in archive.getmembers()}


def _read(deb: Path, path: str) -> bytes:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        member = archive.extractfile(f"./{path}")
        assert member is not None, path
        return member.read()


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not found (not a Debian/Ubuntu machine)")
    return build(tmp_path_factory.mktemp("deb"))


def test_the_package_holds_the_modules_of_the_wheel(deb: Path, wheel: Path) -> None:
    packaged = {name.removeprefix("usr/lib/python3/dist-packages/")
                for name, member in _files(deb).items()
                if name.startswith("usr/lib/python3/dist-packages/") and member.isfile()}
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("netspectre/")}
    assert packaged == in_wheel
    assert not [n for n in _files(deb) if "__pycache__" in n or n.endswith(".pyc")]


def test_the_package_holds_command_config_unit_docs(deb: Path) -> None:
    files = _files(deb)
    for path, mode in [("usr/bin/netspectre", 0o755),
                       ("etc/netspectre/netspectre.toml", 0o644),
                       ("usr/lib/systemd/system/netspectre.service", 0o644),
                       ("usr/share/man/man8/netspectre.8.gz", 0o644),
                       ("usr/share/bash-completion/completions/netspectre", 0o644),
                       ("usr/share/zsh/vendor-completions/_netspectre", 0o644),
                       ("usr/share/doc/netspectre/copyright", 0o644),
                       ("usr/share/doc/netspectre/changelog.gz", 0o644)]:
        assert path in files, f"{path} not in the package"
        assert (files[path].mode, files[path].uid, files[path].gid) == (mode, 0, 0), path
    assert not [n for n in files if n.startswith(("etc/systemd", "usr/lib/systemd/system/")
                                                  ) and ".wants/" in n], "the unit is enabled"
    unit = _read(deb, "usr/lib/systemd/system/netspectre.service").decode()
    assert "\nExecStart=/usr/bin/netspectre start --boot\n" in unit
    assert _read(deb, "usr/bin/netspectre").startswith(b"#!/usr/bin/python3\n")
    assert b".TH" in gzip.decompress(_read(deb, "usr/share/man/man8/netspectre.8.gz"))
    repo_config = Path(__file__).resolve().parents[2] / "etc/netspectre.toml"
    assert _read(deb, "etc/netspectre/netspectre.toml") == repo_config.read_bytes()
    changelog = gzip.decompress(_read(deb, "usr/share/doc/netspectre/changelog.gz")).decode()
    assert changelog.startswith(f"netspectre ({VERSION}) unstable; urgency=medium\n")


def test_control_version_depends_conffiles(deb: Path, tmp_path: Path) -> None:
    assert deb.name == f"netspectre_{VERSION}_all.deb"
    assert _field(deb, "Version") == VERSION
    assert _field(deb, "Architecture") == "all"
    assert _field(deb, "Depends") == "python3 (>= 3.11), tor, nftables | iptables"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(tmp_path)], check=True)
    assert (tmp_path / "conffiles").read_text() == "/etc/netspectre/netspectre.toml\n"
    for script in ("postinst", "prerm", "postrm"):
        assert (tmp_path / script).stat().st_mode & 0o777 == 0o755
        code = [line.split("#", 1)[0] for line in (tmp_path / script).read_text().splitlines()]
        # Installing, upgrading or removing never touches a firewall or starts anything: the
        # only commands of ours are `status` (read-only) and `disable` (unit files only).
        assert not [c for c in code if re.search(r"\b(nft|ip6?tables\S*|deb-systemd-invoke)\b",
                                                 c)], script
        calls = [c.strip() for c in code if "systemctl " in c and "command -v" not in c
                 and not c.strip().startswith("echo ")]
        assert all("daemon-reload" in c for c in calls), (script, calls)
        ours = {m for c in code for m in re.findall(r'"\$BIN" ([a-z-]+)', c)}
        assert ours <= {"--json", "disable"}, (script, ours)


def test_a_local_build_has_a_higher_version(tmp_path: Path) -> None:
    local = build(tmp_path, local="test1")
    assert _field(local, "Version") == f"{VERSION}+test1"
    newer = subprocess.run(["dpkg", "--compare-versions", f"{VERSION}+test1", "gt", VERSION])
    assert newer.returncode == 0


def test_two_builds_of_one_tree_are_identical(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    copy_checkout(tree)  # frozen: other work in the checkout cannot change between builds
    first = build(tmp_path / "1", repo=tree, epoch=1_700_000_000)
    second = build(tmp_path / "2", repo=tree, epoch=1_700_000_000)
    assert first.read_bytes() == second.read_bytes()


def test_lintian_has_no_errors_or_warnings(deb: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed (scripts/test installs it)")
    done = subprocess.run(["lintian", "--allow-root", "--fail-on", "error,warning", str(deb)],
                          capture_output=True, text=True, timeout=600)
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert done.returncode == 0 and not tags, done.stdout + done.stderr
