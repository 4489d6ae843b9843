"""argparse front end: the only module that prints, picks exit codes and reads --json/--debug."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from netspectre import cli_programs, cli_text  # cheap: no command module imported yet
from netspectre.cli_parser import parser as _parser
from netspectre.errors import CleanupFailed, CommandFailed, Error, ExitStatus

if TYPE_CHECKING:
    from netspectre.commands import Context
    from netspectre.config import Config
    from netspectre.tor.protocol import BootstrapEvent

def _load_config(path: str | None) -> Config:
    from netspectre import config

    return config.load(path)


class Report(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.tty = sys.stderr.isatty()

    def report(self, data: Report | dict[str, Any], text: str) -> None:
        if self.json:
            import json

            payload = data if isinstance(data, dict) else data.to_json()
            print(json.dumps(payload, indent=2, sort_keys=True, default=str))
        else:
            print(text)

    def notice(self, line: str) -> None:
        print(f"netspectre: {line}", file=sys.stderr, flush=True)

    def event(self, ev: BootstrapEvent) -> None:
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


# -- commands that need no config or a config of their own ---------------------------------


def _man(args: argparse.Namespace, out: Output) -> int:
    from netspectre import docs

    out.report({}, docs.manpage(_parser()).rstrip("\n"))
    return 0


def _completion(args: argparse.Namespace, out: Output) -> int:
    from netspectre import docs

    out.report({}, docs.completion(_parser(), args.shell).rstrip("\n"))
    return 0


def _units(args: argparse.Namespace, out: Output) -> int:
    from netspectre import units
    from netspectre.units import Written

    command = ([args.exec_path] if args.exec_path
               else units.command_for(sys.argv[0], sys.executable, args.config))
    written = Written(tuple(units.install(args.root, command)))
    out.report(written, "\n".join(written.written))
    return 0


def _doctor(args: argparse.Namespace, out: Output) -> int:
    from netspectre import doctor, paths

    report = doctor.diagnose(args.config, paths.detect())
    out.report(report, cli_text.checks(report))
    return 0 if report.ok else 1


def _lab(args: argparse.Namespace, out: Output) -> int:
    from netspectre.lab import cli as lab_cli
    from netspectre.lab import spec as lab_spec

    spec = lab_spec.from_mapping(_load_config(args.config).lab)
    return int(lab_cli.run(args.action, out, spec, backend=args.backend, keep=args.keep))


# -- commands on a Context -------------------------------------------------------------------


def _start(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import lifecycle

    if args.boot:
        from netspectre.commands import boot

        report = boot.boot(args.config, ctx.paths)
        out.report(report, f"netspectre: active from boot (backend {report.backend}); "
                           "Tor bootstraps when the network comes up")
        return 0
    started = lifecycle.start(ctx, wait=not args.no_wait, on_event=out.event,
                              firewall=not args.no_firewall)
    out.report(started, cli_text.start(started))
    return 0


def _stop(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import lifecycle

    report = lifecycle.stop(ctx, force=args.force)
    out.report(report, cli_text.stop(report))
    return 0


def _restart(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import lifecycle

    report = lifecycle.restart(ctx, wait=not args.no_wait, on_event=out.event)
    out.report(report, cli_text.restart(report))
    return 0


def _status(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import report

    found = report.status(ctx)
    out.report(found, cli_text.status(found))
    return 0


def _rules(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import report

    text = report.rules(ctx, args.backend)
    out.report({"rules": text}, text.rstrip("\n"))
    return 0


def _myip(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import report

    seen = report.myip(ctx)
    out.report(seen, cli_text.myip(seen))
    return 0 if seen.is_tor else int(ExitStatus.TOR)


def _newnym(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import report

    done = report.newnym(ctx)
    out.report(done, cli_text.newnym(done))
    return 0


def _verify(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import report

    found = report.verify(ctx, probe=not args.no_probes, exit_check=not args.no_myip)
    out.report(found, cli_text.checks(found))
    return 0 if found.ok else 1


def _enable(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import boot

    done = boot.enable(ctx, now=args.now, on_event=out.event)
    out.report(done, cli_text.unit(done))
    return 0


def _disable(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import boot

    done = boot.disable(ctx, now=args.now)
    out.report(done, cli_text.unit(done))
    return 0


def _watch(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    """Ctrl-C is how watch ends: status 0, not 130."""
    import json

    from netspectre.commands import watch

    redraw = sys.stdout.isatty() and not out.json
    try:
        for frame in watch.watch(ctx):
            if redraw:
                print("\033[H\033[2J" + cli_text.watch_screen(frame), flush=True)
                continue
            for changed in frame.changed:
                print(json.dumps(changed.to_json()) if out.json else cli_text.attempt(changed))
            if frame.summary:
                print(json.dumps(frame.to_json()) if out.json
                      else cli_text.watch_summary(frame))
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def _supervise(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.tor import managed

    return managed.supervise(ctx.config, ctx.paths)


def _guard(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.backends import guardwatch

    return guardwatch.run(ctx.paths)


PLAIN: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "_man": _man, "_completion": _completion, "_units": _units, "doctor": _doctor, "lab": _lab,
}
WITH_CONTEXT: dict[str, Callable[[Context, argparse.Namespace, Output], int]] = {
    "start": _start, "stop": _stop, "restart": _restart, "status": _status, "rules": _rules,
    "myip": _myip, "check": _myip, "newnym": _newnym, "verify": _verify, "enable": _enable,
    "disable": _disable, "_supervise": _supervise, "watch": _watch, "_guard": _guard,
    "run": cli_programs.run, "bypass": cli_programs.bypass,
}


def _dispatch(args: argparse.Namespace, out: Output) -> int:
    if args.command in PLAIN:
        return PLAIN[args.command](args, out)
    from netspectre import paths
    from netspectre.commands import Context

    if args.command == "start" and args.boot:  # its own config handling: a bad one locks down
        from netspectre.config import Config
        return _start(Context(config=Config(), paths=paths.detect()), args, out)
    ctx = Context(config=_load_config(args.config), paths=paths.detect())
    return WITH_CONTEXT[args.command](ctx, args, out)


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
