"""Tor's control protocol as text: reply framing, keyword arguments, bootstrap events. Pure.

Framing follows control-spec §2.3: "NNN-" mid lines, "NNN+" lines followed by a dot-terminated
data block, "NNN " ends a reply; 6xx replies are asynchronous events.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BootstrapEvent:
    progress: int  # 0..100
    tag: str
    summary: str
    warning: str = ""  # set on WARN bootstrap events: why Tor is stuck (e.g. "Connection refused")


@dataclass(frozen=True)
class Line:
    status: int
    text: str
    data: str | None = None  # the block after a "NNN+" line


@dataclass(frozen=True)
class Reply:
    lines: tuple[Line, ...]

    @property
    def status(self) -> int:
        return self.lines[-1].status

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_event(self) -> bool:
        return 600 <= self.status < 700

    @property
    def text(self) -> str:
        """The first line's text: the event itself, or the error message of a failure."""
        return self.lines[0].text


class ProtocolError(ValueError):
    """The peer sent something that is not control-protocol framing."""


class Parser:
    """Incremental: feed() raw bytes, get back every reply they complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[Line] = []
        self._data: list[str] | None = None  # collecting a data block
        self._data_head: tuple[int, str] = (0, "")

    def feed(self, chunk: bytes) -> list[Reply]:
        self._buffer += chunk
        replies: list[Reply] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                return replies
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)

    def _line(self, line: str) -> Reply | None:
        if self._data is not None:
            if line == ".":
                status, text = self._data_head
                self._lines.append(Line(status, text, "\n".join(self._data)))
                self._data = None
            else:
                self._data.append(line[1:] if line.startswith("..") else line)
            return None
        if len(line) < 4 or not line[:3].isdigit() or line[3] not in "- +":
            raise ProtocolError(f"not a control-protocol reply line: {line[:80]!r}")
        status, sep, text = int(line[:3]), line[3], line[4:]
        if sep == "+":
            self._data, self._data_head = [], (status, text)
            return None
        self._lines.append(Line(status, text))
        if sep == " ":
            reply, self._lines = Reply(tuple(self._lines)), []
            return reply
        return None


def unquote(text: str) -> str:
    """A QuotedString's content (without the quotes), C escapes resolved."""
    out: list[str] = []
    i = 0
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in escapes:
                out.append(escapes[nxt])
                i += 2
                continue
            if nxt in "01234567":
                digits = text[i + 1 : i + 4]
                j = 0
                while j < len(digits) and digits[j] in "01234567":
                    j += 1
                out.append(chr(int(digits[:j], 8)))
                i += 1 + j
                continue
        out.append(c)
        i += 1
    return "".join(out)


def split_args(text: str) -> tuple[list[str], dict[str, str]]:
    """'NOTICE BOOTSTRAP PROGRESS=5 SUMMARY="a b"' → (["NOTICE", "BOOTSTRAP"], {...})."""
    words: list[str] = []
    pairs: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in ' ="':
            i += 1
        key = text[start:i]
        if i < n and text[i] == "=":
            i += 1
            if i < n and text[i] == '"':
                i += 1
                vstart = i
                while i < n and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
                pairs[key] = unquote(text[vstart:i])
                i += 1
            else:
                vstart = i
                while i < n and text[i] != " ":
                    i += 1
                pairs[key] = text[vstart:i]
        elif i < n and text[i] == '"':  # a bare quoted word, e.g. net/listeners values
            i += 1
            vstart = i
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            words.append(unquote(text[vstart:i]))
            i += 1
        else:
            words.append(key)
    return words, pairs


def keyvalues(reply: Reply) -> dict[str, list[str]]:
    """GETINFO/GETCONF reply → key → values (GETCONF: a key per line; "Key" alone = unset)."""
    out: dict[str, list[str]] = {}
    for line in reply.lines:
        if line.data is not None:
            key = line.text.rstrip("=")
            out.setdefault(key, []).append(line.data)
            continue
        key, sep, value = line.text.partition("=")
        if not sep:
            if key != "OK":
                out.setdefault(key, [])
            continue
        out.setdefault(key, []).append(value)
    return out


def parse_bootstrap(text: str) -> BootstrapEvent | None:
    """From a STATUS_CLIENT event or GETINFO status/bootstrap-phase; None for other events."""
    words, pairs = split_args(text)
    if words and words[0] == "STATUS_CLIENT":
        words = words[1:]
    if len(words) < 2 or words[1] != "BOOTSTRAP" or "PROGRESS" not in pairs:
        return None
    try:
        progress = int(pairs["PROGRESS"])
    except ValueError:
        return None
    return BootstrapEvent(
        progress=max(0, min(100, progress)),
        tag=pairs.get("TAG", ""),
        summary=pairs.get("SUMMARY", ""),
        warning=pairs.get("WARNING", "") if words[0] == "WARN" else "",
    )


def parse_newnym_delay(text: str) -> int | None:
    """Seconds from Tor's 'Rate limiting NEWNYM request: delaying by N second(s)' notice."""
    marker = "Rate limiting NEWNYM request: delaying by "
    at = text.find(marker)
    if at < 0:
        return None
    number = text[at + len(marker) :].split(" ", 1)[0]
    return int(number) if number.isdigit() else None
