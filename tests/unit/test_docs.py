"""The man page, the completions and the default config file cover the CLI and the config as
they are: expectations are derived from the argparse parser and the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from netspectre import cli_parser, config, docs
from netspectre.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOML = ROOT / "etc" / "netspectre.toml"


# --- what the parser says, walked here independently of docs.py ------------------------------

def visible_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name (aliases included) → subparser, for commands shown in --help."""
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    shown = {a.dest for a in action._choices_actions if a.help != argparse.SUPPRESS}
    found = {}
    for name, sub in action.choices.items():
        canonical = next(n for n, p in action.choices.items() if p is sub)
        if canonical in shown:
            found[name] = sub
    return found


def command_help(parser: argparse.ArgumentParser, name: str) -> str:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = action.choices[name]
    return next(str(a.help) for a in action._choices_actions if action.choices[a.dest] is sub)


def hidden_commands(parser: argparse.ArgumentParser) -> set[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices) - set(visible_commands(parser))


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def choices(parser: argparse.ArgumentParser) -> set[str]:
    return {str(c) for a in parser._actions
            if a.choices and not isinstance(a, argparse._SubParsersAction) for c in a.choices}


def test_the_walk_sees_the_cli() -> None:
    commands = visible_commands(cli_parser.parser())
    assert {"start", "stop", "status", "rules", "myip", "check", "lab"} <= set(commands)
    assert {"_man", "_completion", "_units", "_supervise"} <= hidden_commands(cli_parser.parser())


# --- man page -----------------------------------------------------------------------------------

def plain(roff: str) -> str:
    return re.sub(r"\\f[BIR]", "", roff).replace("\\-", "-").replace("\\e", "\\")


def man_sections(page: str) -> dict[str, str]:
    """`.SS name` (and `.SH NAME`) → the roff text up to the next heading."""
    parts = re.split(r"^\.S[SH] (.*)$", page, flags=re.M)
    return {plain(parts[i]).strip('"'): parts[i + 1] for i in range(1, len(parts), 2)}


def test_manpage_documents_every_command_option_and_exit_status() -> None:
    parser = cli_parser.parser()
    page = docs.manpage(parser)
    sections = man_sections(page)
    for name, sub in visible_commands(parser).items():
        heading = next(h for h in sections if name in h.split(", "))
        text = plain(sections[heading])
        for flag in option_strings(sub) - {"-h", "--help"}:
            assert flag in text, f"{name}: {flag} missing from its man section"
        for choice in choices(sub):
            assert choice in text, f"{name}: choice {choice} missing"
        summary = " ".join(command_help(parser, name).replace("`", "").split())
        assert summary in " ".join(text.split())
    for hidden in hidden_commands(parser):
        assert hidden not in sections and f"netspectre {hidden}" not in plain(page)
    options = plain(sections["OPTIONS"])
    for flag in option_strings(parser):
        assert flag in options
    exits = plain(sections["EXIT STATUS"])
    for status in ExitStatus:
        assert f".TP\n{int(status)}\n" in exits
    assert "netspectre rules" in plain(page) and "RawDescription" not in page
    assert plain(sections["DESCRIPTION"]).count("/etc/netspectre/netspectre.toml") == 1  # epilog
    for heading in ("NAME", "SYNOPSIS", "FILES", "SEE ALSO"):
        assert heading in sections


def extended_parser() -> argparse.ArgumentParser:
    """The real parser plus a command nobody documented: the generator must pick it up."""
    parser = cli_parser.parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    p = action.add_parser("frobnicate", aliases=["frob"],
                          help=".starts with a dot, has a back\\slash and 'quotes' — and %(prog)s")
    p.add_argument("--level", choices=["low", "high"], help="how hard")
    p.add_argument("--target", metavar="PATH", help="'quoted\n.dotted line")
    p.add_argument("mode", choices=["alpha", "beta"])
    p.add_argument("--secret", help=argparse.SUPPRESS)
    parser.epilog = (parser.epilog or "") + "\n.TH looks like a request\n'br so does this"
    return parser


def test_a_new_command_is_documented_without_writing_anything() -> None:
    parser = extended_parser()
    page = plain(docs.manpage(parser))
    assert "frobnicate, frob" in page and "--level" in page and "--target" in page
    assert "alpha" in page and "--secret" not in page
    bash = docs.completion(parser, "bash")
    assert "frobnicate|frob)" in bash and "'low high'" in bash and "'alpha beta'" in bash
    zsh = docs.completion(parser, "zsh")
    assert "'frobnicate:" in zsh and "(low high)" in zsh and "--secret" not in zsh


def groff(page: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["groff", "-man", "-ww", *args], input=page, capture_output=True,
                          text=True, timeout=30)


needs_groff = pytest.mark.skipif(
    shutil.which("groff") is None, reason="groff not installed (apt package groff-base)")


@needs_groff
@pytest.mark.parametrize("make", [cli_parser.parser, extended_parser], ids=["cli", "extended"])
def test_groff_renders_the_page_without_warnings(make: object) -> None:
    assert callable(make)
    proc = groff(docs.manpage(make()), "-Tutf8", "-z")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@needs_groff
def test_escaping_survives_groff() -> None:
    proc = groff(docs.manpage(extended_parser()), "-Tutf8", "-P-cbou")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    # %(prog)s in a command's help is the parent's prog, as in argparse's own --help
    assert ".starts with a dot, has a back\\slash and 'quotes' \u2014 and netspectre" in text
    assert "'quoted .dotted line" in text
    assert ".TH looks like a request 'br so does this" in text
    assert "netspectre rules [--backend {nft,iptables,iptables-nft,iptables-legacy}]" in text


