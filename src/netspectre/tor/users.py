"""Which account Tor runs as: from the running tor, torrc `User`, or well-known names."""

from __future__ import annotations

import pwd

from netspectre.errors import ConfigError

KNOWN_USERS = ("debian-tor", "tor", "toranon", "_tor")


def resolve(user: str) -> tuple[str, int]:
    """`tor.user` → (name, uid); "auto" tries the names distributions use."""
    if user != "auto":
        try:
            return user, pwd.getpwnam(user).pw_uid
        except KeyError:
            raise ConfigError(
                f"invalid tor.user = {user!r}: no such account",
                "set tor.user to the account tor runs as, or \"auto\"",
            ) from None
    for name in KNOWN_USERS:
        try:
            return name, pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
    raise ConfigError(
        "no tor account found (looked for " + ", ".join(KNOWN_USERS) + ")",
        "install tor (apt install tor) or set tor.user in the config",
    )
