"""``rtk copy`` and ``rtk verify``: the command line of Disk Copy.

    rtk copy SRC DST [SRC DST ...] [--no-verify] [--hash blake3|sha256] [--mapfile PATH]
                     [--resume | --restart] [--skip-zeros] [--used-blocks]
                     [--outage-limit DURATION] [--[no-]concurrent]
                     [--yes --target-id SERIAL_OR_WWN [--target-id ...]]
    rtk verify SRC DST [--algo blake3|sha256]
    rtk verify DISK --hash HEX [--algo blake3|sha256] [--size BYTES]

Exit codes: 0 ok; 3 ok, but some source ranges were unreadable (zeros written
there, ranges in the report and the mapfile); 4 verification mismatch;
5 refused (nothing was written); 1 failed or interrupted (the mapfile lets the
same command resume with ``--resume``); 2 usage error (argparse).

A mapfile already there for the pair (an interrupted or a finished copy) stops the copy,
before the confirmation, with what it says: ``--resume`` continues it (refused when it is
another pair's, the source changed since it started, or it was edited), ``--restart``
discards it. A plain ddrescue mapfile is only used when named with ``--mapfile``, and
never with ``--no-verify``; nor is a pair whose last verification found a difference
resumed with ``--no-verify`` (:mod:`toolkit.copy.binding`).

The copy asks for confirmation: type the target's serial (or WWN), or its
device name. Scripts pass ``--yes --target-id ID``, where ID must be the
target's serial or WWN (for a disk that has neither, such as a loop device:
its kernel name or backing file); any other value is refused. The confirmation,
the progress line and Ctrl-C handling are :mod:`toolkit.cli.common`'s, shared
with ``rtk restore``.

Several pairs (``rtk copy SRC1 DST1 SRC2 DST2``) make one job, :mod:`toolkit.cli.copy_job`:
one summary, one confirmation per target (``--target-id`` once per pair, in order), the
worst pair's exit code. ``--used-blocks`` copies what the source's filesystems use
(:mod:`toolkit.copy.usedblocks`) and every region no tool maps.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
import string
import sys
from typing import TYPE_CHECKING

from toolkit.blockio.hashing import ALGORITHMS
from toolkit.blockio.mapfile import MapfileError
from toolkit.blockio.pipeline import DEFAULT_CHUNK
from toolkit.cli.common import confirmed, err, os_error, refused, run_with_progress
from toolkit.disks import roles
from toolkit.errors import Refused
from toolkit.exitcodes import EXIT_REFUSED, EXIT_USAGE
from toolkit.units import human_size

if TYPE_CHECKING:  # the engine is imported by the commands that run it
    from toolkit.copy import engine as copymod


def _summary(plan: copymod.CopyPlan, args: argparse.Namespace) -> None:
    from toolkit.copy.job import cluster_sentence

    s, t = plan.source, plan.target
    print(f"source: {s.label()}", file=sys.stderr)
    print(f"target: {t.label()}", file=sys.stderr)
    print(f"size:   {s.size} bytes ({human_size(s.size)}), verify "
          f"{'on (' + args.algorithm + ')' if args.verify else 'off'}"
          f"{', skipping zero chunks' if args.skip_zeros else ''}"
          f"{', used blocks only' if args.used_blocks else ''}", file=sys.stderr)
    if sentence := cluster_sentence(plan):  # toolkit.disks.cluster
        print(f"cluster: {sentence}", file=sys.stderr)
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _finish(result: copymod.CopyResult) -> int:
    stream = sys.stdout
    print(result.message, file=stream)
    v = result.verify
    if result.source_digest or (v and v.source_hash):
        h = result.source_digest.hexdigest if result.source_digest else v.source_hash
        label = "expected" if result.operation == "verify" and not result.target else "source"
        if result.domain:  # not the whole source's: `rtk verify --hash` cannot match it
            label = f"of the used-blocks domain ({result.domain['bytes']} bytes)"
        print(f"{result.algorithm} {label}: {h}", file=stream)
    if v and v.target_hash and v.target_hash != (v.source_hash or ""):
        print(f"{result.algorithm} read: {v.target_hash}", file=stream)
    if result.mapfile:
        print(f"mapfile: {result.mapfile}", file=stream)
    if result.report:
        print(f"report: {result.report.text}", file=stream)
    return result.exit_code


def _existing_mapfile(plan: copymod.CopyPlan, args: argparse.Namespace, existing: str,
                      domain) -> str | None:
    """Why the mapfile already there stops this copy (None: go on), said before the
    confirmation (the engine checks again when it starts); ``domain``: the copy's (a
    used-blocks copy resumes only a mapfile of the same domain)."""
    from toolkit.copy import binding

    try:
        state = binding.inspect(plan, args.mapfile, domain=domain)
    except OSError:
        return None  # the source cannot be read: the copy itself says so
    if not state.exists:
        return None
    if existing == "refuse" or (existing == "resume" and state.problem):
        return state.refusal()
    if existing == "resume" and not args.verify and (why := state.no_verify_problem()):
        return why  # a pair known to differ, a foreign mapfile's claim: not unverified
    if existing == "restart":
        print(f"mapfile: {state.path} discarded (--restart): copying everything",
              file=sys.stderr)
    elif state.foreign:
        print(f"warning: {state.adopted_warning()}", file=sys.stderr)
    else:
        print(f"mapfile: resuming: {state.says()}", file=sys.stderr)
    return None


def _mapfile_problem(path: str | None) -> str | None:
    """Why ``--mapfile PATH`` cannot be a mapfile, before anything is opened: an existing
    directory, device or FIFO (a device would be read as text, then replaced by a file)."""
    if path == "":
        return "--mapfile needs a path"
    if path is None:
        return None
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return f"the mapfile {path} cannot be made: {parent} is not a directory"
        return None
    try:
        st = os.stat(path)
    except OSError as e:
        return f"the mapfile {path} cannot be used: {os_error(e)}"
    if stat.S_ISDIR(st.st_mode):
        return f"the mapfile {path} is a directory: give the path of a file"
    if not stat.S_ISREG(st.st_mode):
        return (f"the mapfile {path} is not a regular file (a device, a FIFO?): give the "
                "path of a file")
    return None


def _copy_work(copymod, plan, options, consent=None):
    """The copy, a mapfile that cannot be read turned into a refusal (nothing written);
    ``consent``: what the person confirmed the target with, for the write gate."""
    def work(line, cancel):
        try:
            return copymod.copy(plan, options, progress=line, cancel=cancel, consent=consent)
        except MapfileError as e:
            raise Refused(str(e) if str(e).startswith("the mapfile ") else
                          f"the mapfile {options.mapfile or 'of this copy'}: {e}") from None
    return work


def existing_problem(plan: copymod.CopyPlan, args: argparse.Namespace,
                     options=None) -> str | None:
    """Why the mapfile already there for the pair stops this copy (None: go on), as
    ``--resume``/``--restart`` say; ``options``: the copy's (its domain is checked too)."""
    from toolkit.copy import binding
    domain = binding.UNCHECKED if options is None else options.domain
    return _existing_mapfile(plan, args, _existing(args), domain)


