"""The man page and the shell completions, generated from the argparse parser (written once).

Pure: the parser in, text out. install.sh writes the results via `netspectre _man` and
`netspectre _completion bash|zsh`.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass

from netspectre import __version__, paths
from netspectre.config import DEFAULT_PATH
from netspectre.errors import ExitStatus

# What each exit status means; a status added to ExitStatus without an entry here still appears
# (named after the member), so the page cannot silently miss one.
EXIT_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success",
    ExitStatus.FAILURE: "failure (a command failed, a check did not pass)",
    ExitStatus.USAGE: "bad command line",
    ExitStatus.CONFIG: "invalid or unreadable configuration; nothing was changed",
    ExitStatus.PERMISSION: "not root (the command changes the system)",
    ExitStatus.MISSING_TOOL: "a required program (nft, iptables, tor, …) is not installed",
    ExitStatus.STATE: "the state file is missing, unreadable or says something else is running",
    ExitStatus.TOR: "Tor failed (did not start, did not bootstrap, or the exit check says not Tor)",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C)",
}

FILES: tuple[tuple[str, str], ...] = (
    (DEFAULT_PATH, "the configuration (TOML); a missing default file means defaults"),
    (str(paths.RUN_ROOT), "state (state.json, lock, torrc), root only; "
                          "netns-NAME/ for other network namespaces"),
    (str(paths.TOR_RUN_ROOT), "the managed tor's control socket and cookie"),
    (str(paths.LIB_ROOT), "the managed tor's DataDirectory, kept across starts"),
    ("/etc/systemd/system/netspectre.service", "the systemd unit (`netspectre enable`)"),
)

SEE_ALSO = ("tor(1)", "nft(8)", "iptables(8)", "systemctl(1)")


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


# --- man page -------------------------------------------------------------------------------

def _roff(text: str) -> str:
    """Escape running text: backslashes, non-ASCII, `code` in bold; one line per input line."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    out = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in out)
    out = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", out)
    lines = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith((".", "'")):
            line = "\\&" + line  # a leading dot or quote would be read as a request
        lines.append(line)
    return "\n".join(lines)


def _flag(option: Option) -> str:
    names = ", ".join(f"\\fB{_roff(f)}\\fR" for f in option.flags)
    if option.metavar is None:
        return names
    meta = f"\\fI{_roff(option.metavar)}\\fR"
    return f"{names} {meta}" if names else meta


def _synopsis(prog: str, command: Command) -> str:
    parts = [f"\\fB{_roff(prog)} {_roff(command.name)}\\fR"]
    for o in command.optionals:
        if o.flags == ("-h",) or "--help" in o.flags:
            continue
        flag = f"\\fB{_roff(o.flags[-1])}\\fR"
        if o.metavar is not None:
            flag += f" \\fI{_roff(o.metavar)}\\fR"
        parts.append(f"[{flag}]")
    parts.extend(f"\\fI{_roff(o.metavar or o.dest)}\\fR" for o in command.positionals)
    return " ".join(parts)


def _tagged(tag: str, body: str) -> list[str]:
    return [".TP", tag, _roff(body) if body else "\\&"]


