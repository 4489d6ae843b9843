"""argparse front end: the only module that prints, picks exit codes and reads --json/--debug."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from netspectre import __version__
from netspectre.errors import CleanupFailed, CommandFailed, Error, ExitStatus

if TYPE_CHECKING:
    from netspectre.config import Config

DEFAULT_CONFIG = "/etc/netspectre/netspectre.toml"

EPILOG = """\
Every command that changes the system needs root. `rules` renders without applying.
Configuration: /etc/netspectre/netspectre.toml (see README). Exit status 0 on success."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netspectre",
        description="Force every packet through Tor (transparent proxy with a kill switch).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"netspectre {__version__}")
    parser.add_argument("--config", metavar="PATH", help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--debug", action="store_true", help="log commands run; tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("start", help="torify the machine: firewall first, then Tor")
    p.add_argument("--no-wait", action="store_true", help="return before Tor has bootstrapped")
    p.add_argument("--boot", action="store_true",
                   help="boot mode (the systemd unit): implies --no-wait; if start fails, "
                        "the ruleset is applied anyway with no Tor behind it (fail closed)")
    p = sub.add_parser("stop", help="stop Tor, remove our rules, restore sysctls")
    p.add_argument("--force", action="store_true", help="clean up even if the state is unreadable")
    sub.add_parser("restart", help="re-apply the config in one transaction (no gap)")
    sub.add_parser("status", help="what is in force, counters, Tor's state")
    p = sub.add_parser("rules", help="print the ruleset `start` would apply (no root needed)")
    p.add_argument("--backend", choices=["nft", "iptables", "iptables-nft", "iptables-legacy"])
    sub.add_parser("myip", aliases=["check"], help="ask an exit-check service through Tor")
    sub.add_parser("newnym", help="new circuits for new connections")
    p = sub.add_parser("verify", help="live self-test: rules, leak probes, exit check")
    p.add_argument("--no-probes", action="store_true", help="skip the leak probes")
    p.add_argument("--no-myip", action="store_true", help="skip the exit check through Tor")
    sub.add_parser("doctor", help="explain what is wrong, with the command that fixes it")
    p = sub.add_parser("enable", help="protect from boot: install and enable the systemd unit")
    p.add_argument("--now", action="store_true", help="also start now")
    p = sub.add_parser("disable", help="no protection at boot (does not lift the firewall)")
    p.add_argument("--now", action="store_true", help="also stop now")
    lab = sub.add_parser("lab", help="a private Tor network in namespaces (offline demo)")
    lab.add_argument("action", choices=["up", "down", "status", "demo", "shell"])
    lab.add_argument("--backend", choices=["nft", "iptables-nft", "iptables-legacy"],
                     help="demo: the firewall backend netspectre uses in the client")
    lab.add_argument("--keep", action="store_true", help="demo: leave the lab up afterwards")
    sub.add_parser("_supervise", help=argparse.SUPPRESS)
    p = sub.add_parser("_man", help=argparse.SUPPRESS)  # the man page, from this parser
    p = sub.add_parser("_completion", help=argparse.SUPPRESS)
    p.add_argument("shell", choices=["bash", "zsh"])
    p = sub.add_parser("_units", help=argparse.SUPPRESS)  # install.sh: write the unit files
    p.add_argument("--root", default="/", help="write under this root directory")
    p.add_argument("--exec", dest="exec_path", help="the netspectre executable the unit runs")
    return parser


def _load_config(path: str | None) -> Config:
    from netspectre import config

    return config.load(path)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.tty = sys.stderr.isatty()

    def report(self, data: dict[str, Any], text: str) -> None:
        if self.json:
            import json

            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            print(text)

    def event(self, ev: Any) -> None:
        if self.json:
            import json

            print(json.dumps({"event": "bootstrap", "progress": ev.progress, "tag": ev.tag,
                              "summary": ev.summary}), flush=True)
        elif self.tty:
            width = 30
            filled = width * ev.progress // 100
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if ev.progress >= 100 else ""
            print(f"\rTor [{bar}] {ev.progress:3d}% {ev.summary[:40]:<40}", end=end,
                  file=sys.stderr, flush=True)
        else:
            print(f"tor: bootstrapped {ev.progress}%: {ev.summary}", file=sys.stderr, flush=True)


def _fmt_status(data: dict[str, Any]) -> str:
    import time
    tor = data.get("tor") or {}
    lines = []
    if data.get("active"):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["since"]))
        lines.append(f"netspectre: ACTIVE since {since} (backend {data['backend']})")
    elif data.get("phase"):
        lines.append(f"netspectre: NOT ACTIVE (state says {data['phase']!r}; "
                     f"ruleset in force: {data.get('ruleset_in_force')}) — run `netspectre stop`")
    else:
        lines.append("netspectre: not active")
        if data.get("lockdown"):
            lines.append("  LOCKDOWN: `start --boot` failed, so only the blocking ruleset is in "
                         f"force: {data['lockdown'].get('reason')}")
            lines.append("  fix the cause, then `netspectre start` (or `netspectre stop` to lift)")
        elif data.get("leftover_rules"):
            lines.append("  leftover rules from: " + ", ".join(data["leftover_rules"])
                         + " — run `netspectre stop`")
    pol = data.get("policy")
    if pol:
        lines.append(
            f"  policy: TCP → 127.0.0.1:{pol['trans_port']}, DNS → 127.0.0.1:{pol['dns_port']}, "
            f"virtual network {pol['virtual_network']}, tor user {pol['tor_user']} "
            f"(uid {pol['tor_uid']})")
        lan = ", ".join(pol["lan"]) or "none"
        if pol.get("lan_count", 0) > len(pol["lan"]):
            lan += f" … ({pol['lan_count']} ranges)"
        lines.append(f"  LAN: {lan} ({'direct' if pol['allow_lan'] else 'blocked'}); "
                     f"incoming: {pol['incoming']}; IPv6: {pol['ipv6']}")
    if "ipv6_disabled" in data:
        lines.append(f"  IPv6 sysctl disabled: {'yes' if data['ipv6_disabled'] else 'no'}")
    counters = data.get("counters") or {}
    if counters:
        torified = counters.get("tcp_torified", {}).get("packets", 0)
        dns = counters.get("dns_redirected", {}).get("packets", 0)
        lines.append(f"  connections torified: {torified}; DNS queries redirected: {dns}")
        blocked = {k.removeprefix("blocked_"): v["packets"] for k, v in sorted(counters.items())
                   if k.startswith("blocked_") and v["packets"]}
        lines.append("  packets blocked: " + (", ".join(f"{k} {v}" for k, v in blocked.items())
                                               or "none"))
    if tor:
        pid = f", pid {tor['tor_pid']}" if tor.get("tor_pid") else ""
        lines.append(f"  tor ({tor.get('mode', '?')}{pid}): {tor.get('message', '')}".rstrip(": "))
        ports = [f"{name.split('_')[0]}Port {'listening' if tor[name] else 'NOT listening'}"
                 for name in ("trans_port_listening", "dns_port_listening",
                              "socks_port_listening") if name in tor]
        if ports:
            lines.append("    " + "; ".join(p.replace("transPort", "TransPort")
                                            .replace("dnsPort", "DNSPort")
                                            .replace("socksPort", "SocksPort") for p in ports))
    return "\n".join(lines)


