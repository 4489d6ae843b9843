"""Watch the lab's onion service upload its descriptors and record progress in a JSON file, so
`up` can return before the upload and a later `wait_onion` still knows when it is done.
Subscribes before the onion tor has network (it starts with DisableNetwork 1), so no event is
missed. Run as `python -m netspectre.lab.watch --control SOCK --hsdir NICK ... --out FILE`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from netspectre.fsutil import write_atomic
from netspectre.lab import control
from netspectre.lab.daemon import detach
from netspectre.tor.control import Controller


def write(path: Path, state: dict[str, object]) -> None:
    # Not fsynced: progress of a lab that does not outlive a reboot; many writes per second.
    write_atomic(path, json.dumps(state), mode=0o644, sync=False)


def hsdir_nick(field: str) -> str:
    """`$FP~nick` or `$FP=nick` (or a bare fingerprint) -> the nickname or fingerprint."""
    for sep in ("~", "="):
        if sep in field:
            return field.split(sep, 1)[1]
    return field.lstrip("$")


def follow(ctl: Controller, hsdirs: set[str], out: Path, *, timeout: float) -> bool:
    """Record HS_DESC events until every upload was acknowledged and every HSDir has one."""
    uploaded: set[str] = set()
    failed: list[str] = []
    pending = 0
    for event in control.events(ctl, timeout=timeout):
        fields = event.split()
        if len(fields) < 5 or fields[0] != "HS_DESC":
            continue
        nick = hsdir_nick(fields[4])
        if fields[1] == "UPLOAD":
            pending += 1
        elif fields[1] == "UPLOADED":
            uploaded.add(nick)
            pending -= 1
        elif fields[1] == "FAILED":
            failed.append(nick)
            pending -= 1
        else:
            continue
        ready = pending <= 0 and hsdirs <= uploaded
        write(out, {"ready": ready, "uploaded": sorted(uploaded), "pending": pending,
                    "failed": failed})
        if ready:
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netspectre.lab.watch")
    ap.add_argument("--control", type=Path, required=True)
    ap.add_argument("--hsdir", action="append", default=[], help="an HSDir's nickname")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--pidfile", type=Path)
    ap.add_argument("--log", type=Path, default=Path("/dev/null"))
    args = ap.parse_args(argv)
    ctl = control.connect(args.control, timeout=args.timeout)
    ctl.setevents("HS_DESC")
    write(args.out, {"ready": False, "uploaded": [], "pending": 0, "failed": []})
    if args.pidfile:
        detach(pidfile=args.pidfile, log=args.log)
    return 0 if follow(ctl, set(args.hsdir), args.out, timeout=args.timeout) else 1


if __name__ == "__main__":
    raise SystemExit(main())
