"""`netspectre bypass -- CMD`: one command whose sockets go direct while the machine is
torified (issue 10): a deliberate hole in the kill switch, with no daemon.

The rules let out every socket whose gid is a bypass group in force (nft `meta skgid`,
iptables `--gid-owner`). That gid is the opener's fsgid, i.e. its effective gid, never a
supplementary group: so the command runs as the invoking user (SUDO_UID, or --user) with the
bypass group as its real, effective and saved gid and the user's own groups as supplementary
ones. It is exec'd in place of netspectre (no wrapper process): its exit status, signals and
terminal are its own. Files it creates get the bypass group.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from netspectre import state
from netspectre.commands import Context, require_root
from netspectre.errors import ConfigError, Error, StateError
from netspectre.state import Phase

HINT_GROUP = ('add a group to [firewall] bypass_groups (e.g. `groupadd --system '
              'netspectre-bypass`, then bypass_groups = ["netspectre-bypass"]) and run '
              '`sudo netspectre restart`')


@dataclass(frozen=True)
class Identity:
    """Who the command runs as: uid, the bypass gid as its (e)gid, the user's own groups."""

    user: str
    uid: int
    gid: int
    group: str
    groups: tuple[int, ...]
    home: str


def bypass_group(policy: Mapping[str, object], wanted: str | None) -> tuple[str, int]:
    """The recorded bypass group to use: the numbers the rules in force match."""
    raw = policy.get("bypass_groups")
    groups = [(str(e["name"]), int(e["gid"])) for e in raw if isinstance(e, dict)] if (
        isinstance(raw, list)) else []
    if not groups:
        raise ConfigError("no bypass group is in force: `bypass` has nothing to run with",
                          HINT_GROUP)
    names = ", ".join(n for n, _ in groups)
    if wanted is None:
        if len(groups) > 1:
            raise ConfigError(f"several bypass groups are in force ({names})",
                              "choose one: netspectre bypass --group NAME -- COMMAND")
        return groups[0]
    for name, gid in groups:
        if name == wanted:
            return name, gid
    raise ConfigError(f"{wanted!r} is not a bypass group in force (in force: {names})",
                      HINT_GROUP)


def invoker(user: str | None, environ: Mapping[str, str]) -> pwd.struct_passwd:
    """--user NAME, else the user sudo ran us for (SUDO_UID), else ourselves."""
    try:
        if user is not None:
            return pwd.getpwnam(user)
        sudo = environ.get("SUDO_UID")
        return pwd.getpwuid(int(sudo) if sudo and sudo.isdigit() else os.getuid())
    except KeyError:
        raise ConfigError(f"no user named {user!r} on this machine",
                          "name an existing account with --user") from None


def identity(ctx: Context, *, user: str | None, group: str | None,
             environ: Mapping[str, str]) -> Identity:
    """Refuses (before anything changes) unless netspectre is active with its firewall and a
    bypass group is in force."""
    current = state.load_current(ctx.paths.state)
    if current is None or current.phase is not Phase.ACTIVE:
        raise StateError("netspectre is not active: there is nothing to bypass",
                         "run the command directly (nothing is torified), or "
                         "`sudo netspectre start` first")
    if not current.firewall:
        raise StateError("netspectre runs Tor only (--no-firewall): this machine's traffic "
                         "already goes direct", "run the command directly")
    name, gid = bypass_group(current.policy, group)
    pw = invoker(user, environ)
    groups = tuple(g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != gid)
    return Identity(user=pw.pw_name, uid=pw.pw_uid, gid=gid, group=name, groups=groups,
                    home=pw.pw_dir)


def run(ctx: Context, argv: Sequence[str], *, user: str | None = None,
        group: str | None = None) -> NoReturn:
    """Drop to the identity and exec argv; returns only by raising."""
    require_root("bypass")
    argv = list(argv[1:] if argv[:1] == ["--"] else argv)
    if not argv:
        raise ConfigError("no command given", "netspectre bypass -- COMMAND [ARG...]")
    who = identity(ctx, user=user, group=group, environ=os.environ)
    path = os.environ.get("PATH", os.defpath)
    if shutil.which(argv[0], path=path) is None:
        raise Error(f"{argv[0]}: command not found", f"PATH is {path}")
    if who.uid != os.getuid():
        os.environ.update(HOME=who.home, USER=who.user, LOGNAME=who.user)
    os.setgroups(list(who.groups))
    os.setresgid(who.gid, who.gid, who.gid)
    os.setresuid(who.uid, who.uid, who.uid)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise Error(f"cannot run {argv[0]}: {exc.strerror}",
                    f"as {who.user} with group {who.group}") from None
