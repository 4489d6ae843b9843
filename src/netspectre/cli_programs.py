"""The handlers of the commands that host another program (`run`, `bypass`): the program owns
the terminal, its exit status is ours; what netspectre has to say goes through cli's Output."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netspectre.cli import Output
    from netspectre.commands import Context


def _program(args: argparse.Namespace) -> list[str]:
    argv: list[str] = args.argv
    return argv[1:] if argv[:1] == ["--"] else argv


def run(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import run as run_cmd

    return run_cmd.run(ctx, _program(args), user=args.user, shared=args.shared,
                       notice=lambda line: out.notice(f"run: {line}"))


def bypass(ctx: Context, args: argparse.Namespace, out: Output) -> int:
    from netspectre.commands import bypass as bypass_cmd

    bypass_cmd.run(ctx, args.argv, user=args.user, group=args.group)  # execs, or raises
    return 1
