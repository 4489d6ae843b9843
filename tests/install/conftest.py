"""Fixtures for the install tests: a throwaway root per test, and a guard that the host's own
/ is the same afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.install.throwaway import REPO, ThrowawayRoot, copy_checkout

# Paths install.sh writes to; none may appear (or vanish) on the host because of a test.
HOST_PATHS = ("/opt/netspectre", "/usr/local/bin/netspectre", "/etc/netspectre",
              "/etc/systemd/system/netspectre.service",
              "/usr/local/share/man/man8/netspectre.8",
              "/usr/local/share/bash-completion/completions/netspectre",
              "/usr/local/share/zsh/site-functions/_netspectre")


def _overlay_available() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """netspectre's wheel, built offline from a copy of the checkout (setuptools >= 70.1 in the
    dev venv builds wheels by itself; see the `test` extra)."""
    base = tmp_path_factory.mktemp("wheel")
    copy_checkout(base / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--no-index", "-w", str(base / "dist"),
         str(base / "src")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"pip wheel failed (is setuptools >= 70.1 in {sys.prefix}? "
        f"pip install -e '{REPO}[test]'):\n{proc.stderr}")
    (found,) = (base / "dist").glob("netspectre-*.whl")
    return found


@pytest.fixture
def root(tmp_path: Path, wheel: Path) -> Iterator[ThrowawayRoot]:
    if os.geteuid() != 0:
        pytest.skip("needs root (mount namespaces, overlayfs, chroot)")
    missing = [t for t in ("unshare", "nsenter", "chroot", "findmnt", "setpriv", "ip")
               if shutil.which(t) is None]
    assert not missing, f"util-linux/iproute2 tools missing: {missing}"
    assert _overlay_available(), "the kernel has no overlayfs"
    before = {p: os.path.lexists(p) for p in HOST_PATHS}
    assert not before["/opt/netspectre"], (
        "the host has /opt/netspectre: the throwaway root would not start from a clean image")
    throwaway = ThrowawayRoot(tmp_path)
    try:
        throwaway.start()
        (throwaway.base / "src/dist").mkdir()
        shutil.copy(wheel, throwaway.base / "src/dist")  # `--wheel dist/*.whl` in the root
        yield throwaway
    finally:
        throwaway.stop()
        after = {p: os.path.lexists(p) for p in HOST_PATHS}
        assert after == before, "the host's / changed!"
