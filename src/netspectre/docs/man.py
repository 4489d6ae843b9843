"""The man page (roff, section 8), generated from the parser's outline. Pure.

install.sh writes it via `netspectre _man`.
"""

from __future__ import annotations

import argparse
import re

from netspectre import __version__, paths
from netspectre.config import DEFAULT_PATH
from netspectre.docs.outline import Command, Option, commands, options
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
