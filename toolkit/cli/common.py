"""What the commands that overwrite a disk share (``rtk copy``, ``rtk verify``, ``rtk
restore``): error lines, the target confirmation, the progress line, Ctrl-C handling, and
the run of the work itself with its refusals and I/O errors turned into exit codes.

The confirmation: type the target's serial (or WWN), or its device name. Scripts pass
``--yes --target-id ID``, where ID must be the target's serial or WWN (for a disk that has
neither, such as a loop device: its kernel name or backing file); any other value is
refused.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toolkit.errors import Refused
from toolkit.exitcodes import EXIT_FAILED, EXIT_REFUSED

if TYPE_CHECKING:  # for the annotations only: `rtk restore` loads no Disk Copy module
    from toolkit.disks.endpoint import Endpoint


def err(msg: str) -> None:
    """One error line on stderr, as ``rtk: msg``."""
    print(f"rtk: {msg}", file=sys.stderr)


def refused(e: Refused, what: str) -> int:
    """Print every reason of a refusal; the exit code of a refusal (nothing was written)."""
    err(f"{what} refused:")
    for p in e.problems:
        print(f"  - {p}", file=sys.stderr)
    return EXIT_REFUSED


class ProgressLine:
    """A progress line on stderr: rewritten in place on a terminal, every 10 s otherwise.

    Called with any progress object that has ``line()``, ``done`` and ``total``."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.width = 0

    def __call__(self, p) -> None:
        line = p.line()
        if self.tty:
            pad = max(0, self.width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.width = len(line)
        elif time.monotonic() - self.last >= 10 or p.done >= p.total:
            self.stream.write(line + "\n")
            self.last = time.monotonic()
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.width = 0


def cancel_on_signals() -> threading.Event:
    """Ctrl-C (or SIGTERM) asks the work to stop cleanly; a second Ctrl-C kills."""
    cancel = threading.Event()

    def handler(signum, _frame):
        if cancel.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        cancel.set()
        sys.stderr.write("\nstopping (Ctrl-C again to kill)...\n")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return cancel


def accepted_ids(target: Endpoint) -> set[str]:
    """What ``--target-id`` may be: the serial/WWN, or (without them) name or backing file."""
    d = target.disk
    ids = {x for x in (d.serial, d.wwn) if x}
    if not ids:
        ids = {d.name, d.path, target.node, os.path.basename(target.node)}
        if d.backing_file:
            ids.add(d.backing_file)
    return ids


def confirm_target(args: argparse.Namespace, target: Endpoint) -> str | None:
    """None when overwriting ``target`` is confirmed (``--yes --target-id``, or typed on the
    terminal), else why not."""
    if args.yes:
        if not args.target_id:
            return "--yes needs --target-id with the target's serial or WWN"
        if args.target_id not in accepted_ids(target):
            return (f"--target-id {args.target_id} does not match the target {target.label()}: "
                    f"expected {' or '.join(sorted(accepted_ids(target)))}")
        return None
    if not sys.stdin.isatty():
        return "no terminal to confirm on: pass --yes --target-id SERIAL_OR_WWN"
    ident = target.identity
    names = {os.path.basename(target.node), target.node}
    if ident:
        names.add(ident)
    prompt = (f"Everything on {target.label()} will be overwritten.\n"
              f"Type the target's {'serial ' + ident + ' or ' if ident else ''}device name "
              f"({os.path.basename(target.node)}) to go on: ")
    try:
        answer = input(prompt).strip()
    except EOFError:
        answer = ""
    return None if answer in names else "not confirmed"


def confirmed(args: argparse.Namespace, target: Endpoint, operation: str) -> bool:
    """:func:`confirm_target`, saying why not on stderr."""
    why = confirm_target(args, target)
    if why:
        err(f"{operation} refused: {why}")
    return not why


def run_with_progress(operation: str, work: Callable[[ProgressLine, threading.Event], Any],
                      finish: Callable[[Any], int]) -> int:
    """Run ``work(progress_line, cancel_event)`` and ``finish(result)`` for its exit code;
    a refusal and an I/O error become their exit codes (``operation`` names the work)."""
    line = ProgressLine()
    cancel = cancel_on_signals()
    try:
        result = work(line, cancel)
    except Refused as e:
        line.end()
        return refused(e, operation)
    except OSError as e:
        line.end()
        err(f"{operation} failed: {e}")
        return EXIT_FAILED
    line.end()
    return finish(result)