def _existing(args: argparse.Namespace) -> str:
    return "resume" if args.resume else "restart" if args.restart else "refuse"


def options_from(args: argparse.Namespace, copymod, plan: copymod.CopyPlan | None = None):
    """The copy's :class:`~toolkit.copy.engine.CopyOptions` from the command line; with
    ``plan`` and ``--used-blocks``, the domain of its source's used blocks
    (:func:`toolkit.copy.domain_choice.with_used_blocks`, :class:`Refused` if it cannot)."""
    from toolkit.copy import domain_choice

    options = copymod.CopyOptions(
        existing=_existing(args), verify=args.verify, algorithm=args.algorithm,
        mapfile=args.mapfile, skip_zeros=args.skip_zeros, max_rate=args.max_rate,
        mapfile_interval=args.mapfile_interval, outage_limit=args.outage_limit,
        chunk_size=args.chunk_size or DEFAULT_CHUNK)
    if plan is not None and args.used_blocks:
        options = domain_choice.with_used_blocks(options, plan.source)
    return options


def cmd_copy(args: argparse.Namespace) -> int:
    from toolkit.cli.copy_job import cmd_copy_job, pairs_of
    from toolkit.copy import engine as copymod

    pairs = pairs_of(args)
    if pairs is None:
        return EXIT_USAGE
    if why := _mapfile_problem(args.mapfile):
        return refused(Refused(why), "copy")
    from toolkit.copy import domain_choice
    if args.used_blocks and not domain_choice.available():  # before any question
        return refused(Refused("--used-blocks: this build cannot map the used blocks (no "
                               "toolkit.copy.usedblocks): copy every block instead"), "copy")
    if len(pairs) > 1:
        return cmd_copy_job(args, pairs, copymod)
    if len(args.target_id or []) > 1:
        err(f"copy refused: {len(args.target_id)} --target-id given for one pair")
        return EXIT_REFUSED
    args.target_id = args.target_id[0] if args.target_id else None
    try:
        plan = copymod.plan_copy(args.source, args.target, source_role=roles.source_keys())
    except Refused as e:
        return refused(e, "copy")
    _summary(plan, args)
    try:  # the used blocks are mapped before the question: the mapfile is of this domain?
        options = options_from(args, copymod, plan)
    except Refused as e:
        return refused(e, "copy")
    why = existing_problem(plan, args, options)
    if why:
        return refused(Refused(why), "copy")
    consent = confirmed(args, plan.target, "copy")
    if not consent:
        return EXIT_REFUSED
    return run_with_progress("copy", _copy_work(copymod, plan, options, consent), _finish)


HEX_DIGITS = {"blake3": 64, "sha256": 64}  # the hexadecimal length of each algorithm's hash


def hash_problem(text: str, algorithm: str) -> str | None:
    """Why ``--hash TEXT`` cannot be a hash of ``algorithm``; None when it can."""
    h, want = text.strip().lower(), HEX_DIGITS[algorithm]
    shown = repr(text) if len(text) <= 80 else f"of {len(text)} characters"
    if h and not all(c in string.hexdigits for c in h):
        return (f"--hash {shown} is not hexadecimal: a {algorithm} hash is {want} "
                "hexadecimal digits (0-9, a-f)")
    if len(h) != want:
        return (f"--hash {shown}: expected {want} hexadecimal digits (a {algorithm} hash), "
                f"got {len(h)}")
    return None


