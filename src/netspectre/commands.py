"""start / stop / restart / status / rules: the orchestration. No string building, no printing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netspectre import firewall, ipv6, paths, state, sysctl
from netspectre.backends import Backend
from netspectre.config import Config, TorMode
from netspectre.errors import CleanupFailed, Error, PermissionError_, StateError
from netspectre.policy import HostFacts, Policy, build
from netspectre.state import Phase, State
from netspectre.tor import service
from netspectre.tor.service import BootstrapEvent


@dataclass(frozen=True)
class Context:
    config: Config
    paths: paths.Paths


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError_(
            f"`netspectre {command}` must run as root",
            f"run: sudo netspectre {command}",
        )


def probe(config: Config) -> HostFacts:
    from netspectre.tor import users

    name, uid = users.resolve(config.tor.user)
    return HostFacts(tor_uid=uid, tor_user=name)


def _ipv6_sysctls(policy: Policy) -> dict[str, str]:
    if not policy.disable_ipv6:
        return {}
    return sysctl.read(sysctl.ipv6_keys(sysctl.interfaces()))


def start(
    ctx: Context, *, wait: bool = True, on_event: Callable[[BootstrapEvent], None] | None = None,
    boot: bool = False,
) -> dict[str, Any]:
    """Apply the firewall (fail closed), then Tor; record intent before every effect."""
    require_root("start")
    config, p = ctx.config, ctx.paths
    facts = probe(config)
    policy = build(config, facts)
    backend, evidence = firewall.detect(config.firewall.backend)
    if not (boot and config.tor.mode is TorMode.SYSTEM):  # at boot the system tor comes later
        service.preflight(config, p, facts)
    state.ensure_dir(p.run)
    with state.locked(p.lock):
        previous = _load_current(p)
        if previous is not None and previous.phase is Phase.ACTIVE:
            raise StateError(
                f"netspectre is already active (since {_ago(previous.since)})",
                "use `netspectre restart` to apply a changed config, or `stop` first",
            )
        # A start that died half-way left the original sysctl values in its state: keep them,
        # the live values may already be ours.
        saved = previous.sysctls if previous is not None else _ipv6_sysctls(policy)
        record = State(
            phase=Phase.APPLYING,
            backend=backend.value,
            since=time.time(),
            boot_id=state.boot_id(),
            sysctls=saved,
            policy=policy.summary(),
            config_path=config.path,
            tor=previous.tor if previous is not None else None,
            created=sorted(
                {*(previous.created if previous else []), *firewall.absent_builtins(backend)}
            ),
            ipv6_config=(previous.ipv6_config if previous is not None
                         else ipv6.snapshot() if policy.disable_ipv6 else {}),
        )
        state.save(p.state, record)
        # IPv6 off before any rule: it only closes, and makes a kill between iptables'
        # per-family commits fail closed.
        for key, value in sysctl.desired(policy.disable_ipv6).items():
            sysctl.write(key, value)
        if previous is not None and previous.backend != backend.value:
            firewall.remove(Backend(previous.backend))
        try:
            firewall.apply(backend, policy)
        except Error as exc:
            # Nothing of the ruleset is in force (each commit is atomic; iptables is tested
            # before the first): undo the sysctls and forget the intent, as if never started.
            if previous is None:
                for key, value in sysctl.restore_order(saved):
                    sysctl.write(key, value)
                ipv6.restore(record.ipv6_config)
                firewall.remove_everywhere(backend)
                state.remove(p.state)
            exc.hint = exc.hint or "nothing was changed; run with --debug to see the commands"
            raise
        # A kill before this save leaves tor's pid files, which is how `stop` finds it then.
        record = record.with_(tor=service.launch(config, p, facts), phase=Phase.ACTIVE)
        state.save(p.state, record)
        _clear_lockdown(p)
    if wait and on_event is not None:
        service.wait_bootstrap(config, p, on_event)
    return {
        "active": True,
        "backend": backend.value,
        "backend_evidence": evidence,
        "policy": policy.summary(),
        "ipv6_saved": saved,
    }


def _load_current(p: paths.Paths) -> State | None:
    """State of this boot, or None; a state file from before a reboot describes nothing live."""
    current = state.load(p.state)
    if current is not None and current.boot_id != state.boot_id():
        state.remove(p.state)
        return None
    return current


def _ago(since: float) -> str:
    seconds = int(time.time() - since)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s ago"


def stop(ctx: Context, *, force: bool = False) -> dict[str, Any]:
    """Remove what is ours and put back what we changed; from any phase, any number of times."""
    require_root("stop")
    p = ctx.paths
    notes: list[str] = []
    state.ensure_dir(p.run)
    with state.locked(p.lock, wait=True):
        try:
            current = state.load(p.state)
        except StateError as exc:
            if not force:
                raise
            notes.append(f"ignored unreadable state ({exc.message}); sysctls not restored")
            current = None
        if current is not None and current.boot_id != state.boot_id():
            notes.append("state is from a previous boot: the reboot reset rules and sysctls")
            state.remove(p.state)
            current = None
        if current is None:
            notes.append("no state recorded: removing whatever netspectre rules are present")
        else:
            state.save(p.state, current.with_(phase=Phase.STOPPING))
        failures: list[Error] = []
        try:  # Tor winds down first: the firewall still blocks everything while it does
            service.stop(current.tor if current else None, p)
        except Error as exc:
            failures.append(exc)
        pinned = Backend(current.backend) if current is not None else None
        failures += firewall.remove_everywhere(pinned)
        if current is not None and not failures:
            failures += firewall.remove_created(current.created)
        restored: dict[str, str] = {}
        if current is not None:
            for key, value in sysctl.restore_order(current.sysctls):
                try:
                    sysctl.write(key, value)
                    restored[key] = value
                except OSError as exc:
                    failures.append(Error(f"could not restore {key}={value}: {exc}"))
            failures += ipv6.restore(current.ipv6_config)
        if failures:
            raise CleanupFailed(failures)
        state.remove(p.state)
        _clear_lockdown(p)
        _forget_namespace_dirs(p)
    return {
        "active": False,
        "was_active": current is not None,
        "backend": current.backend if current else None,
        "sysctls_restored": restored,
        "notes": notes,
    }


def _forget_namespace_dirs(p: paths.Paths) -> None:
    """A namespace's runtime dirs go with its stop (tests and the lab make many namespaces);
    the host's stay. Tor's DataDirectory (under paths.lib) is kept: it makes the next start warm.
    """
    import shutil

    if p.run.name.startswith("netns-"):
        shutil.rmtree(p.daemon, ignore_errors=True)
        shutil.rmtree(p.run, ignore_errors=True)


def restart(ctx: Context) -> dict[str, Any]:
    """Replace the ruleset in one transaction: protection never lapses."""
    require_root("restart")
    config, p = ctx.config, ctx.paths
    facts = probe(config)
    policy = build(config, facts)
    backend, evidence = firewall.detect(config.firewall.backend)
    state.ensure_dir(p.run)
    with state.locked(p.lock, wait=True):
        current = _load_current(p)
        if current is None or current.phase is not Phase.ACTIVE:
            raise StateError("netspectre is not active", "use `netspectre start`")
        if policy.disable_ipv6 and not current.sysctls:
            current = current.with_(sysctls=_ipv6_sysctls(policy), ipv6_config=ipv6.snapshot())
        updated = current.with_(
            backend=backend.value,
            policy=policy.summary(),
            created=sorted({*current.created, *firewall.absent_builtins(backend)}),
        )
        state.save(p.state, updated.with_(phase=Phase.APPLYING))
        for key, value in sysctl.desired(policy.disable_ipv6).items():
            sysctl.write(key, value)
        # New rules first, old backend's removed after: both block, so nothing slips between.
        firewall.apply(backend, policy)
        if current.backend != backend.value:
            firewall.remove(Backend(current.backend))
        relaunched = False
        if config.tor.mode is TorMode.MANAGED and not service.status(
            config, p, current.tor
        ).get("supervisor_running"):
            # The firewall is already in force: Tor comes back behind it.
            service.stop(current.tor, p)
            updated = updated.with_(tor=service.launch(config, p, facts))
            relaunched = True
        state.save(p.state, updated)
    return {"active": True, "backend": backend.value, "backend_evidence": evidence,
            "policy": policy.summary(), "tor_relaunched": relaunched}


def status(ctx: Context) -> dict[str, Any]:
    require_root("status")
    p = ctx.paths
    current = _load_current(p)
    if current is None:
        leftovers = [b.value for b in Backend if _safe_active(b)]
        return {
            "active": False,
            "leftover_rules": leftovers,
            "lockdown": _lockdown(p),
            "tor": service.status(ctx.config, p, None),
        }
    backend = Backend(current.backend)
    in_force = firewall.active(backend)
    return {
        "active": current.phase is Phase.ACTIVE and in_force,
        "phase": current.phase.value,
        "backend": backend.value,
        "since": current.since,
        "ruleset_in_force": in_force,
        "policy": current.policy,
        "counters": firewall.counters(backend) if in_force else {},
        "ipv6_disabled": sysctl.read([f"{sysctl.IPV6_CONF}/all/disable_ipv6"]).get(
            f"{sysctl.IPV6_CONF}/all/disable_ipv6") == "1",
        "tor": service.status(ctx.config, p, current.tor),
    }


def _safe_active(backend: Backend) -> bool:
    try:
        return firewall.active(backend)
    except Error:
        return False


def rules(ctx: Context, backend_name: str | None) -> str:
    """What `start` would apply, rendered for a fresh system; needs no root, applies nothing."""
    from netspectre.config import BackendName

    config = ctx.config
    policy = build(config, probe(config))
    wanted = BackendName(backend_name) if backend_name else config.firewall.backend
    if wanted is BackendName.AUTO:
        backend, _ = firewall.detect(wanted)
    elif wanted is BackendName.NFT:
        backend = Backend.NFT
    elif wanted is BackendName.IPTABLES_LEGACY:
        backend = Backend.IPTABLES_LEGACY
    else:
        backend = Backend.IPTABLES_NFT
    if backend is Backend.NFT:
        from netspectre.backends import nft

        scripts = nft.render(policy)
    else:
        from netspectre.backends import iptables

        scripts = iptables.render(policy, variant=backend, saved_v4="", saved_v6="")
    return "".join(f"# {' '.join(s.argv)}\n{s.text}" for s in scripts)


def newnym(ctx: Context) -> dict[str, Any]:
    require_root("newnym")
    return service.newnym(ctx.config, ctx.paths)


def myip(ctx: Context) -> dict[str, Any]:
    return service.myip(ctx.config, ctx.paths)


def supervise(ctx: Context) -> int:
    return service.supervise(ctx.config, ctx.paths)


def verify(ctx: Context, *, probes: bool = True, exit_check: bool = True) -> dict[str, Any]:
    """The live self-test: the ruleset in force is the policy, the IPv6 sysctls, Tor's ports,
    then real leak probes (probes.py) and the exit check through Tor."""
    require_root("verify")
    config, p = ctx.config, ctx.paths
    current = _load_current(p)
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, detail: str = "", fix: str = "") -> None:
        checks.append({"check": name, "ok": ok, "detail": detail, "fix": fix})

    active = current is not None and current.phase is Phase.ACTIVE
    check("state: active", active, "no state" if current is None else current.phase.value,
          "sudo netspectre start")
    policy = build(config, probe(config))
    if current is not None:
        backend = Backend(current.backend)
        live, want = firewall.ours(backend), firewall.expected(backend, policy)
        detail = "" if live == want else _first_difference(want, live)
        check(f"ruleset in force equals the policy ({backend.value})", live == want, detail,
              "sudo netspectre restart")
        if policy.disable_ipv6:
            values = sysctl.read(sysctl.ipv6_keys(sysctl.interfaces()))
            on = sorted(k.split("/")[-2] for k, v in values.items() if v != "1")
            check("IPv6 disabled on every interface", not on,
                  "enabled on: " + ", ".join(on) if on else "", "sudo netspectre restart")
    tor = service.status(config, p, current.tor if current else None)
    for key in ("trans_port_listening", "dns_port_listening"):
        if key in tor:
            check(key.replace("_", " "), bool(tor[key]), "",
                  "sudo netspectre status; sudo netspectre restart")
    if probes and current is not None:
        from netspectre import probes as leak

        v = config.verify
        battery = leak.battery(v.target4, v.target6, v.lan_dns)
        backend = Backend(current.backend)
        checks += leak.run(battery, v.timeout, lambda: firewall.counters(backend),
                           config.tor.virtual_network)
    if exit_check:
        try:
            seen = service.myip(config, p)
        except Error as exc:
            check("exit check through Tor", False, exc.message, exc.hint or "")
        else:
            check("exit check through Tor", bool(seen.get("IsTor")),
                  f"exit {seen.get('IP', '?')}, IsTor {seen.get('IsTor')}", "netspectre myip")
    return {"ok": all(c["ok"] is not False for c in checks), "checks": checks}


def _first_difference(want: str, live: str) -> str:
    import difflib

    diff = [d for d in difflib.unified_diff(want.splitlines(), live.splitlines(), lineterm="",
                                            n=0) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    return "; ".join(diff[:4])


# -- boot: the systemd unit's entry point ----------------------------------------------------

# Nobody's uid: when even Tor's user cannot be resolved, the lockdown ruleset exempts no one.
NO_UID = 4294967294


def boot(config_path: str | None, p: paths.Paths) -> dict[str, Any]:
    """`start --boot`: start without waiting for Tor; if that fails for any reason (bad config,
    tor missing, …) keep the kill switch closed anyway: apply the ruleset with no Tor behind it
    (new TCP is refused by the closed TransPort, DNS by the closed DNSPort, the rest as always)
    and record why in paths.lockdown. The error is re-raised so the unit shows as failed."""
    from netspectre.config import load

    require_root("start")
    current = _load_current(p)
    if current is not None and current.phase is Phase.ACTIVE:  # the unit started twice
        return {"active": True, "backend": current.backend, "already_active": True}
    try:
        return start(Context(config=load(config_path), paths=p), wait=False, boot=True)
    except Error as exc:
        lockdown(config_path, p, f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        raise


def lockdown(config_path: str | None, p: paths.Paths, reason: str) -> None:
    """Block everything that is not loopback/LAN, with whatever of the config is usable."""

    from netspectre.config import Config, load

    try:
        config = load(config_path)
    except Error:
        config = Config()
    state.ensure_dir(p.run)
    if not any(_safe_active(b) for b in Backend):
        try:
            facts = probe(config)
        except Error:
            facts = HostFacts(tor_uid=NO_UID, tor_user="(none)")
        try:
            backend, _ = firewall.detect(config.firewall.backend)
        except Error:
            from netspectre.config import BackendName

            backend, _ = firewall.detect(BackendName.AUTO)
        firewall.apply(backend, build(config, facts))
    state.save_lockdown(p.lockdown, reason, time.time())


def _lockdown(p: paths.Paths) -> dict[str, Any] | None:
    try:
        return state.load_lockdown(p.lockdown)
    except StateError as exc:
        return {"reason": exc.message}


def _clear_lockdown(p: paths.Paths) -> None:
    state.remove(p.lockdown)


# -- enable / disable: protection from boot -------------------------------------------------


# What systemd gives a unit: no PYTHONPATH, no virtualenv activation, no user's PATH.
BOOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8"}


def enable(
    ctx: Context, *, now: bool = False, root: str = "/", command: list[str] | None = None,
    on_event: Callable[[BootstrapEvent], None] | None = None,
) -> dict[str, Any]:
    """Write the unit for this netspectre and enable it; with now, also start."""
    import shlex
    import sys

    from netspectre import system, units

    require_root("enable")
    system.require("systemctl")
    if command is None:
        command = units.command_for(sys.argv[0], sys.executable, ctx.config.path)
    # A unit that cannot even run netspectre at boot would leave the machine unprotected
    # (no lockdown either): refuse now, while the user is watching.
    probe_run = system.run([*command, "--version"], check=False, env=BOOT_ENV)
    if probe_run.returncode != 0:
        said = (probe_run.stderr.strip().splitlines() or [f"exit {probe_run.returncode}"])[-1]
        raise Error(
            f"the boot unit would run `{shlex.join(command)}`, which fails without your "
            f"environment: {said}",
            "install netspectre (sudo ./install.sh, or pipx) and run `netspectre enable` from "
            "that installation",
        )
    written = units.install(root, command)
    _systemctl(root, "enable", units.UNIT)
    data: dict[str, Any] = {"unit": written, "at_boot": True}
    if now:
        data["started"] = start(ctx, wait=True, on_event=on_event)["active"]
    else:
        data["note"] = "protection starts at next boot; `netspectre start` protects now"
    return data


def disable(ctx: Context, *, now: bool = False, root: str = "/") -> dict[str, Any]:
    """Disable and remove the unit. The firewall stays unless now (then `stop`)."""
    from netspectre import system, units

    require_root("disable")
    system.require("systemctl")
    if os.path.exists(os.path.join(root, units.UNIT_DIR, units.UNIT)):
        _systemctl(root, "disable", units.UNIT)
    removed = units.remove(root)
    _systemctl(root, "daemon-reload")
    data: dict[str, Any] = {"removed": removed, "at_boot": False}
    if now:
        data["stopped"] = not stop(ctx)["active"]
    else:
        data["note"] = "the firewall in force now stays until `netspectre stop`"
    return data


def _systemctl(root: str, *args: str) -> None:
    from netspectre import system

    if root != "/":  # an image or chroot: enable/disable only edit links; nothing to reload
        if args[0] != "daemon-reload":
            system.run(["systemctl", f"--root={root}", *args], check=True)
        return
    if args[0] == "daemon-reload" and not os.path.isdir("/run/systemd/system"):
        return  # systemd is not running (a container, a chroot): nothing to reload
    if args[0] != "daemon-reload":
        _systemctl(root, "daemon-reload")
    system.run(["systemctl", *args], check=True)