def _fmt_kv(title: str, data: dict[str, Any]) -> str:
    lines = [title]
    for key, value in data.items():
        if value in (None, [], {}):
            continue
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def _fmt_checks(data: dict[str, Any]) -> str:
    """verify/doctor as a table: result, check, what happened (and the fix under a failure)."""
    checks = data["checks"]
    width = min(max((len(c["check"]) for c in checks), default=0), 48)
    lines = []
    for c in checks:
        mark = "skip" if c["ok"] is None else ("ok" if c["ok"] else "FAIL")
        detail = c.get("detail") or ""
        lines.append(f"{mark:<4}  {c['check']:<{width}}  {detail}".rstrip())
        if c.get("fix") and c["ok"] is False:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c['fix']}")
    passed = sum(1 for c in checks if c["ok"])
    failed = sum(1 for c in checks if c["ok"] is False)
    verdict = "PASS" if data.get("ok") else "FAIL"
    lines.append(f"{verdict}: {passed} ok, {failed} failed"
                 + (f", {len(checks) - passed - failed} skipped" if passed + failed < len(checks)
                    else ""))
    return "\n".join(lines)


def _dispatch(args: argparse.Namespace, out: Output) -> int:
    from netspectre import commands, paths

    if args.command == "_man":
        from netspectre import docs

        out.report({}, docs.manpage(_parser()).rstrip("\n"))
        return 0
    if args.command == "_completion":
        from netspectre import docs

        out.report({}, docs.completion(_parser(), args.shell).rstrip("\n"))
        return 0
    if args.command == "_units":
        from netspectre import units

        command = ([args.exec_path] if args.exec_path
                   else units.command_for(sys.argv[0], sys.executable, args.config))
        written = units.install(args.root, command)
        out.report({"written": written}, "\n".join(written))
        return 0
    if args.command == "doctor":
        from netspectre import doctor

        data = doctor.diagnose(args.config, paths.detect())
        out.report(data, _fmt_checks(data))
        return 0 if data.get("ok") else 1
    if args.command == "start" and args.boot:
        data = commands.boot(args.config, paths.detect())
        out.report(data, f"netspectre: active from boot (backend {data['backend']}); "
                         "Tor bootstraps when the network comes up")
        return 0
    if args.command == "lab":
        from netspectre.lab import cli as lab_cli
        from netspectre.lab import spec as lab_spec

        spec = lab_spec.from_mapping(_load_config(args.config).lab)
        return int(lab_cli.run(args.action, out, spec, backend=args.backend, keep=args.keep))
    ctx = commands.Context(config=_load_config(args.config), paths=paths.detect())
    if args.command == "start":
        data = commands.start(ctx, wait=not (args.no_wait or args.boot), on_event=out.event)
        out.report(data, f"netspectre: active (backend {data['backend']}); "
                         "all traffic now goes through Tor or is blocked")
    elif args.command == "stop":
        data = commands.stop(ctx, force=args.force)
        text = "netspectre: stopped; rules removed" + (
            ", sysctls restored" if data["sysctls_restored"] else "")
        text += "".join(f"\n  note: {n}" for n in data["notes"])
        out.report(data, text)
    elif args.command == "restart":
        data = commands.restart(ctx)
        out.report(data, f"netspectre: ruleset replaced atomically (backend {data['backend']})")
    elif args.command == "status":
        data = commands.status(ctx)
        out.report(data, _fmt_status(data))
    elif args.command == "rules":
        text = commands.rules(ctx, args.backend)
        out.report({"rules": text}, text.rstrip("\n"))
    elif args.command in ("myip", "check"):
        data = commands.myip(ctx)
        out.report(data, _fmt_kv("exit check:", data))
        return 0 if data.get("IsTor") else int(ExitStatus.TOR)
    elif args.command == "newnym":
        data = commands.newnym(ctx)
        out.report(data, _fmt_kv("newnym:", data))
    elif args.command == "verify":
        data = commands.verify(ctx, probes=not args.no_probes, exit_check=not args.no_myip)
        out.report(data, _fmt_checks(data))
        return 0 if data.get("ok") else 1
    elif args.command == "enable":
        data = commands.enable(ctx, now=args.now, on_event=out.event)
        out.report(data, _fmt_kv("netspectre: enabled at boot", data))
    elif args.command == "disable":
        data = commands.disable(ctx, now=args.now)
        out.report(data, _fmt_kv("netspectre: disabled at boot", data))
    elif args.command == "_supervise":
        return commands.supervise(ctx)
    return 0


def _print_error(exc: Error, debug: bool) -> None:
    if isinstance(exc, CleanupFailed):
        print("netspectre: error: cleanup failed:", file=sys.stderr)
        for failure in exc.failures:
            print(f"  - {failure.message}", file=sys.stderr)
    else:
        print(f"netspectre: error: {exc.message}", file=sys.stderr)
    if isinstance(exc, CommandFailed) and debug and exc.stderr:
        print(exc.stderr, file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.debug:
        from netspectre import system

        system.trace = lambda line: print(f"+ {line}", file=sys.stderr, flush=True)
    out = Output(args.json)
    try:
        return _dispatch(args, out)
    except KeyboardInterrupt:
        print("netspectre: interrupted", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)
    except BrokenPipeError:  # `netspectre rules | head`: the reader left; not our error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Error as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        _print_error(exc, args.debug)
        if args.json:
            import json

            print(json.dumps({"error": exc.message, "hint": exc.hint}))
        return int(exc.status)
