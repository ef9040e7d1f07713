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
its kernel name or backing file); any other value is refused. The confirmation,
the progress line and Ctrl-C handling are :mod:`toolkit.cli.common`'s, shared
with ``rtk restore``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from toolkit.blockio.hashing import ALGORITHMS
from toolkit.blockio.pipeline import DEFAULT_CHUNK
from toolkit.cli.common import confirmed, err, refused, run_with_progress
from toolkit.disks import roles
from toolkit.errors import Refused
from toolkit.exitcodes import EXIT_REFUSED
from toolkit.units import human_size

if TYPE_CHECKING:  # the engine is imported by the commands that run it
    from toolkit.copy import engine as copymod


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
        return refused(e, "copy")
    _summary(plan, args)
    if not confirmed(args, plan.target, "copy"):
        return EXIT_REFUSED
    options = copymod.CopyOptions(
        verify=args.verify, algorithm=args.algorithm, mapfile=args.mapfile,
        skip_zeros=args.skip_zeros, max_rate=args.max_rate,
        mapfile_interval=args.mapfile_interval,
        chunk_size=args.chunk_size or DEFAULT_CHUNK)
    return run_with_progress("copy", lambda line, cancel: copymod.copy(
        plan, options, progress=line, cancel=cancel), _finish)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.expected and args.target:
        err("verify: give either SRC DST or DISK --hash HEX")
        return 2
    if not args.expected and not args.target:
        err("verify: give SRC DST, or DISK --hash HEX")
        return 2
    from toolkit.copy import engine as copymod

    if args.expected:
        return run_with_progress("verify", lambda line, cancel: copymod.verify_hash(
            args.source, args.expected, algorithm=args.algo, size=args.size, progress=line,
            cancel=cancel), _finish)
    return run_with_progress("verify", lambda line, cancel: copymod.verify_disks(
        args.source, args.target, algorithm=args.algo, progress=line, cancel=cancel), _finish)


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
