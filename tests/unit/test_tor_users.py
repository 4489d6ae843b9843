"""Tor account detection on fixture passwd files, /proc trees and torrc files."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspectre.errors import ConfigError
from netspectre.tor import users

PASSWD = {
    "debian": "debian-tor:x:102:105::/var/lib/tor:/bin/false\n",
    "arch": "tor:x:43:43::/var/lib/tor:/usr/bin/nologin\n",
    "fedora": "toranon:x:977:977:Tor anonymizing user:/var/lib/tor:/sbin/nologin\n",
    "openbsd": "_tor:*:577:577:Tor Daemon:/var/empty:/sbin/nologin\n",
}
BASE = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "# a comment\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
)
NOWHERE = (Path("/nonexistent/torrc"),)


def passwd(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "passwd"
    path.write_text(BASE + "".join(PASSWD[n] for n in names))
    return path


def proc(tmp_path: Path, processes: dict[int, tuple[str, int]]) -> Path:
    """A fake /proc: pid → (Name, effective uid)."""
    root = tmp_path / "proc"
    root.mkdir()
    (root / "self").mkdir()
    for pid, (name, uid) in processes.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "comm").write_text(f"{name}\n")
        (root / str(pid) / "status").write_text(
            f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t{pid}\n"
            f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
        )
    return root


@pytest.mark.parametrize(
    ("distro", "name", "uid"),
    [("debian", "debian-tor", 102), ("arch", "tor", 43), ("fedora", "toranon", 977),
     ("openbsd", "_tor", 577)],
)
def test_known_names_per_distribution(tmp_path: Path, distro: str, name: str, uid: int) -> None:
    got = users.resolve(
        "auto", passwd=passwd(tmp_path, distro), proc=proc(tmp_path, {}), torrc=NOWHERE)
    assert got == (name, uid)


def test_running_tor_wins(tmp_path: Path) -> None:
    pw = passwd(tmp_path, "debian", "arch")
    running = proc(tmp_path, {300: ("bash", 1000), 812: ("tor", 43)})
    found = users.detect(passwd=pw, proc=running, torrc=NOWHERE)
    assert found is not None
    assert (found[0].name, found[0].uid, found[1]) == ("tor", 43, "running tor process")


def test_tor_browser_and_root_tors_are_not_trusted(tmp_path: Path) -> None:
    # Tor Browser's tor runs as the desktop user; a tor before its privilege drop runs as root.
    pw = passwd(tmp_path, "debian")
    running = proc(tmp_path, {400: ("tor", 1000), 401: ("tor", 0)})
    assert users.resolve("auto", passwd=pw, proc=running, torrc=NOWHERE) == ("debian-tor", 102)


def test_torrc_user(tmp_path: Path) -> None:
    pw = passwd(tmp_path, "debian", "fedora")
    torrc = tmp_path / "torrc"
    torrc.write_text("# User nobody\nSocksPort 9050\nUser toranon # the packaged account\n")
    found = users.detect(passwd=pw, proc=proc(tmp_path, {}), torrc=[Path("/none"), torrc])
    assert found is not None and (found[0].name, found[1]) == ("toranon", "torrc User")
    assert users.torrc_user([torrc]) == "toranon"


def test_torrc_user_root_or_unknown_falls_through(tmp_path: Path) -> None:
    pw = passwd(tmp_path, "arch")
    torrc = tmp_path / "torrc"
    empty = proc(tmp_path, {})
    torrc.write_text("User root\n")
    assert users.resolve("auto", passwd=pw, proc=empty, torrc=[torrc]) == ("tor", 43)
    torrc.write_text("User ghost\n")
    assert users.resolve("auto", passwd=pw, proc=empty, torrc=[torrc]) == ("tor", 43)


def test_explicit_user(tmp_path: Path) -> None:
    pw = passwd(tmp_path, "debian")
    assert users.resolve("debian-tor", passwd=pw) == ("debian-tor", 102)
    with pytest.raises(ConfigError, match="no such account"):
        users.resolve("toranon", passwd=pw)
    with pytest.raises(ConfigError, match="must not run as root"):
        users.resolve("root", passwd=pw)


def test_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no tor account found") as err:
        users.resolve("auto", passwd=passwd(tmp_path), proc=proc(tmp_path, {}), torrc=NOWHERE)
    assert err.value.hint is not None and "apt install tor" in err.value.hint


def test_lookups_by_uid_and_gid(tmp_path: Path) -> None:
    pw = passwd(tmp_path, "debian")
    assert users.by_uid(102, pw) == users.Account("debian-tor", 102, 105)
    assert users.by_uid(4242, pw) is None
    assert users.read_passwd(tmp_path / "missing") == {}
