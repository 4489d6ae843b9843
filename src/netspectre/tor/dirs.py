"""The managed tor's directories: owned by the tor account, reachable by it, nothing more."""

from __future__ import annotations

import os
from pathlib import Path

from netspectre.errors import ConfigError, TorError
from netspectre.paths import Paths
from netspectre.tor import users
from netspectre.tor.layout import Files
from netspectre.tor.users import Account


def account(name: str) -> Account:
    found = users.by_name(name)
    if found is None:
        raise ConfigError(f"the tor account {name!r} does not exist", "set tor.user")
    return found


def _searchable(path: Path, account: Account) -> bool:
    st = path.stat()
    if st.st_uid == account.uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == account.gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _reach(target: Path, account: Account, fixable: tuple[Path, ...]) -> None:
    """Let the tor user search every directory above `target`: ours get o+x, others refuse."""
    for directory in target.parents:
        if _searchable(directory, account):
            continue
        if directory in fixable:
            # Search only (no listing): state.json and friends stay root's, 0600.
            os.chmod(directory, directory.stat().st_mode & 0o7777 | 0o001)
            continue
        raise TorError(
            f"the tor account {account.name} cannot reach {target}: {directory} is not "
            "searchable for it",
            f"chmod o+x {directory}, or point NETSPECTRE_RUN_DIR / NETSPECTRE_LIB_DIR elsewhere",
        )


def _owned_dir(path: Path, account: Account) -> None:
    """A 0700 directory owned by the tor account (tor insists), contents included."""
    path.mkdir(mode=0o700, parents=False, exist_ok=True)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (account.uid, account.gid):
        for root, dirs, names in os.walk(path):
            for name in [*dirs, *names]:
                os.lchown(os.path.join(root, name), account.uid, account.gid)
        os.chown(path, account.uid, account.gid)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def prepare(paths: Paths, account: Account) -> None:
    files = Files.of(paths)
    paths.run.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.run.mkdir(mode=0o700, exist_ok=True)
    files.daemon.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    _reach(files.daemon, account, fixable=(files.daemon.parent,))
    _owned_dir(files.daemon, account)
    paths.lib.mkdir(mode=0o711, parents=True, exist_ok=True)
    _reach(files.data, account, fixable=(paths.lib,))
    _owned_dir(files.data, account)
