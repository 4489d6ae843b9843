"""Run `netspectre.cli.main` under a line tracer, for fault injection.

    python tracekill.py --record OUT.json -- ARGS…   list line events in netspectre's code
    python tracekill.py --kill-at N -- ARGS…         SIGKILL ourselves just before event N
    python tracekill.py --kill-at FILE:LINE:K -- …   … before the K-th execution of that line
    python tracekill.py --stop-at FILE:LINE -- ARGS… SIGSTOP ourselves there (then SIGCONT)

Only line events in netspectre's own modules are counted. FILE:LINE:K is the stable form: a
loop over live data (iptables-save output) shifts the event numbers after it, not K.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from types import FrameType
from typing import Any

MARK = os.sep + "netspectre" + os.sep


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record")
    parser.add_argument("--kill-at", default="0")
    parser.add_argument("--stop-at", default="")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    stop_file, _, stop_line = args.stop_at.partition(":")
    kill_n, kill_file, kill_line, kill_k = 0, "", 0, 0
    if args.kill_at.isdigit():
        kill_n = int(args.kill_at)
    else:
        kill_file, line, k = args.kill_at.rsplit(":", 2)
        kill_line, kill_k = int(line), int(k)
    seen: dict[tuple[str, int], int] = {}
    events: list[tuple[str, int, int]] = []
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
            if args.record:
                depth, f = 0, frame.f_back
                while f is not None:
                    depth, f = depth + 1, f.f_back
                events.append((frame.f_code.co_filename, frame.f_lineno, depth))
            if count == kill_n:
                os.kill(os.getpid(), signal.SIGKILL)
            if kill_line == frame.f_lineno and frame.f_code.co_filename == kill_file:
                where = (kill_file, kill_line)
                seen[where] = seen.get(where, 0) + 1
                if seen[where] == kill_k:
                    os.kill(os.getpid(), signal.SIGKILL)
            if (stop_file and frame.f_lineno == int(stop_line)
                    and frame.f_code.co_filename.endswith(stop_file)):
                os.kill(os.getpid(), signal.SIGSTOP)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if MARK in frame.f_code.co_filename else None

    sys.settrace(tracer)
    try:
        from netspectre import cli

        rc = cli.main(argv)
    finally:
        sys.settrace(None)
        if args.record:
            with open(args.record, "w") as f:
                json.dump(events, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())
