"""HostFacts gathered from this host (the tor account; the bypass accounts; the interfaces and
whether the raw guard can run here), for policy and plan."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from netspectre.backends import guard
from netspectre.backends.names import Backend
from netspectre.config import DEFAULT_PATH, Config, RawGuard
from netspectre.errors import ConfigError
from netspectre.policy import HostFacts
from netspectre.tor import users

if TYPE_CHECKING:
    from netspectre import system

SYS_NET = Path("/sys/class/net")
IF_INET6 = Path("/proc/net/if_inet6")
LOOPBACK6 = "0" * 31 + "1"  # ::1 as if_inet6 writes it
EGRESS_KERNEL = (5, 16)  # the netdev egress hook (CONFIG_NETFILTER_EGRESS)
# Checked by the kernel (nft -c sends the batch and aborts it), attached to nothing real.
PROBE = (f"table netdev {guard.TABLE}_probe {{\n\tchain egress {{\n"
         '\t\ttype filter hook egress device "lo" priority 0; policy accept;\n\t}\n}\n')


def gather(config: Config, *, runner: system.Runner | None = None,
           backend: Backend | None = None) -> HostFacts:
    """`backend`: the firewall that will apply (None: the guard is not probed, so off)."""
    name, uid = users.resolve(config.tor.user)
    stack, loopback = ipv6_facts()
    found = HostFacts(tor_uid=uid, tor_user=name, ipv6_stack=stack, ipv6_loopback=loopback,
                      bypass_users=bypass_users(config), bypass_groups=bypass_groups(config))
    if backend is None or runner is None or config.firewall.raw_guard is RawGuard.OFF:
        return found
    return replace(found, devices=interfaces(),
                   guard_unsupported=guard_unsupported(backend, runner))


def ipv6_facts(path: Path = IF_INET6) -> tuple[bool, bool]:
    """(IPv6 stack present, ::1 configured on lo) from this namespace's /proc/net/if_inet6:
    the file is absent with ipv6.disable=1; ::1 goes with lo's disable_ipv6."""
    try:
        text = path.read_text()
    except OSError:
        return False, False
    return True, any(line.split()[:1] == [LOOPBACK6] for line in text.splitlines())


def _unknown(config: Config, kind: str, name: str, create: str) -> ConfigError:
    return ConfigError(
        f"[firewall] bypass_{kind}s: no {kind} named {name!r} on this machine",
        f"create it ({create} {name}) or remove it from bypass_{kind}s in "
        f"{config.path or DEFAULT_PATH}; nothing was changed")


def bypass_users(config: Config) -> tuple[tuple[str, int], ...]:
    """[firewall] bypass_users → ((name, uid), …); an unknown name is refused."""
    found = []
    for name in config.firewall.bypass_users:
        try:
            found.append((name, pwd.getpwnam(name).pw_uid))
        except KeyError:
            raise _unknown(config, "user", name, "useradd --system") from None
    return tuple(found)


def bypass_groups(config: Config) -> tuple[tuple[str, int], ...]:
    """[firewall] bypass_groups → ((name, gid), …); an unknown name is refused."""
    found = []
    for name in config.firewall.bypass_groups:
        try:
            found.append((name, grp.getgrnam(name).gr_gid))
        except KeyError:
            raise _unknown(config, "group", name, "groupadd --system") from None
    return tuple(found)


def interfaces(root: Path = SYS_NET) -> tuple[str, ...]:
    """Every interface but loopback, sorted (what the guard covers now)."""
    try:
        return tuple(sorted(e.name for e in os.scandir(root) if e.name != "lo"))
    except OSError:
        return ()


def kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".", 2)
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def guard_unsupported(backend: Backend, runner: system.Runner) -> str:
    """Why the guard cannot run here ("" when it can): one cheap probe per start."""
    if backend is not Backend.NFT:
        return (f"the {backend.value} backend has no netdev family (the guard needs nft: "
                'set [firewall] backend = "nft")')
    release = os.uname().release
    if kernel_version(release) < EGRESS_KERNEL:
        return f"kernel {release} has no netdev egress hook (needs 5.16 or later)"
    if os.geteuid() != 0:  # `rules` as a user: nft -c needs root; the version must do
        return ""
    probe = runner.run(["nft", "-c", "-f", "-"], input=PROBE, check=False)
    if probe.returncode != 0:
        said = (probe.stderr.strip().splitlines() or ["no reason given"])[0]
        return f"the kernel refuses a netdev egress chain (CONFIG_NETFILTER_EGRESS?): {said}"
    return ""
