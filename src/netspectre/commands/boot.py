"""Protection from boot: `start --boot` and its lockdown, `enable` / `disable` of the unit."""

from __future__ import annotations

import os
import shlex
import sys
import time

from netspectre import backends, state, system, units
from netspectre.commands import Context, require_root
from netspectre.commands.lifecycle import OnEvent, start, stop
from netspectre.config import Config, load
from netspectre.errors import Error
from netspectre.facts import gather
from netspectre.paths import Paths
from netspectre.policy import HostFacts, build
from netspectre.reports import AlreadyActive, StartReport
from netspectre.state import Phase
from netspectre.units import UnitReport

# Nobody's uid: when even Tor's user cannot be resolved, the lockdown ruleset exempts no one.
NO_UID = 4294967294


def boot(config_path: str | None, p: Paths) -> StartReport | AlreadyActive:
    """`start --boot`: start without waiting for Tor; if that fails for any reason (bad config,
    tor missing, …) keep the kill switch closed anyway: apply the ruleset with no Tor behind it
    (new TCP is refused by the closed TransPort, DNS by the closed DNSPort, the rest as always)
    and record why in paths.lockdown. The error is re-raised so the unit shows as failed."""
    require_root("start")
    current = state.load_current(p.state)
    if current is not None and current.phase is Phase.ACTIVE:  # the unit started twice
        return AlreadyActive(backend=current.backend.value)
    try:
        return start(Context(config=load(config_path), paths=p), wait=False, boot=True)
    except Error as exc:
        lockdown(config_path, p, f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        raise


def lockdown(config_path: str | None, p: Paths, reason: str) -> None:
    """Block everything that is not loopback/LAN, with whatever of the config is usable."""
    try:
        config = load(config_path)
    except Error:
        config = Config()
    state.ensure_dir(p.run)
    if not any(_present(f) for f in backends.everywhere()):
        try:
            facts = gather(config)
        except Error:
            facts = HostFacts(tor_uid=NO_UID, tor_user="(none)")
        try:
            firewall, _ = backends.detect(str(config.firewall.backend))
        except Error:
            firewall, _ = backends.detect(backends.AUTO)
        firewall.apply(build(config, facts))
    state.save_lockdown(p.lockdown, reason, time.time())


def _present(firewall: backends.Firewall) -> bool:
    try:
        return firewall.present()
    except Error:
        return False


# What systemd gives a unit: no PYTHONPATH, no virtualenv activation, no user's PATH.
BOOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8"}


def enable(
    ctx: Context, *, now: bool = False, root: str = "/", command: list[str] | None = None,
    on_event: OnEvent | None = None,
) -> UnitReport:
    """Write the unit for this netspectre and enable it; with now, also start."""
    require_root("enable")
    system.require("systemctl")
    if command is None:
        command = units.command_for(sys.argv[0], sys.executable, ctx.config.path)
    # A unit that cannot even run netspectre at boot would leave the machine unprotected
    # (no lockdown either): refuse now, while the user is watching.
    dry = system.run([*command, "--version"], check=False, env=BOOT_ENV)
    if dry.returncode != 0:
        said = (dry.stderr.strip().splitlines() or [f"exit {dry.returncode}"])[-1]
        raise Error(
            f"the boot unit would run `{shlex.join(command)}`, which fails without your "
            f"environment: {said}",
            "install netspectre (sudo ./install.sh, or pipx) and run `netspectre enable` from "
            "that installation",
        )
    written = units.install(root, command)
    _systemctl(root, "enable", units.UNIT)
    if now:
        start(ctx, wait=True, on_event=on_event)
        return UnitReport(enabled=True, paths=tuple(written), now=True)
    return UnitReport(enabled=True, paths=tuple(written),
                      note="protection starts at next boot; `netspectre start` protects now")


def disable(ctx: Context, *, now: bool = False, root: str = "/") -> UnitReport:
    """Disable and remove the unit. The firewall stays unless now (then `stop`)."""
    require_root("disable")
    system.require("systemctl")
    if os.path.exists(os.path.join(root, units.UNIT_DIR, units.UNIT)):
        _systemctl(root, "disable", units.UNIT)
    removed = units.remove(root)
    _systemctl(root, "daemon-reload")
    if now:
        stop(ctx)
        return UnitReport(enabled=False, paths=tuple(removed), now=True)
    return UnitReport(enabled=False, paths=tuple(removed),
                      note="the firewall in force now stays until `netspectre stop`")


def _systemctl(root: str, *args: str) -> None:
    if root != "/":  # an image or chroot: enable/disable only edit links; nothing to reload
        if args[0] != "daemon-reload":
            system.run(["systemctl", f"--root={root}", *args], check=True)
        return
    if args[0] == "daemon-reload" and not os.path.isdir("/run/systemd/system"):
        return  # systemd is not running (a container, a chroot): nothing to reload
    if args[0] != "daemon-reload":
        _systemctl(root, "daemon-reload")
    system.run(["systemctl", *args], check=True)