def cmd_verify(args: argparse.Namespace) -> int:
    if args.expected is not None and args.target:
        err("verify: give either SRC DST or DISK --hash HEX")
        return EXIT_USAGE
    if args.expected is None and not args.target:
        err("verify: give SRC DST, or DISK --hash HEX")
        return EXIT_USAGE
    if args.expected is not None and (why := hash_problem(args.expected, args.algo)):
        err(f"verify: {why}; nothing was read")  # before the disk is even looked at
        return EXIT_USAGE
    from toolkit.copy import engine as copymod

    if args.expected is not None:
        return run_with_progress("verify", lambda line, cancel: copymod.verify_hash(
            args.source, args.expected, algorithm=args.algo, size=args.size, progress=line,
            cancel=cancel), _finish)
    return run_with_progress("verify", lambda line, cancel: copymod.verify_disks(
        args.source, args.target, algorithm=args.algo, progress=line, cancel=cancel), _finish)


_SIZE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([kmgt]?)(?:i?b)?", re.I | re.ASCII)


def _size(text: str) -> int:
    """BYTES, or with a binary unit: 64k, 4M, 1.5G, 2TiB; at least 1, below 2**63."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: BYTES, or a number with "
                                         "k, M, G or T (binary: 4M is 4 MiB)")
    n = int(float(m.group(1)) * (1 << 10 * " kmgt".index(m.group(2).lower() or " ")))
    if not 1 <= n < 1 << 63:
        raise argparse.ArgumentTypeError(f"{text!r}: expected from 1 byte to 8 EiB")
    return n


def _chunk(text: str) -> int:
    n = _size(text)
    if n % 4096:
        raise argparse.ArgumentTypeError(f"{text!r}: a chunk is a multiple of 4096 bytes")
    return n


def _seconds(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        t = math.nan
    if not (math.isfinite(t) and t > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return t


_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*(s|sec|m|min|h)?", re.I | re.ASCII)


def duration(text: str) -> float:
    """Seconds, or with a unit: ``90``, ``30s``, ``10m``, ``1.5h``; above 0."""
    m = _DURATION.fullmatch(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: seconds, or a number "
                                         "with s, m or h (30s, 10m, 2h)")
    unit = (m.group(2) or "s").lower()[0]
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[unit]


def register(sub) -> None:
    """Add ``copy`` and ``verify`` to ``rtk``'s subcommands."""
    p = sub.add_parser("copy", help="verified, resumable copy of a disk or partition",
                       description="Copy SRC onto DST (a disk or partition of equal or larger "
                                   "size), verify it, keep a ddrescue mapfile to resume. "
                                   "Several SRC DST pairs make one job: one summary, one "
                                   "confirmation per target, one job report.")
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")
    p.add_argument("more", nargs="*", metavar="SRC DST",
                   help="more pairs: a copy job, one summary, one confirmation per target")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="read the target back and compare (default: on)")
    p.add_argument("--hash", dest="algorithm", choices=ALGORITHMS, default="blake3",
                   help="hash algorithm (default: blake3)")
    p.add_argument("--mapfile", metavar="PATH",
                   help="GNU ddrescue mapfile (default: under the log directory, named after "
                        "both disks, so the same pair resumes; a plain ddrescue mapfile is "
                        "only used when named here)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the copy the mapfile records (refused if it is of "
                            "another pair, or the source changed since it started); a "
                            "finished copy is only verified again")
    again.add_argument("--restart", action="store_true",
                       help="discard the mapfile already there and copy everything again")
    p.add_argument("--skip-zeros", action="store_true",
                   help="do not write all-zero chunks (only when the target reads back zeros)")
    p.add_argument("--outage-limit", type=duration, default=600.0, metavar="DURATION",
                   help="how long a storage outage (an iSCSI path down, a LUN gone) is "
                        "waited out before the copy stops, resumable (default: 10m; 30s, "
                        "2h...); what fails meanwhile is read or written again, never "
                        "recorded as unreadable")
    p.add_argument("--used-blocks", action="store_true",
                   help="copy only the blocks the source's filesystems use (and in full "
                        "every region no tool maps: partition tables, unknown filesystems)")
    p.add_argument("--concurrent", action=argparse.BooleanOptionalAction, default=None,
                   help="several pairs: copy those that share no device side by side "
                        "(the default, the faster where measured); --no-concurrent: one "
                        "pair after another")
    p.add_argument("--yes", action="store_true", help="no interactive confirmation")
    p.add_argument("--target-id", metavar="ID", action="append",
                   help="with --yes: the target's serial or WWN; once per pair, in order")
    p.add_argument("--max-rate", type=_size, default=None, help=argparse.SUPPRESS)
    p.add_argument("--mapfile-interval", type=_seconds, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--chunk-size", type=_chunk, default=None, help=argparse.SUPPRESS)
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
