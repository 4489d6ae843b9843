"""The parser's outline: its visible options and commands, walked once from argparse.

Pure: what the man page and the completions are generated from.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # option strings; () for a positional
    dest: str
    metavar: str | None  # None: takes no argument
    choices: tuple[str, ...]
    help: str


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    help: str
    options: tuple[Option, ...]  # optionals first, then positionals, each in parser order

    @property
    def optionals(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.flags)

    @property
    def positionals(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if not o.flags)


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion: %(default)s, %(prog)s, %(choices)s
        params = dict(vars(action), prog=prog)
        if action.choices is not None:
            params["choices"] = ", ".join(str(c) for c in action.choices)
        text = text % params
    return " ".join(text.split())


def options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    """The visible options and positionals of one parser (subcommand dispatchers excluded)."""
    found: list[Option] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        takes_value = action.nargs != 0
        metavar: str | None = None
        if takes_value:
            if isinstance(action.metavar, str):
                metavar = action.metavar
            elif action.choices is not None and action.option_strings:
                metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
            else:
                metavar = action.dest.upper() if action.option_strings else action.dest
        found.append(Option(
            flags=tuple(action.option_strings),
            dest=action.dest,
            metavar=metavar,
            choices=tuple(str(c) for c in action.choices or ()),
            help=_help(action, parser.prog),
        ))
    return tuple(sorted(found, key=lambda o: not o.flags))


def commands(parser: argparse.ArgumentParser) -> tuple[Command, ...]:
    """The visible subcommands in parser order; hidden ones (help=SUPPRESS, `_name`) skipped."""
    found: list[Command] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a for a in action._choices_actions}
        by_parser: dict[int, list[str]] = {}
        subparsers: dict[int, argparse.ArgumentParser] = {}
        for name, sub in action.choices.items():
            by_parser.setdefault(id(sub), []).append(name)
            subparsers[id(sub)] = sub
        for key, names in by_parser.items():
            name, aliases = names[0], tuple(names[1:])
            pseudo = helps.get(name)
            if pseudo is None or pseudo.help == argparse.SUPPRESS or name.startswith("_"):
                continue
            sub = subparsers[key]
            found.append(Command(name, aliases, _help(pseudo, parser.prog), options(sub)))
    return tuple(found)