def test_cli_prints_the_generated_texts() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for args, expected in ((["_man"], docs.manpage(cli_parser.parser())),
                           (["_completion", "bash"], docs.completion(cli_parser.parser(), "bash")),
                           (["_completion", "zsh"], docs.completion(cli_parser.parser(), "zsh"))):
        proc = subprocess.run([sys.executable, "-m", "netspectre", *args], capture_output=True,
                              text=True, env=env, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == expected


def test_unknown_shell() -> None:
    with pytest.raises(ValueError, match="fish"):
        docs.completion(cli_parser.parser(), "fish")


# --- bash completion ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "netspectre"
    path.write_text(docs.completion(cli_parser.parser(), "bash"))
    return path


def complete_bash(script: Path, *words: str) -> set[str]:
    """Source the completion and call it as bash would for the command line `words`."""
    program = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
               '_netspectre; printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program, "bash", str(script),
                           *words], capture_output=True, text=True, timeout=30, cwd="/")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return set(proc.stdout.split())


def test_bash_syntax(bash_script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("words", "expected"), [
    (["netspectre", "st"], {"start", "status", "stop"}),
    (["netspectre", ""], set(visible_commands(cli_parser.parser()))),
    (["netspectre", "lab", ""], {"up", "down", "status", "demo", "shell"}),
    (["netspectre", "lab", "--keep", "d"], {"down", "demo"}),
    (["netspectre", "lab", "up", ""], set()),  # one positional only
    (["netspectre", "lab", "--backend", ""], {"nft", "iptables-nft", "iptables-legacy"}),
    (["netspectre", "lab", "--backend", "nft", "s"], {"status", "shell"}),
    (["netspectre", "rules", "--backend", "ipt"], {"iptables", "iptables-nft",
                                                   "iptables-legacy"}),
    (["netspectre", "--config", "/etc/x.toml", "--json", "re"], {"restart"}),
    (["netspectre", "--j"], {"--json"}),
    (["netspectre", "--config", "/et"], {"/etc"}),
    (["netspectre", "start", "--n"], {"--no-firewall", "--no-wait"}),
    (["netspectre", "_man", ""], set()),
])
def test_bash_completes(bash_script: Path, words: list[str], expected: set[str]) -> None:
    assert complete_bash(bash_script, *words) == expected


def test_bash_completes_every_option_of_every_command(bash_script: Path) -> None:
    parser = cli_parser.parser()
    assert complete_bash(bash_script, "netspectre", "-") == option_strings(parser)
    for name, sub in visible_commands(parser).items():
        assert complete_bash(bash_script, "netspectre", name, "-") == option_strings(sub), name
        for action in sub._actions:
            if action.option_strings and action.choices:
                got = complete_bash(bash_script, "netspectre", name, action.option_strings[0], "")
                assert got == set(action.choices), (name, action.option_strings)


# --- zsh completion -----------------------------------------------------------------------------

needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None,
                               reason="zsh not installed (apt package zsh)")


@needs_zsh
def test_zsh_syntax_and_compdef(tmp_path: Path) -> None:
    (tmp_path / "_netspectre").write_text(docs.completion(cli_parser.parser(), "zsh"))
    proc = subprocess.run(["zsh", "-n", str(tmp_path / "_netspectre")], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    # compinit reads #compdef lines from $fpath: the function is registered for `netspectre`.
    program = (f'fpath=({tmp_path} $fpath); autoload -Uz compinit; '
               f'compinit -u -d {tmp_path}/zcompdump; print -r -- $_comps[netspectre]')
    proc = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode == 0 and proc.stdout.strip() == "_netspectre", proc.stderr


def test_zsh_lists_every_command_and_option() -> None:
    parser = cli_parser.parser()
    text = docs.completion(parser, "zsh")
    for name, sub in visible_commands(parser).items():
        assert f"'{name}:" in text, name  # offered as a command, with its help
        assert re.search(rf"^ *([\w-]+\|)*{name}(\|[\w-]+)*\)$", text, re.M), name
        for flag in option_strings(sub):
            assert re.search(rf"\){re.escape(flag)}=?\[|'{re.escape(flag)}=?\[", text), flag
    for flag in option_strings(parser):
        assert re.search(rf"{re.escape(flag)}=?\[", text), flag


# --- the default config file ------------------------------------------------------------------

SECTIONS = {f.name: f.type for f in dataclasses.fields(config.Config)
            if f.name not in ("path", "lab")}


def test_default_config_file_is_the_defaults() -> None:
    parsed = config.parse(DEFAULT_TOML.read_text(), path=str(DEFAULT_TOML))
    assert parsed.path == str(DEFAULT_TOML)
    assert dataclasses.replace(parsed, path=None) == config.Config()


def test_default_config_file_has_every_key_with_a_comment() -> None:
    text = DEFAULT_TOML.read_text()
    data = tomllib.loads(text)
    defaults = config.Config()
    assert set(data) == set(SECTIONS)
    for section in SECTIONS:
        fields = {f.name for f in dataclasses.fields(getattr(defaults, section))}
        assert set(data[section]) == fields, section
    # Every key line has a comment of its own since the previous key line.
    commented = True
    for line in text.splitlines():
        if line.startswith("#"):
            commented = True
        elif re.match(r"^\w+ = ", line):
            assert commented, f"no comment above {line!r}"
            commented = False