def manpage(parser: argparse.ArgumentParser) -> str:
    """roff for man(7), section 8, from the parser: options, every visible command, the epilog,
    files, exit statuses."""
    prog = parser.prog
    title = prog.upper()
    lines = [
        f'.TH {_roff(title)} 8 "" "{_roff(prog)} {_roff(__version__)}" "System Administration"',
        ".nh",  # no hyphenation and ragged right: option names must stay copyable
        ".ad l",
        ".SH NAME",
        f"{_roff(prog)} \\- {_roff((parser.description or '').rstrip('.'))}",
        ".SH SYNOPSIS",
        f"\\fB{_roff(prog)}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fICOMMAND OPTIONS\\fR]",
        ".SH DESCRIPTION",
        _roff(parser.description or ""),
    ]
    if parser.epilog:
        lines += [".PP", _roff(parser.epilog)]
    lines.append(".SH OPTIONS")
    for o in options(parser):
        lines += _tagged(_flag(o), o.help)
    lines.append(".SH COMMANDS")
    for c in commands(parser):
        heading = c.name + "".join(f", {a}" for a in c.aliases)
        lines += [f".SS {_roff(heading)}", _synopsis(prog, c), ".PP", _roff(c.help)]
        if c.aliases:
            also = ", ".join(f"`{a}`" for a in c.aliases)
            lines += [".PP", _roff(f"Also available as {also}.")]
        for o in c.options:
            if "--help" in o.flags:
                continue
            body = o.help
            if o.choices and not o.flags:  # an optional's metavar already lists them
                body = (body.rstrip(".") + "; " if body else "") + "one of: " + ", ".join(
                    f"`{c}`" for c in o.choices)
            lines += _tagged(_flag(o), body)
    lines.append(".SH FILES")
    for path, what in FILES:
        lines += _tagged(f"\\fI{_roff(path)}\\fR", what)
    lines.append(".SH EXIT STATUS")
    for status in ExitStatus:
        meaning = EXIT_MEANINGS.get(status, status.name.lower().replace("_", " "))
        lines += _tagged(f"\\fB{int(status)}\\fR", meaning)
    lines += [".SH SEE ALSO", ",\n".join(f".BR {p.replace('(', ' (')}" for p in SEE_ALSO)]
    return "\n".join(lines) + "\n"


# --- completions ----------------------------------------------------------------------------

def _words(items: tuple[str, ...] | list[str]) -> str:
    return shlex.quote(" ".join(items))


def _bash_args(opts: tuple[Option, ...], indent: str) -> list[str]:
    """A `case $prev` completing the argument of an option that takes one."""
    arms = []
    for o in opts:
        if not o.flags or o.metavar is None:
            continue
        if o.choices:
            body = f'COMPREPLY=($(compgen -W {_words(o.choices)} -- "$cur")); return 0'
        else:
            body = 'COMPREPLY=($(compgen -f -- "$cur")); return 0'
        arms.append(f"{indent}    {'|'.join(shlex.quote(f) for f in o.flags)}) {body} ;;")
    if not arms:
        return []
    return [f'{indent}case "$prev" in', *arms, f"{indent}esac"]


def _bash_valued(opts: tuple[Option, ...]) -> list[str]:
    return [f for o in opts if o.metavar is not None for f in o.flags]


