"""Which account Tor runs as: from the running tor, torrc `User`, or well-known names.

Every lookup takes its sources (passwd file, /proc root, torrc files) as arguments so tests run
on fixture data; None for `passwd` means the system's account database (NSS).
"""

from __future__ import annotations

import pwd
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netspectre.errors import ConfigError

# Debian/Ubuntu/Kali/Parrot, Arch/openSUSE/Alpine, Fedora, OpenBSD-style.
KNOWN_USERS = ("debian-tor", "tor", "toranon", "_tor")
TORRC_FILES = (
    Path("/etc/tor/torrc"),
    Path("/usr/share/tor/tor-service-defaults-torrc"),  # Debian's unit passes it to tor
    Path("/etc/tor/torrc-defaults"),
)
# A tor running as an ordinary login account is Tor Browser's or a user's own: exempting that
# account from the firewall would let everything it runs bypass Tor. Only system accounts count.
FIRST_LOGIN_UID = 1000


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def read_passwd(path: Path) -> dict[str, Account]:
    accounts: dict[str, Account] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return accounts
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or line.startswith("#"):
            continue
        try:
            accounts.setdefault(fields[0], Account(fields[0], int(fields[2]), int(fields[3])))
        except ValueError:
            continue
    return accounts


def by_name(name: str, passwd: Path | None = None) -> Account | None:
    if passwd is not None:
        return read_passwd(passwd).get(name)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def by_uid(uid: int, passwd: Path | None = None) -> Account | None:
    if passwd is not None:
        return next((a for a in read_passwd(passwd).values() if a.uid == uid), None)
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def running_tor_uids(proc: Path = Path("/proc")) -> list[int]:
    """Effective uids of processes named tor, in pid order."""
    found: list[tuple[int, int]] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            # comm first: one short read per process; status only for the few named tor.
            if (entry / "comm").read_text().strip() != "tor":
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(
            line.split(":", 1) for line in status.splitlines() if ":" in line
        )
        if fields.get("Name", "").strip() != "tor":
            continue
        uids = fields.get("Uid", "").split()
        if len(uids) >= 2 and uids[1].isdigit():
            found.append((int(entry.name), int(uids[1])))
    return [uid for _, uid in sorted(found)]


def torrc_user(files: Iterable[Path] = TORRC_FILES) -> str | None:
    """The `User` option of the first torrc that sets one (the last such line in it wins)."""
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        value: str | None = None
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) == 2 and parts[0].lower() == "user":
                value = parts[1]
        if value:
            return value
    return None


def detect(
    *,
    passwd: Path | None = None,
    proc: Path = Path("/proc"),
    torrc: Sequence[Path] = TORRC_FILES,
    known: Sequence[str] = KNOWN_USERS,
) -> tuple[Account, str] | None:
    """(account, how it was found), or None. Order: running tor, torrc User, known names."""
    for uid in running_tor_uids(proc):
        if 0 < uid < FIRST_LOGIN_UID:
            account = by_uid(uid, passwd)
            if account is not None:
                return account, "running tor process"
    name = torrc_user(torrc)
    if name:
        account = by_name(name, passwd)
        if account is not None and account.uid != 0:
            return account, "torrc User"
    for name in known:
        account = by_name(name, passwd)
        if account is not None:
            return account, "account name"
    return None


def resolve(
    user: str,
    *,
    passwd: Path | None = None,
    proc: Path = Path("/proc"),
    torrc: Sequence[Path] = TORRC_FILES,
) -> tuple[str, int]:
    """`tor.user` → (name, uid); "auto" detects it (see detect())."""
    if user != "auto":
        account = by_name(user, passwd)
        if account is None:
            raise ConfigError(
                f"invalid tor.user = {user!r}: no such account",
                "set tor.user to the account tor runs as, or \"auto\"",
            )
        if account.uid == 0:
            raise ConfigError(
                f"invalid tor.user = {user!r}: tor must not run as root",
                "the firewall exempts this account: use the tor package's account",
            )
        return account.name, account.uid
    found = detect(passwd=passwd, proc=proc, torrc=torrc)
    if found is None:
        raise ConfigError(
            "no tor account found (looked for a running tor, User in "
            + ", ".join(str(p) for p in torrc)
            + ", and the accounts " + ", ".join(KNOWN_USERS) + ")",
            "install tor (apt install tor) or set tor.user in the config",
        )
    return found[0].name, found[0].uid
