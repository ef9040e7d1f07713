"""``rtk copy`` and ``rtk verify``: the command line of Disk Copy.

    rtk copy SRC DST [--no-verify] [--hash blake3|sha256] [--mapfile PATH]
                     [--skip-zeros] [--yes --target-id SERIAL_OR_WWN]
    rtk verify SRC DST [--algo blake3|sha256]
    rtk verify DISK --hash HEX [--algo blake3|sha256] [--size BYTES]

Exit codes: 0 ok; 3 ok, but some source ranges were unreadable (zeros written
there, ranges in the report and the mapfile); 4 verification mismatch;
5 refused (nothing was written); 1 failed or interrupted (the mapfile lets the
same command resume); 2 usage error (argparse).

The copy asks for confirmation: type the target's serial (or WWN), or its
device name. Scripts pass ``--yes --target-id ID``, where ID must be the
target's serial or WWN (for a disk that has neither, such as a loop device:
its kernel name or backing file); any other value is refused.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from toolkit.blockio.reading import ALGORITHMS, DEFAULT_CHUNK
from toolkit.copy.plan import Endpoint
from toolkit.disks import roles
from toolkit.errors import Refused
from toolkit.exitcodes import EXIT_FAILED, EXIT_REFUSED
from toolkit.units import human_size

if TYPE_CHECKING:  # the engine itself is imported by the commands that run it, not by
    from toolkit.copy import engine as copymod  # `rtk restore`, which shares the helpers here


class _ProgressLine:
    """A progress line on stderr: rewritten in place on a terminal, every 10 s otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.width = 0

    def __call__(self, p: copymod.Progress) -> None:
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


def _cancel_on_signals() -> threading.Event:
    """Ctrl-C (or SIGTERM) asks the copy to stop cleanly; a second Ctrl-C kills."""
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


def _err(msg: str) -> None:
    print(f"rtk: {msg}", file=sys.stderr)


def _refused(e: Refused, what: str) -> int:
    _err(f"{what} refused:")
    for p in e.problems:
        print(f"  - {p}", file=sys.stderr)
    return EXIT_REFUSED


def accepted_ids(target: Endpoint) -> set[str]:
    """What ``--target-id`` may be: the serial/WWN, or (without them) name or backing file."""
    d = target.disk
    ids = {x for x in (d.serial, d.wwn) if x}
    if not ids:
        ids = {d.name, d.path, target.node, os.path.basename(target.node)}
        if d.backing_file:
            ids.add(d.backing_file)
    return ids


def _confirm(args: argparse.Namespace, plan: copymod.CopyPlan) -> str | None:
    """None when confirmed, else why not."""
    t = plan.target
    if args.yes:
        if not args.target_id:
            return "--yes needs --target-id with the target's serial or WWN"
        if args.target_id not in accepted_ids(t):
            return (f"--target-id {args.target_id} does not match the target {t.label()}: "
                    f"expected {' or '.join(sorted(accepted_ids(t)))}")
        return None
    if not sys.stdin.isatty():
        return "no terminal to confirm on: pass --yes --target-id SERIAL_OR_WWN"
    ident = t.identity
    names = {os.path.basename(t.node), t.node}
    if ident:
        names.add(ident)
    prompt = (f"Everything on {t.label()} will be overwritten.\n"
              f"Type the target's {'serial ' + ident + ' or ' if ident else ''}device name "
              f"({os.path.basename(t.node)}) to go on: ")
    try:
        answer = input(prompt).strip()
    except EOFError:
        answer = ""
    return None if answer in names else "not confirmed"


def _summary(plan: copymod.CopyPlan, args: argparse.Namespace) -> None:
    s, t = plan.source, plan.target
    print(f"source: {s.label()}", file=sys.stderr)
    print(f"target: {t.label()}", file=sys.stderr)
    print(f"size:   {s.size} bytes ({human_size(s.size)}), verify "
          f"{'on (' + args.algorithm + ')' if args.verify else 'off'}"
          f"{', skipping zero chunks' if args.skip_zeros else ''}", file=sys.stderr)
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _finish(result: copymod.CopyResult) -> int:
    stream = sys.stdout
    print(result.message, file=stream)
    v = result.verify
    if result.source_digest or (v and v.source_hash):
        h = result.source_digest.hexdigest if result.source_digest else v.source_hash
        label = "expected" if result.operation == "verify" and not result.target else "source"
        print(f"{result.algorithm} {label}: {h}", file=stream)
    if v and v.target_hash and v.target_hash != (v.source_hash or ""):
        print(f"{result.algorithm} read: {v.target_hash}", file=stream)
    if result.mapfile:
        print(f"mapfile: {result.mapfile}", file=stream)
    if result.report:
        print(f"report: {result.report.text}", file=stream)
    return result.exit_code