def _bash(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    glob = options(parser)
    cmds = commands(parser)
    names = [n for c in cmds for n in (c.name, *c.aliases)]
    global_valued = _bash_valued(glob)
    lines = [
        f"# bash completion for {prog}; generated by `{prog} _completion bash`, do not edit",
        f"{fn}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" npos=0 i word',
        "    COMPREPLY=()",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        word="${COMP_WORDS[i]}"',
        '        if [[ -z "$cmd" ]]; then',
        '            case "$word" in',
    ]
    if global_valued:
        arm = "|".join(shlex.quote(f) for f in global_valued)
        lines.append(f"                {arm}) ((i++)) ;;")
    lines += [
        "                -*) ;;",
        '                *) cmd="$word" ;;',
        "            esac",
        "            continue",
        "        fi",
        '        case "$cmd $word" in',
    ]
    for c in cmds:
        valued = _bash_valued(c.optionals)
        if valued:
            pattern = tuple(f"{n} {f}" for n in (c.name, *c.aliases) for f in valued)
            lines.append(f"            {'|'.join(shlex.quote(p) for p in pattern)}) ((i++)) ;;")
    lines += [
        '            *" "-*) ;;',
        "            *) ((npos++)) ;;",
        "        esac",
        "    done",
        '    if [[ -z "$cmd" ]]; then',
        *_bash_args(glob, "        "),
        '        if [[ "$cur" == -* ]]; then',
        "            COMPREPLY=($(compgen -W "
        f'{_words([f for o in glob for f in o.flags])} -- "$cur"))',
        "        else",
        f'            COMPREPLY=($(compgen -W {_words(names)} -- "$cur"))',
        "        fi",
        "        return 0",
        "    fi",
        '    case "$cmd" in',
    ]
    for c in cmds:
        lines.append(f"        {'|'.join(shlex.quote(n) for n in (c.name, *c.aliases))})")
        lines += _bash_args(c.optionals, "            ")
        flags = [f for o in c.optionals for f in o.flags]
        lines += [
            '            if [[ "$cur" == -* ]]; then',
            f'                COMPREPLY=($(compgen -W {_words(flags)} -- "$cur"))',
        ]
        for index, p in enumerate(c.positionals):
            words = (f'COMPREPLY=($(compgen -W {_words(p.choices)} -- "$cur"))' if p.choices
                     else 'COMPREPLY=($(compgen -f -- "$cur"))')
            lines += [f"            elif ((npos == {index})); then", f"                {words}"]
        lines += ["            fi", "            ;;"]
    lines += [
        "    esac",
        "    return 0",
        "}",
        f"complete -F {fn} {shlex.quote(prog)}",
    ]
    return "\n".join(lines) + "\n"


def _zsh_desc(text: str) -> str:
    """A description inside an _arguments spec's [...] or after _describe's `name:`."""
    return re.sub(r"([\\\[\]:])", r"\\\1", text)


def _zsh_specs(opts: tuple[Option, ...]) -> list[str]:
    """_arguments specs, shell-quoted: one per option string, aliases exclude each other."""
    specs = []
    for position, o in enumerate(o for o in opts if not o.flags):
        action = f"({' '.join(o.choices)})" if o.choices else "_files"
        specs.append(f"{position + 1}:{_zsh_desc(o.metavar or o.dest)}:{action}")
    for o in opts:
        if not o.flags:
            continue
        action = f"({' '.join(o.choices)})" if o.choices else "_files"
        if "--help" in o.flags or "--version" in o.flags:
            exclusive = "(- *)"
        elif len(o.flags) > 1:
            exclusive = "(" + " ".join(o.flags) + ")"
        else:
            exclusive = ""
        arg = "" if o.metavar is None else f":{_zsh_desc(o.metavar)}:{action}"
        for flag in o.flags:
            eq = "=" if o.metavar is not None and flag.startswith("--") else ""
            specs.append(f"{exclusive}{flag}{eq}[{_zsh_desc(o.help)}]{arg}")
    return [shlex.quote(s) for s in specs]


def _zsh(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    cmds = commands(parser)
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}; generated by `{prog} _completion zsh`, do not edit",
        "",
        f"{fn}() {{",
        '    local curcontext="$curcontext" state line ret=1',
        "    typeset -A opt_args",
        "    _arguments -C \\",
        *(f"        {s} \\" for s in _zsh_specs(options(parser))),
        "        '1:command:->command' \\",
        "        '*::argument:->argument' && ret=0",
        '    case "$state" in',
        "        command)",
        "            local -a commands",
        "            commands=(",
        *(f"                {shlex.quote(n + ':' + _zsh_desc(c.help))}"
          for c in cmds for n in (c.name, *c.aliases)),
        "            )",
        f"            _describe -t commands {shlex.quote(prog + ' command')} commands && ret=0",
        "            ;;",
        "        argument)",
        '            curcontext="${curcontext%:*:*}:' + prog + '-$line[1]:"',
        "            case $line[1] in",
    ]
    for c in cmds:
        specs = _zsh_specs(c.options)
        lines.append(f"                {'|'.join(shlex.quote(n) for n in (c.name, *c.aliases))})")
        lines.append("                    _arguments \\")
        lines += [f"                        {s} \\" for s in specs]
        lines += ["                        && ret=0", "                    ;;"]
    lines += [
        "            esac",
        "            ;;",
        "    esac",
        "    return ret",
        "}",
        "",
        f'{fn} "$@"',
    ]
    return "\n".join(lines) + "\n"


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` ("bash" or "zsh")."""
    if shell == "bash":
        return _bash(parser)
    if shell == "zsh":
        return _zsh(parser)
    raise ValueError(f"no completion for shell {shell!r} (bash, zsh)")
