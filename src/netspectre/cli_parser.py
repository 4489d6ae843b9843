"""The command line's definition (argparse): cli parses with it, docs renders the man page and
the completions from it, so nothing is written twice."""

from __future__ import annotations

import argparse

from netspectre import DEFAULT_CONFIG, __version__
from netspectre.backends import AUTO, CHOICES, Backend

EPILOG = """\
Every command that changes the system needs root. `rules` renders without applying.
Configuration: /etc/netspectre/netspectre.toml (see README). Exit status 0 on success."""


def parser() -> argparse.ArgumentParser:
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
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--boot", action="store_true",
                      help="boot mode (the systemd unit): implies --no-wait; if start fails, "
                           "the ruleset is applied anyway with no Tor behind it (fail closed)")
    mode.add_argument("--no-firewall", action="store_true",
                      help="run the managed tor only (for `netspectre run`): no ruleset, no "
                           "sysctl; this machine's own traffic is NOT torified")
    p = sub.add_parser("stop", help="stop Tor, remove our rules, restore sysctls")
    p.add_argument("--force", action="store_true", help="clean up even if the state is unreadable")
    p = sub.add_parser("restart", help="apply a changed config: the ruleset in one transaction "
                                        "(no gap), Tor relaunched behind it if its torrc changed")
    p.add_argument("--no-wait", action="store_true",
                   help="return before a relaunched Tor has bootstrapped")
    sub.add_parser("status", help="what is in force, counters, Tor's state")
    sub.add_parser("watch", help="live view while active: counters, Tor, and every refused "
                                  "attempt with its user and program (Ctrl-C to quit)")
    p = sub.add_parser("rules", help="print the ruleset `start` would apply (no root needed)")
    p.add_argument("--backend", choices=[c for c in CHOICES if c != AUTO])
    sub.add_parser("myip", aliases=["check"], help="ask an exit-check service through Tor")
    sub.add_parser("newnym", help="new circuits for new connections")
    p = sub.add_parser("verify", help="live self-test: rules, leak probes, exit check")
    p.add_argument("--no-probes", action="store_true", help="skip the leak probes")
    p.add_argument("--no-myip", action="store_true", help="skip the exit check through Tor")
    p = sub.add_parser("bypass", help="run one command outside Tor, a deliberate hole: as the "
                                      "invoking user, with a bypass group as its gid")
    p.add_argument("--user", metavar="NAME", help="run as NAME (default: the sudo user)")
    p.add_argument("--group", metavar="NAME",
                   help="the bypass group to use when several are in force")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="-- COMMAND [ARG...]: run directly, its exit status is netspectre's")
    sub.add_parser("doctor", help="explain what is wrong, with the command that fixes it")
    p = sub.add_parser("enable", help="protect from boot: install and enable the systemd unit")
    p.add_argument("--now", action="store_true", help="also start now")
    p = sub.add_parser("disable", help="no protection at boot (does not lift the firewall)")
    p.add_argument("--now", action="store_true", help="also stop now")
    p = sub.add_parser("run", help="run one program through Tor, in a sandbox of its own "
                                    "(no root needed; the rest of the machine is untouched)")
    p.add_argument("--user", metavar="NAME",
                   help="as root: run the program as NAME (default: the sudo user)")
    p.add_argument("--shared", action="store_true",
                   help="share circuits with other --shared runs (default: circuits of its own)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]",
                   help="the program and its arguments (after --)")
    lab = sub.add_parser("lab", help="a private Tor network in namespaces (offline demo)")
    lab.add_argument("action", choices=["up", "down", "status", "demo", "shell"])
    lab.add_argument("--backend", choices=[b.value for b in Backend],
                     help="demo: the firewall backend netspectre uses in the client")
    lab.add_argument("--keep", action="store_true", help="demo: leave the lab up afterwards")
    # Hidden commands get no help=: argparse lists every subcommand that has one, even
    # SUPPRESS (as "==SUPPRESS=="); docs.py skips `_name`s.
    sub.add_parser("_supervise")
    sub.add_parser("_guard")  # the raw guard's watcher (started by start/restart)
    sub.add_parser("_man")  # the man page, from this parser
    p = sub.add_parser("_completion")
    p.add_argument("shell", choices=["bash", "zsh"])
    p = sub.add_parser("_units")  # install.sh / the package: write the unit files
    # Required: a typo must not write into the running system's /etc/systemd/system.
    p.add_argument("--root", required=True, help="write under this root directory ('/' too)")
    p.add_argument("--exec", dest="exec_path", help="the netspectre executable the unit runs")
    return parser
