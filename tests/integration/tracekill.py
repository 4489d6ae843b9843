"""Run `netspectre.cli.main` under a line tracer, for fault injection.

    python tracekill.py --record OUT.json -- ARGS…   list line events in netspectre's code
    python tracekill.py --kill-at N -- ARGS…         SIGKILL ourselves just before event N
    python tracekill.py --stop-at FILE:LINE -- ARGS… SIGSTOP ourselves there (then SIGCONT)

Only line events in netspectre's own modules are counted, so N is stable from run to run.
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
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--stop-at", default="")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    stop_file, _, stop_line = args.stop_at.partition(":")
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
            if count == args.kill_at:
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
