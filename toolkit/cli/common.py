"""What the commands that overwrite a disk share (``rtk copy``, ``rtk verify``, ``rtk
restore``): error lines, the target confirmation, the progress line, Ctrl-C handling, and
the run of the work itself with its refusals and I/O errors turned into exit codes.

The confirmation: type the target's serial (or WWN), or its device name. Scripts pass
``--yes --target-id ID``, where ID must be the target's serial or WWN (for a disk that has
neither, such as a loop device: its kernel name or backing file); any other value is
refused. Ctrl-C or Ctrl-D at the prompt is a refusal too: "cancelled, nothing written",
exit 5 (:data:`~toolkit.exitcodes.EXIT_REFUSED`), as nothing has begun. What was typed
or passed is collected here as a :class:`toolkit.disks.gate.Consent`; whether it names
the target is the write gate's decision (:func:`toolkit.disks.gate.consent_problem`),
taken here before the work starts and again when the gate opens the target.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toolkit.errors import Refused
from toolkit.exitcodes import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE

if TYPE_CHECKING:  # for the annotations only: `rtk restore` loads no Disk Copy module
    from toolkit.disks.endpoint import Endpoint


def err(msg: str) -> None:
    """One error line on stderr, as ``rtk: msg``."""
    print(f"rtk: {msg}", file=sys.stderr)


def subcommands(parser: argparse.ArgumentParser, dest: str, prog: str, **defaults):
    """``parser.add_subparsers(dest=dest)``; none given is a usage error in plain words
    ("rtk net: give a command: list, set, ..."), not argparse's "required: net_command".
    ``defaults``: what the parser sets when no subcommand is given (the function that
    prints that message is ``missing``)."""
    sub = parser.add_subparsers(dest=dest)

    def missing(_args: argparse.Namespace) -> int:
        parser.print_usage(sys.stderr)
        print(f"{prog}: give a command: {', '.join(sub.choices)} (see {prog} --help)",
              file=sys.stderr)
        return EXIT_USAGE
    parser.set_defaults(**{k: missing if v == "missing" else v for k, v in
                           {"func": "missing", **defaults}.items()})
    return sub


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


CANCELLED = "cancelled, nothing written"  # Ctrl-C or end of input at the prompt (exit 5)


def accepted_ids(target: Endpoint) -> set[str]:
    """What ``--target-id`` may be: the serial/WWN, or (without them) name or backing file."""
    from toolkit.disks import gate
    return gate.accepted_names(target, gate.TARGET_ID)


def collect_consent(args: argparse.Namespace, target: Endpoint) -> tuple[Any, str | None]:
    """``(consent, why not)``: the :class:`~toolkit.disks.gate.Consent` that
    ``--yes --target-id`` gives or the person types on the terminal, once the write gate
    finds that it names ``target``; else ``(None, why)``."""
    from toolkit.disks import gate
    if args.yes:
        if not args.target_id:
            return None, "--yes needs --target-id with the target's serial or WWN"
        consent = gate.Consent.target_id(args.target_id)
    else:
        if not sys.stdin.isatty():
            return None, "no terminal to confirm on: pass --yes --target-id SERIAL_OR_WWN"
        answer = _ask(target)
        if answer is None:
            return None, CANCELLED
        consent = gate.Consent.typed(answer)
    why = gate.consent_problem(target, consent)
    return (None, why) if why else (consent, None)


def confirm_target(args: argparse.Namespace, target: Endpoint) -> str | None:
    """None when overwriting ``target`` is confirmed (``--yes --target-id``, or typed on the
    terminal), else why not."""
    return collect_consent(args, target)[1]


def _ask(target: Endpoint) -> str | None:
    """What the person types at the prompt (None: Ctrl-C or Ctrl-D)."""
    ident = target.identity
    prompt = (f"Everything on {target.label()} will be overwritten.\n"
              f"Type the target's {'serial ' + ident + ' or ' if ident else ''}device name "
              f"({os.path.basename(target.node)}) to go on: ")
    try:
        return input(prompt).strip()
    except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D at the prompt: nothing begun
        print(file=sys.stderr)
        return None


def confirmed(args: argparse.Namespace, target: Endpoint, operation: str):
    """The consent (true) when the target is confirmed (:func:`collect_consent`), else
    None, saying why not on stderr. Pass it on to the work: the write gate checks it
    again when it opens the target."""
    consent, why = collect_consent(args, target)
    if why:
        err(f"{operation} refused: {why}")
    return consent


def os_error(e: OSError) -> str:
    """An OSError in plain words: "PATH: permission denied (run as root?)", not
    "[Errno 13] Permission denied: 'PATH'"."""
    if not e.strerror:  # raised with a message of its own (requests' errors are OSErrors)
        return str(e)
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (errno.EACCES, errno.EPERM):
        return where + "permission denied" + (" (run as root?)" if os.geteuid() else
                                              " (a read-only device?)")
    return where + e.strerror[:1].lower() + e.strerror[1:]


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
        err(f"{operation} failed: {os_error(e)}")
        return EXIT_FAILED
    line.end()
    return finish(result)