def cmd_copy(args: argparse.Namespace) -> int:
    from toolkit.copy import engine as copymod

    try:
        plan = copymod.plan_copy(args.source, args.target, source_role=roles.source_keys())
    except Refused as e:
        return _refused(e, "copy")
    _summary(plan, args)
    why = _confirm(args, plan)
    if why:
        _err(f"copy refused: {why}")
        return EXIT_REFUSED
    options = copymod.CopyOptions(
        verify=args.verify, algorithm=args.algorithm, mapfile=args.mapfile,
        skip_zeros=args.skip_zeros, max_rate=args.max_rate,
        mapfile_interval=args.mapfile_interval,
        chunk_size=args.chunk_size or DEFAULT_CHUNK)
    return _run("copy", lambda line, cancel: copymod.copy(plan, options, progress=line,
                                                        cancel=cancel))


def _run(operation: str, work) -> int:
    """Run ``work(progress_line, cancel_event)``; refusals and I/O errors become exit codes."""
    line = _ProgressLine()
    cancel = _cancel_on_signals()
    try:
        result = work(line, cancel)
    except Refused as e:
        line.end()
        return _refused(e, operation)
    except OSError as e:
        line.end()
        _err(f"{operation} failed: {e}")
        return EXIT_FAILED
    line.end()
    return _finish(result)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.expected and args.target:
        _err("verify: give either SRC DST or DISK --hash HEX")
        return 2
    if not args.expected and not args.target:
        _err("verify: give SRC DST, or DISK --hash HEX")
        return 2
    from toolkit.copy import engine as copymod

    if args.expected:
        return _run("verify", lambda line, cancel: copymod.verify_hash(
            args.source, args.expected, algorithm=args.algo, size=args.size, progress=line,
            cancel=cancel))
    return _run("verify", lambda line, cancel: copymod.verify_disks(
        args.source, args.target, algorithm=args.algo, progress=line, cancel=cancel))


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def register(sub) -> None:
    """Add ``copy`` and ``verify`` to ``rtk``'s subcommands."""
    p = sub.add_parser("copy", help="verified, resumable copy of a disk or partition",
                       description="Copy SRC onto DST (a disk or partition of equal or larger "
                                   "size), verify it, keep a ddrescue mapfile to resume.")
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="read the target back and compare (default: on)")
    p.add_argument("--hash", dest="algorithm", choices=ALGORITHMS, default="blake3",
                   help="hash algorithm (default: blake3)")
    p.add_argument("--mapfile", metavar="PATH",
                   help="GNU ddrescue mapfile (default: under the log directory, named after "
                        "both disks, so the same pair resumes)")
    p.add_argument("--skip-zeros", action="store_true",
                   help="do not write all-zero chunks (only when the target reads back zeros)")
    p.add_argument("--yes", action="store_true", help="no interactive confirmation")
    p.add_argument("--target-id", metavar="ID", help="with --yes: the target's serial or WWN")
    p.add_argument("--max-rate", type=_size, default=None, help=argparse.SUPPRESS)
    p.add_argument("--mapfile-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--chunk-size", type=_size, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_copy)

    v = sub.add_parser("verify", help="compare two disks, or a disk with a recorded hash",
                       description="rtk verify SRC DST compares the first size(SRC) bytes of "
                                   "DST with SRC; rtk verify DISK --hash HEX hashes DISK.")
    v.add_argument("source", metavar="SRC|DISK")
    v.add_argument("target", metavar="DST", nargs="?")
    v.add_argument("--hash", dest="expected", metavar="HEX", help="the expected hash of DISK")
    v.add_argument("--algo", choices=ALGORITHMS, default="blake3",
                   help="hash algorithm (default: blake3)")
    v.add_argument("--size", type=_size, default=None,
                   help="with --hash: hash only the first SIZE bytes (default: all)")
    v.set_defaults(func=cmd_verify)
