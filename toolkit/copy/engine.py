"""Disk Copy: a verified, resumable block copy of a disk or partition onto another.

The steps, each usable on its own (the menu and ``rtk copy`` call the same,
all importable from here):

* :func:`plan_copy` resolves both paths to devices and refuses unsafe pairs
  with :class:`Refused` (:mod:`toolkit.copy.plan`; :func:`check_pair` is the
  pure part).
* :func:`copy` (this module) copies with O_DIRECT on both sides through a
  bounded pipeline (reader thread -> hasher thread -> writer,
  :mod:`toolkit.blockio.pipeline`), the whole source or only a domain (``domain``: used
  blocks, :mod:`toolkit.copy.scope`), keeps a GNU ddrescue mapfile, bound to the pair,
  the source's fingerprint and the domain (:mod:`toolkit.copy.binding`), so that running
  it again with ``existing="resume"`` continues, reads around bad sectors (ddrescue style:
  skip, come back, narrow down to the sector), reads the target back behind the writer
  while it copies and compares what that did not cover with the source afterwards
  (:mod:`toolkit.copy.behind`), and writes a report (:mod:`toolkit.copy.report`).
* :func:`verify_disks` compares two disks without copying;
  :func:`verify_hash` compares one against a recorded hash (:mod:`toolkit.copy.verify`).

Progress goes to a callback as :class:`Progress` events
(:mod:`toolkit.jobs.progress`), from the worker thread; ``cancel`` (a
:class:`threading.Event`) stops cleanly with a consistent mapfile. Results
and exit codes: :mod:`toolkit.copy.result`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.blockio import allocation, blockdev
from toolkit.blockio.hashing import ALGORITHMS, PieceHasher, new_hasher
from toolkit.blockio.mapfile import BAD, NON_SCRAPED, NON_TRIED, NON_TRIMMED, Mapfile
from toolkit.blockio.pipeline import DEFAULT_CHUNK, GiB
from toolkit.blockio.ranges import RangeSet
from toolkit.blockio.readback import PieceReadBack
from toolkit.copy import binding, fingerprint
from toolkit.copy.behind import BehindWriter
from toolkit.copy.guards import OutageGuards
from toolkit.copy.mapstate import MapKeeping
from toolkit.copy.passes import CLUSTER, CopyPasses
from toolkit.copy.plan import (
    CopyPlan,
    Refused,
    check_pair,
    default_mapfile,
    plan_copy,
    source_input,
)
from toolkit.copy.result import CopyResult, conclude
from toolkit.copy.scope import FreeBlocks, Scope
from toolkit.copy.verify import verify_disks, verify_hash
from toolkit.disks import gate, transport
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.jobs import report
from toolkit.jobs.progress import Progress, Reporter
from toolkit.system import partx, tools

if TYPE_CHECKING:
    from toolkit.copy.usedblocks import Domain

__all__ = [
    "ALGORITHMS", "CLUSTER", "CopyOptions", "CopyPlan", "CopyResult", "Progress", "Refused",
    "check_pair", "copy", "default_mapfile", "endpoint_from_disk", "plan_copy",
    "verify_disks", "verify_hash",
]




TAIL = 1 << 20  # a larger target's last MiB beyond the copy: zeroed (an old backup GPT)


@dataclass
class CopyOptions:
    verify: bool = True
    algorithm: str = "blake3"
    mapfile: str | None = None  # default: default_mapfile(plan)
    skip_zeros: bool = False  # only when the target is known to read back zeros
    chunk_size: int = DEFAULT_CHUNK
    buffers: int = 4
    max_rate: float | None = None  # bytes/s, to be gentle with a source (and for tests)
    mapfile_interval: float = 5.0  # seconds between mapfile saves
    sync_bytes: int = 1 * GiB  # fdatasync the target at least this often
    progress_interval: float = 0.25
    write_report: bool = True
    report_dir: str | None = None
    # a mapfile already there (toolkit.copy.binding): "refuse" (say what it is and what
    # the choices do), "resume" (refused unless it is this pair's and the source is
    # unchanged; a plain ddrescue one only when named with ``mapfile``), "restart"
    existing: str = "refuse"
    choices: binding.Choices = binding.CLI  # how the messages name those choices
    # only these ranges of the source (toolkit.copy.usedblocks.Domain: used blocks, the
    # rest in full); None: the whole source. The mapfile is bound to it (toolkit.copy.scope)
    domain: Domain | None = None
    # the target's blocks outside the domain: "auto" frees them where the target then reads
    # back zeros (toolkit.blockio.zeroing), "leave" never touches them
    free_blocks: str = "auto"
    # with verification: flush the target this often and read back what was flushed while
    # the copy goes on (None: toolkit.blockio.readback.step_for the scope's size)
    read_back_step: int | None = None
    # a storage outage (the path down: toolkit.disks.transport) is waited out this long,
    # then the copy stops, resumable; its failed I/O is done again, never recorded as bad
    outage_limit: float = transport.DEFAULT_LIMIT
    sys_root: str = "/sys"  # where the paths' state is read (tests: a replayed sysfs)



class _Copier(MapKeeping, OutageGuards, CopyPasses, BehindWriter, FreeBlocks):
    """One run of a copy: owns the file descriptors, the mapfile and the counters
    (the mapfile and report: :mod:`toolkit.copy.mapstate`; outages:
    :mod:`toolkit.copy.guards`; the passes: :mod:`toolkit.copy.passes`; the read-back
    and the verification: :mod:`toolkit.copy.behind`; the scope and the blocks outside
    it: :mod:`toolkit.copy.scope`)."""

    def __init__(self, plan: CopyPlan, opts: CopyOptions, progress, cancel,
                 consent: gate.Consent | None = None):
        self.plan, self.opts = plan, opts
        if opts.free_blocks not in ("auto", "leave"):
            raise ValueError(f"CopyOptions.free_blocks={opts.free_blocks!r}: expected auto "
                             "or leave")
        self.consent = consent  # what the person named the target with (for the gate)
        self.hold: gate.WriteHold | None = None  # the target, from the write gate
        self.cancel = cancel or threading.Event()
        self.reporter = Reporter(progress, opts.progress_interval)
        self.size = plan.source.size
        self.sector = plan.source.sector_size
        self.scope = Scope.of(opts.domain, self.size, self.sector)  # Refused: not this disk's
        self.mapfile_path = opts.mapfile or default_mapfile(plan)
        self.written = self.skipped = self.write_calls = self.copied = 0
        self.read_errors = 0
        self.failure: str | None = None
        self.last_save = time.monotonic()
        self.unsynced = 0
        self.zeros = bytes(opts.chunk_size)
        self.holes = RangeSet()  # the source's holes (skip-zeros), from
        self.source_map: str | None = None  # this map (None: none known)
        self.unread = 0  # bytes of those holes not read
        self.src_fd = self.dst_fd = -1
        self.map: Mapfile
        self.state: binding.MapState | None = None  # what the mapfile was when we started
        self.warnings: list[str] = []
        self.fp: fingerprint.Fingerprint | None = None  # the source's, when the copy began
        self.guards: dict[str, transport.Guard] = {}  # "SOURCE", "TARGET": their paths
        self.since_sync: list[tuple[int, int]] = []  # marked done since the last fdatasync
        self.target_lost = False  # gave up on the TARGET: what was not synced is redone
        self.outage_locks: dict[str, threading.Lock] = {}  # one outage at a time per end
        # the read-back behind the writer (toolkit.copy.behind), with verification
        self.hasher: PieceHasher | None = None
        self.read_back: PieceReadBack | None = None
        self.pending: list[tuple[int, int, bytes | None]] = []  # written, not yet flushed
        self.unflushed = 0
        self.step = 0
        # the report, written when the copy starts and at each mapfile save (running)
        self.report_paths: report.ReportPaths | None = None
        self.started = time.time()
        self.resumed = False
        self.t0 = time.monotonic()

    def run(self) -> CopyResult:
        plan, opts = self.plan, self.opts
        started = time.time()
        new_hasher(opts.algorithm)  # fail early on an unknown name
        self.src_fd = blockdev.open_device(plan.source.path)
        try:
            # the only writable descriptor: the gate decides again (the source as opened,
            # by its descriptor; consent; aliases), opens O_EXCL and checks what it opened
            self.hold = gate.open_target(plan.target, [source_input(plan.source, self.src_fd)],
                                         consent=self.consent, source_role=plan.source_role,
                                         direct=True)
            self.dst_fd = self.hold.fd
            for fd, e in ((self.src_fd, plan.source), (self.dst_fd, plan.target)):
                if blockdev.device_size(fd) != e.size:
                    raise Refused(f"{e.node} changed size since it was checked")
            resumed = self.load_map()
            self.watch_paths()
            self.clear_old_tail()
            if opts.skip_zeros:  # holes read as zeros, the target reads back zeros
                holes, self.source_map = allocation.unallocated(
                    plan.source.path, self.src_fd, self.size, self.sector)
                self.holes = RangeSet(holes or ())
            return self._run(started, resumed)
        finally:
            if self.src_fd >= 0:
                os.close(self.src_fd)
            if self.hold is not None:
                self.hold.close()
                if not plan.target.is_partition and self.written:
                    # the kernel still has the target's old partitions (offsets, sizes,
                    # cached blocks): a mount or a copy onto one would use them
                    with contextlib.suppress(tools.ToolError):
                        partx.refresh(plan.target.node)

    def clear_old_tail(self) -> None:
        """A TARGET larger than the SOURCE keeps, after the copy, what its end held: an old
        backup GPT there describes the disk's old partitions, and gdisk or Windows offer to
        bring them back. Its last MiB beyond the copy is zeroed first, and said."""
        end = self.plan.target.size
        start = max(self.size, end - TAIL)
        start -= start % self.sector
        if end <= self.size or start >= end:
            return
        buf = blockdev.AlignedBuffer(end - start)
        try:
            blockdev.read_exact(self.dst_fd, buf.view, start)
            if buf.is_zero(end - start, bytes(end - start)):
                return
            old_gpt = bytes(buf.view[end - start - self.sector:][:8]) == b"EFI PART"
            buf.zero(0, end - start)
            blockdev.write_exact(self.dst_fd, buf.view, start)
            os.fdatasync(self.dst_fd)
        finally:
            buf.close()
        self.warnings.append(
            f"the target is larger than the source: its last {end - start} bytes, beyond "
            "the copy, were zeroed (they held "
            + ("an old backup GPT, which describes the disk's old partitions)" if old_gpt
               else "old data)"))

    def _run(self, started: float, resumed: bool) -> CopyResult:
        t0 = self.t0 = time.monotonic()
        self.started, self.resumed = started, resumed
        self.running_report("copy")  # the report exists from the start: the pair, the map
        self.reporter.start("copy", self.scope.bytes, self.done_bytes())
        try:
            self.start_read_back(resumed)
            self.copy_pass(skipping=True)
            if self.todo(NON_TRIED) and not self.failure and not self.cancel.is_set():
                self.copy_pass(skipping=False)  # come back for what was skipped
            self.narrow(NON_TRIMMED, CLUSTER, NON_SCRAPED, "trim")
            self.narrow(NON_SCRAPED, self.sector, BAD, "scrape")
            finished = self._close_map(self.scope_finished() and not self.failure)
            self.warnings += [ev.text() for g in self.guards.values() for ev in g.events]
            if finished:
                blockdev.flush_buffers(self.dst_fd)
            self.reporter.update(self.done_bytes(), force=True)
            digest = self.hasher.source_digest(self.size) if self.hasher else None
            result = self._result(started, resumed, time.monotonic() - t0, digest)
            self._conclude(result, finished, resumed)
        finally:
            self.stop_read_back()
        result.finished = time.time()
        return result

    def _conclude(self, result: CopyResult, finished: bool, resumed: bool) -> None:
        """Status and message: failed, cancelled, or the free blocks, the verification
        and the verdict."""
        opts = self.opts
        if self.failure:
            result.status, result.message = "failed", (
                f"{self.failure}; the mapfile {self.mapfile_path} records what was copied: "
                f"{opts.choices.again}")
        elif self.cancel.is_set() and not finished:
            result.status, result.message = "cancelled", (
                f"interrupted; the mapfile {self.mapfile_path} records what was copied: "
                f"{opts.choices.again}")
        else:
            self.free_blocks(result)
            if opts.verify:
                self.verify(result)
            conclude(result, self.cancel)
            self._explain(result, resumed)

    def _close_map(self, finished: bool) -> bool:
        """The last save of the mapfile (what was not synced to a lost TARGET: to copy
        again); whether the copy is still finished."""
        if finished:
            self.map.phase, self.map.current_pos = "+", self.size
            self.map.meta.setdefault("finished", report.iso_time(time.time()))
        try:
            if self.target_lost:  # not known to be on the TARGET: to be written again
                for pos, n in self.since_sync:
                    self.map.set(pos, n, NON_TRIED)
            self.save_map(sync=not self.target_lost)
        except transport.Outage as e:  # the last sync met an outage that lasted
            self.gave_up(e)
            for pos, n in self.since_sync:
                self.map.set(pos, n, NON_TRIED)
            if finished and self.since_sync:
                finished = False
                self.map.phase = "?"
                self.map.meta.pop("finished", None)
            self.save_map(sync=False)
        except OSError as e:
            self.failure = self.failure or f"cannot sync the target or save the mapfile: {e}"
        return finished

    def _result(self, started: float, resumed: bool, copy_seconds: float,
                digest: str | None) -> CopyResult:
        plan, opts = self.plan, self.opts
        return CopyResult(
            operation="copy", status="ok", message="", source=plan.source.describe(),
            target=plan.target.describe(), size=self.size, started=started, finished=0.0,
            algorithm=opts.algorithm, resumed=resumed, mapfile=self.mapfile_path,
            copied_bytes=self.copied, written_bytes=self.written,
            skipped_zero_bytes=self.skipped, unread_hole_bytes=self.unread,
            source_map=self.source_map,
            write_calls=self.write_calls,
            read_errors=self.read_errors, copy_seconds=copy_seconds,
            unreadable=list(self.map.ranges(BAD)), domain=self.scope.record(),
            source_digest=digest, warnings=[*plan.warnings, *self.warnings],
            options=self.options_record(),
        )

    def _explain(self, result: CopyResult, resumed: bool) -> None:
        """What the message adds after the verdict: a verification cut short, a finished
        copy resumed, a mismatch the fingerprint missed."""
        opts = self.opts
        v = result.verify
        if v and v.error and result.status == "failed" and any(
                not ev.resumed for g in self.guards.values() for ev in g.events):
            result.message += (f"; the copy itself is finished (the mapfile "
                               f"{self.mapfile_path} records it), only its verification "
                               f"is not: {opts.choices.again} (it verifies again)")
        was = self.state
        if was and was.finished and not was.foreign and not self.copied \
                and result.status == "ok":  # resumed a finished copy: nothing to do
            what = f"{result.domain['summary']}, identical" if result.domain else "identical"
            result.message = (
                f"nothing left to copy: this pair was already copied on "
                f"{binding.shown(was.meta.get('finished'))}; "
                + (f"verified again: {what}" if result.verify else "not verified")
                + result.scope_note())
        if was and resumed and result.status == "mismatch":  # what the fingerprint missed
            result.message += "; " + was.mismatch_hint(
                len(self.fp.samples) if self.fp else fingerprint.COUNT, opts.choices)


def copy(plan: CopyPlan, options: CopyOptions | None = None,
         progress: Callable[[Progress], None] | None = None,
         cancel: threading.Event | None = None,
         consent: gate.Consent | None = None) -> CopyResult:
    """Copy ``plan.source`` onto ``plan.target``, verify, write the report.

    ``progress`` is called from this (worker) thread with :class:`Progress`
    events a few times a second: keep it cheap. Setting ``cancel`` stops the
    copy soon, leaving a consistent mapfile. Raises :class:`Refused` when the
    target cannot be opened exclusively, or a mapfile is there and ``options.existing``
    does not allow it to be used (:mod:`toolkit.copy.binding`: another pair's, the source
    changed, a plain ddrescue one at the default place, or neither resume nor restart
    was asked for).

    The target is opened by the write gate (:func:`toolkit.disks.gate.open_target`),
    which refuses unless ``consent`` (what the person typed or passed: ``--target-id``,
    the menu's confirmation, ``rtk.consent=``) names it; a Python caller that passes
    none names the target by ``plan.target.path``.
    """
    opts = options or CopyOptions()
    copier = _Copier(plan, opts, progress, cancel, consent)
    try:
        result = copier.run()
    except BaseException as e:
        with contextlib.suppress(Exception):  # never hides why the copy stopped
            copier.stopped_by(e)
        raise
    if opts.write_report:
        copier.final_report(result)
    return result
