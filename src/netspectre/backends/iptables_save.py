"""iptables-save text → Saved (tables, chains, rules), read only as far as we need it. Pure.

What is ours is found here: our chain names and the marker comment; also our counters.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from netspectre.backends.names import COUNTERS, GATEWAY_COUNTERS, IPT_CHAINS, MARKER

_COUNTS = re.compile(r"\[(\d+):(\d+)\]\s+")


@dataclass(frozen=True)
class Rule:
    index: int  # position in the saved text: identical rules are still different rules
    table: str
    chain: str
    spec: str  # the saved text after "-A CHAIN ", quoting untouched, so "-D" matches it
    comments: tuple[str, ...]
    target: str | None
    packets: int
    bytes: int

    @property
    def marked(self) -> bool:
        """Tagged as ours: a comment that is exactly the marker, not one mentioning it."""
        return MARKER in self.comments


@dataclass(frozen=True)
class Saved:
    tables: tuple[str, ...]
    chains: dict[str, tuple[str, ...]]  # table → chain names declared in it
    rules: tuple[Rule, ...]


def ours_line(line: str) -> bool:
    """An iptables-save line of ours: in one of our chains, or carrying the marker."""
    return "NETSPECTRE" in line or f'"{MARKER}' in line or f" {MARKER}:" in line


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # unbalanced quotes: never ours, still must not crash teardown
        return text.split()


def _read_spec(tokens: list[str]) -> tuple[tuple[str, ...], str | None]:
    comments: list[str] = []
    module = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        value = tokens[i + 1] if i + 1 < len(tokens) else None
        if token in ("-m", "--match"):
            module = value
            i += 2
        elif token == "--comment" and module == "comment" and value is not None:
            comments.append(value)
            i += 2
        elif token in ("-j", "--jump", "-g", "--goto"):
            return tuple(comments), value  # target options follow: not ours to read
        else:
            i += 1
    return tuple(comments), None


def parse(text: str) -> Saved:
    tables: list[str] = []
    declared: dict[str, list[str]] = {}
    rules: list[Rule] = []
    table = ""
    for index, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            tables.append(table)
            declared.setdefault(table, [])
        elif line.startswith(":"):
            declared.setdefault(table, []).append(line[1:].split()[0])
        else:
            packets = size = 0
            counts = _COUNTS.match(line)
            if counts:
                packets, size = int(counts[1]), int(counts[2])
                line = line[counts.end():]
            parts = line.split(None, 2)
            if len(parts) < 2 or parts[0] != "-A":
                continue
            spec = parts[2] if len(parts) == 3 else ""
            comments, target = _read_spec(_split(spec))
            rules.append(Rule(index, table, parts[1], spec, comments, target, packets, size))
    return Saved(tuple(tables), {t: tuple(c) for t, c in declared.items()}, tuple(rules))


def _counted(rules: Iterable[Rule]) -> Iterable[tuple[str, Rule]]:
    prefix = f"{MARKER}:"
    for rule in rules:
        if rule.chain in IPT_CHAINS:
            for comment in rule.comments:
                name = comment.removeprefix(prefix)
                if comment.startswith(prefix) and name in (*COUNTERS, *GATEWAY_COUNTERS):
                    yield name, rule


def parse_counters(saved_v4: str, saved_v6: str) -> dict[str, dict[str, int]]:
    """`iptables-save -c` texts → {name: {packets, bytes}}; {} when no chain of ours exists."""
    saves = [parse(saved_v4), parse(saved_v6)]
    if not any(n in IPT_CHAINS for s in saves for names in s.chains.values() for n in names):
        return {}
    result = {name: {"packets": 0, "bytes": 0} for name in COUNTERS}
    for name, rule in _counted(r for s in saves for r in s.rules):
        result.setdefault(name, {"packets": 0, "bytes": 0})  # a gateway's, when it has one
        result[name]["packets"] += rule.packets
        result[name]["bytes"] += rule.bytes
    return result
