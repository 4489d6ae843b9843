"""A stateful fake of system.Runner: for ordering tests of the shell without root."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from netspectre import system
from netspectre.errors import CommandFailed, MissingTool

Handler = Callable[[tuple[str, ...], str | None], tuple[int, str]]


class FakeHost:
    """A host with some tools on PATH and a kernel that holds, per family, the last iptables
    script committed (what the family's save tool prints). Records every command."""

    def __init__(self, *tools: str, iptables_version: str = "iptables v1.8.9 (nf_tables)",
                 handlers: dict[str, Handler] | None = None) -> None:
        self.tools = set(tools)
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.kernel: dict[str, str] = {}  # save tool → its output
        self.version = iptables_version
        self.handlers = handlers or {}

    def which(self, name: str) -> str | None:
        return f"/usr/sbin/{name}" if name in self.tools else None

    def require(self, name: str) -> str:
        path = self.which(name)
        if path is None:
            raise MissingTool(f"`{name}` not found")
        return path

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float = 60.0, env: dict[str, str] | None = None) -> system.Result:
        args = tuple(argv)
        self.require(args[0])
        self.calls.append((args, input))
        code, out = self._answer(args, input)
        if check and code:
            raise CommandFailed(args, code, "fake failure")
        return system.Result(args, code, out, "")

    def _answer(self, args: tuple[str, ...], input: str | None) -> tuple[int, str]:
        if args[0] in self.handlers:
            return self.handlers[args[0]](args, input)
        if args[:2] == ("iptables", "--version"):
            return 0, self.version + "\n"
        if args[0].endswith("-save"):
            return 0, self.kernel.get(args[0], "")
        if args[0].endswith("-restore") and "--test" not in args:
            self.kernel[args[0].replace("-restore", "-save")] = input or ""
        return 0, ""

    def commands(self) -> list[str]:
        return [" ".join(argv) for argv, _ in self.calls]
