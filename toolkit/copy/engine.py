"""Disk Copy: a verified, resumable block copy of a disk or partition onto another.

The steps, each usable on its own (the menu and ``rtk copy`` call the same,
all importable from here):

* :func:`plan_copy` resolves both paths to devices and refuses unsafe pairs
  with :class:`Refused` (:mod:`toolkit.copy.plan`; :func:`check_pair` is the
  pure part).
* :func:`copy` (this module) copies with O_DIRECT on both sides through a
  bounded pipeline (reader thread -> hasher thread -> writer,
  :mod:`toolkit.blockio.pipeline`), keeps a GNU ddrescue mapfile, bound to the pair and
  the source's fingerprint (:mod:`toolkit.copy.binding`), so that running it again with
  ``existing="resume"`` continues, reads around bad sectors (ddrescue style: skip, come back,
  narrow down to the sector), then verifies by reading the target back
  (:mod:`toolkit.blockio.verify`), and writes a report (:mod:`toolkit.copy.report`).
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from toolkit.blockio import allocation, blockdev
from toolkit.blockio.hashing import ALGORITHMS, HashStage, RegionHasher, new_hasher, region_size_for
from toolkit.blockio.mapfile import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, Mapfile
from toolkit.blockio.pipeline import BAD as UNREADABLE
from toolkit.blockio.pipeline import DEFAULT_CHUNK, ZERO, GiB, KiB, Pipeline
from toolkit.blockio.ranges import RangeSet, gaps
from toolkit.blockio.reader import DeviceReader
from toolkit.blockio.verify import compare_devices, verify_against
from toolkit.copy import binding, fingerprint
from toolkit.copy.plan import (
    CopyPlan,
    Refused,
    check_pair,
    default_mapfile,
    plan_copy,
    source_input,
)
from toolkit.copy.report import RUNNING, write_result_report
from toolkit.copy.result import CopyResult, conclude
from toolkit.copy.verify import verify_disks, verify_hash
from toolkit.disks import gate, transport
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.jobs import report
from toolkit.jobs.progress import Progress, Reporter

__all__ = [
    "ALGORITHMS", "CopyOptions", "CopyPlan", "CopyResult", "Progress", "Refused",
    "check_pair", "copy", "default_mapfile", "endpoint_from_disk", "plan_copy",
    "verify_disks", "verify_hash",
]

CLUSTER = 64 * KiB  # the read size when narrowing down a failed chunk


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
    # a storage outage (the path down: toolkit.disks.transport) is waited out this long,
    # then the copy stops, resumable; its failed I/O is done again, never recorded as bad
    outage_limit: float = transport.DEFAULT_LIMIT
    sys_root: str = "/sys"  # where the paths' state is read (tests: a replayed sysfs)


def _chunks(ranges: Iterable[tuple[int, int]], chunk: int):
    for pos, size in ranges:
        end = pos + size
        while pos < end:
            n = min(chunk, end - pos)
            yield pos, n
            pos += n


class _Copier:
    """One run of a copy: owns the file descriptors, the mapfile and the counters."""

    def __init__(self, plan: CopyPlan, opts: CopyOptions, progress, cancel,
                 consent: gate.Consent | None = None):
        self.plan, self.opts = plan, opts
        self.consent = consent  # what the person named the target with (for the gate)
        self.hold: gate.WriteHold | None = None  # the target, from the write gate
        self.cancel = cancel or threading.Event()
        self.reporter = Reporter(progress, opts.progress_interval)
        self.size = plan.source.size
        self.sector = plan.source.sector_size
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
        # the report, written when the copy starts and at each mapfile save (running)
        self.report_paths: report.ReportPaths | None = None
        self.started = time.time()
        self.resumed = False
        self.t0 = time.monotonic()

    # mapfile --------------------------------------------------------------------------
    def load_map(self) -> bool:
        """Open or create the mapfile; True when an earlier run had done something.

        A mapfile already there is used as ``existing`` says (:class:`CopyOptions`):
        refused with what it says, resumed only when it is this pair's and the source's
        fingerprint is unchanged (a plain ddrescue mapfile: only when named), or replaced.
        A new mapfile records both ends' identities and the source's fingerprint."""
        opts = self.opts
        if opts.existing not in ("refuse", "resume", "restart"):
            raise ValueError(f"CopyOptions.existing={opts.existing!r}: expected refuse, "
                             "resume or restart")
        fp = self.fp = fingerprint.take(self.src_fd, self.size, self.sector)
        state = self.state = binding.inspect(self.plan, opts.mapfile, fingerprint=fp)
        now = report.iso_time(time.time())
        if state.exists and (opts.existing == "refuse"
                             or (opts.existing == "resume" and state.problem)):
            raise Refused(state.refusal(opts.choices))
        if state.exists and opts.existing == "resume" and not opts.verify:
            why = state.no_verify_problem(opts.choices)  # known to differ; a foreign claim
            if why:
                raise Refused(why)
        if state.exists and opts.existing == "resume":
            self.map = state.map
            if state.foreign:  # adopted: bound to this pair from now on
                self.warnings.append(state.adopted_warning())
                self.map.meta = binding.new_meta(
                    self.plan, fp, now, origin=f"a mapfile without rtk identity lines, "
                                               f"adopted on {now}")
            else:
                self.map.meta["resumed"] = now
            resumed = self.map.bytes_with(NON_TRIED) != self.size
        else:  # none, or "restart": the old one (if any) is replaced at the first save
            os.makedirs(os.path.dirname(os.path.abspath(self.mapfile_path)), exist_ok=True)
            self.map = Mapfile(self.size)
            self.map.meta = binding.new_meta(self.plan, fp, now)
            resumed = False
        self.save_map()
        return resumed

    def record_verification(self, result: CopyResult) -> None:
        """The verification's outcome in the mapfile (``verified``), kept on disk."""
        v = result.verify
        if v is None or v.error:
            return
        fd = v.first_difference or {}
        where = f"first difference at bytes {fd.get('start')}-{fd.get('end')}" if fd else ""
        self.map.meta["verified"] = binding.verified_text(
            v.match, report.iso_time(time.time()), v.method, result.algorithm, where)
        try:
            self.save_map(sync=False)
        except OSError as e:
            result.warnings.append(f"cannot record the verification in the mapfile "
                                   f"{self.mapfile_path}: {e.strerror or e}")

    def save_map(self, sync: bool = True) -> None:
        if sync and self.dst_fd >= 0:
            self.sync_target()  # what the map calls finished must be on the target
            self.since_sync.clear()
        self.unsynced = 0
        self.last_save = time.monotonic()
        self.map.save(self.mapfile_path, [
            "Mapfile. Created by rtk (Recovery Toolkit) copy, in GNU ddrescue's format",
            f"Source: {self.plan.source.label()}",
            f"Target: {self.plan.target.label()}",
            f"Current time: {report.iso_time(time.time())}",
        ])

    def maybe_save(self, pos: int) -> None:
        if (self.unsynced >= self.opts.sync_bytes
                or time.monotonic() - self.last_save >= self.opts.mapfile_interval):
            self.map.current_pos = pos
            self.save_map()
            self.running_report()

    # the report while the copy runs ---------------------------------------------------
    def running_report(self, phase: str | None = None, status: str = RUNNING,
                       message: str | None = None) -> None:
        """Write (the first time) or rewrite the report in place, atomically: what the
        mapfile records as done so far, so that a power cut leaves a report of the
        interrupted copy (``result`` "running"); the final report replaces it."""
        if not self.opts.write_report:
            return
        now, done = time.time(), self.done_bytes()
        phase = phase or self.reporter.phase or "copy"
        if message is None:
            message = (f"running ({phase}): {done} of {self.size} bytes done as of "
                       f"{report.iso_time(now)}; if no copy runs any more it was interrupted "
                       f"(a power cut, a kill): the mapfile {self.mapfile_path} records what "
                       f"was copied: {self.opts.choices.again}")
        plan, opts = self.plan, self.opts
        r = CopyResult(
            operation="copy", status=status, message=message, source=plan.source.describe(),
            target=plan.target.describe(), size=self.size, started=self.started,
            finished=now, algorithm=opts.algorithm, resumed=self.resumed,
            mapfile=self.mapfile_path, copied_bytes=self.copied, written_bytes=self.written,
            skipped_zero_bytes=self.skipped, unread_hole_bytes=self.unread,
            source_map=self.source_map, write_calls=self.write_calls,
            read_errors=self.read_errors, copy_seconds=time.monotonic() - self.t0,
            unreadable=list(self.map.ranges(BAD)),
            warnings=[*plan.warnings, *self.warnings,
                      *(ev.text() for g in self.guards.values() for ev in g.events)],
            options={"verify": opts.verify, "skip_zeros": opts.skip_zeros,
                     "chunk_size": opts.chunk_size})
        try:
            self.report_paths = write_result_report(
                r, opts.report_dir, paths=self.report_paths, done_bytes=done, updated=now,
                phase=phase if status == RUNNING else None)
        except OSError as e:  # the copy goes on; the final report says it
            why = f"cannot write the report while the copy runs: {e.strerror or e}"
            if why not in self.warnings:
                self.warnings.append(why)

    def final_report(self, result: CopyResult) -> None:
        """The final report, in place of the running one (same files)."""
        result.report = write_result_report(
            result, self.opts.report_dir, paths=self.report_paths,
            done_bytes=self.done_bytes() if hasattr(self, "map") else None)

    def stopped_by(self, error: BaseException) -> None:
        """The copy raised ``error`` after its report was written: the report says so
        (not "running")."""
        if self.report_paths is None or not hasattr(self, "map"):
            return
        what = str(error) or type(error).__name__
        self.running_report(status="failed", message=(
            f"the copy stopped: {what}; the mapfile {self.mapfile_path} records what was "
            f"copied: {self.opts.choices.again}"))

    def done_bytes(self) -> int:
        return self.size - self.map.bytes_with(NON_TRIED, NON_TRIMMED, NON_SCRAPED)

    # writing ----------------------------------------------------------------------------
    def write(self, buf: blockdev.AlignedBuffer, pos: int, n: int, *, zero: bool | None = None
              ) -> None:
        """Write ``n`` bytes at ``pos``; with --skip-zeros not an all-zero chunk (``zero``:
        already checked by the pipeline's middle stage), nor the parts of a chunk in
        the source's holes."""
        written_before = self.written
        if zero is None:
            zero = self.opts.skip_zeros and buf.is_zero(n, self.zeros)
        if zero:
            self.skipped += n
            return
        # the parts in the source's holes are not written (skip-zeros: the target is zeros)
        for a, b in gaps(self.holes.within(pos, n), pos, n):
            self.write_piece(buf.view[a - pos:b - pos], a)
            self.written += b - a
            self.write_calls += 1
            self.unsynced += b - a
        self.skipped += n - (self.written - written_before)

    def mark(self, pos: int, n: int, status: str) -> None:
        """Set the map's status; what was written is remembered until the next sync."""
        self.map.set(pos, n, status)
        if status in (FINISHED, BAD):
            self.since_sync.append((pos, n))

    # storage outages (toolkit.disks.transport) ---------------------------------------
    def watch_paths(self) -> None:
        """A guard on each end's path: an I/O error while it is down is waited out."""
        for role, end in (("SOURCE", self.plan.source), ("TARGET", self.plan.target)):
            self.guards[role] = transport.Guard(
                transport.Lun.of(role, end.node, self.opts.sys_root), self.opts.outage_limit,
                report=self.reporter.waiting, cancel=self.cancel)

    def outage(self, role: str, pos: int, error: OSError) -> bool:
        """After an I/O error at byte ``pos`` of ``role``'s end: False when its path is up
        (a media error: handled as such); else wait until the path is back, reopen a
        device that came back under another name, and True: do the same I/O again.
        Raises :class:`transport.Outage` when the limit passes (or on cancel)."""
        guard = self.guards.get(role)
        if guard is None or not guard.outage(error):
            return False
        old = guard.lun.name
        try:
            name = guard.wait(pos)
            if name != old:
                self.reopen(role, guard.node(), old)
        except transport.Outage:
            if role == "TARGET":
                self.target_lost = True
            raise
        return True

    def reopen(self, role: str, node: str, old: str) -> None:
        """The end that came back as ``node`` (a re-login: a new device name), checked to
        be the same disk, opened again: the SOURCE read-only, checked by size and the
        fingerprint taken when the copy began; the TARGET through the write gate, by its
        serial/WWN, target and LUN."""
        guard = self.guards[role]

        def lost(why: str) -> transport.Outage:
            return transport.Outage(f"the {role} came back as {node} (it was /dev/{old}), "
                                    f"but {why}: nothing more is done with it", guard.lun, 0)
        if role == "SOURCE":
            try:
                fd = blockdev.open_device(node)
            except OSError as e:
                raise lost(f"it cannot be opened ({e.strerror})") from None
            try:
                why = None
                if blockdev.device_size(fd) != self.size:
                    why = f"its size is {blockdev.device_size(fd)} bytes, not {self.size}"
                elif self.fp is not None:
                    now = fingerprint.take(fd, self.size, self.sector)
                    why = self.fp.difference(now)
                    why = why and f"it is not the disk the copy began with: {why}"
                if why:
                    raise lost(why)
            except BaseException:
                os.close(fd)
                raise
            was, self.src_fd = self.src_fd, fd
            os.close(was)
            with contextlib.suppress(Exception):  # a SOURCE LUN is read-only in the kernel
                from toolkit.iscsi import manager
                manager.reapply_read_only()
        else:
            self.hold = self._reopen_target(node, lost)
            self.dst_fd = self.hold.fd
        self.warnings.append(f"the {role} came back under another name after a re-login: "
                             f"{node} (it was /dev/{old}); checked to be the same disk")

    def _reopen_target(self, node: str, lost) -> gate.WriteHold:
        try:
            hold = transport.reopen_target(
                self.plan.target, node, [source_input(self.plan.source, self.src_fd)],
                consent=self.consent, source_role=self.plan.source_role)
        except ValueError as e:
            raise lost(str(e)) from None
        if self.hold is not None:
            self.hold.close()
        return hold

    def read_failed(self, pos: int, n: int, error: OSError) -> int | None:
        """The reader's question about a failed read (in its thread): the descriptor to
        read the chunk again from, after an outage waited out; None: a media error."""
        return self.src_fd if self.outage("SOURCE", pos, error) else None

    def read_again(self, role: str):
        """The verification's question about a failed read of ``role``'s end (in its
        reader's thread): the descriptor to read the chunk again from once an outage is
        waited out (the end reopened when it came back under another name); None: a media
        error. An outage past the limit raises :class:`transport.Outage`, which ends the
        verification (not a mismatch)."""
        def ask(pos: int, n: int, error: OSError) -> int | None:
            if not self.outage(role, pos, error):
                return None
            return self.src_fd if role == "SOURCE" else self.dst_fd
        return ask

    def read_piece(self, view: memoryview, pos: int) -> bool:
        """Read ``view`` at ``pos`` (an outage waited out and read again); False: a read
        error with the path up."""
        while True:
            try:
                blockdev.read_exact(self.src_fd, view, pos)
                return True
            except OSError as e:
                if not self.outage("SOURCE", pos, e):
                    return False

    def write_piece(self, view: memoryview, pos: int) -> None:
        """Write ``view`` at ``pos``; after an outage, again (to the reopened device)."""
        while True:
            try:
                blockdev.write_exact(self.dst_fd, view, pos)
                return
            except OSError as e:
                if not self.outage("TARGET", pos, e):
                    raise

    def sync_target(self) -> None:
        while True:
            try:
                os.fdatasync(self.dst_fd)
                return
            except OSError as e:
                if not self.outage("TARGET", self.map.current_pos, e):
                    raise

    def gave_up(self, e: transport.Outage) -> None:
        """The outage outlasted the limit: stop, resumable (cancelled: just stop)."""
        if not e.cancelled:
            self.failure = (f"{e}; nothing was recorded as unreadable for it (what was not "
                            "read or written then is still to copy)")

    # pass 1: the pipeline -------------------------------------------------------------
    def copy_pass(self, hasher: RegionHasher | None, skipping: bool) -> bool:
        """Copy every non-tried area; False when a hash could not follow the stream.
        A failure of the reader or the hasher (a bug, memory) is raised."""
        opts = self.opts
        max_skip = max(opts.chunk_size, min(GiB, self.size // 100)) if skipping else 0
        reader = DeviceReader(self.src_fd, list(self.map.ranges(NON_TRIED)), opts.chunk_size,
                              skip_errors=True, max_skip=max_skip, max_rate=opts.max_rate,
                              unallocated=self.holes.ranges, on_error=self.read_failed)
        middle = hasher is not None or opts.skip_zeros  # a stage between reader and writer
        stage = HashStage(hasher, self.zeros if opts.skip_zeros else None) if middle else None
        self.map.phase, self.map.current_pass = "?", 1 if skipping else 2
        done = self.done_bytes()
        with Pipeline(reader, chunk=opts.chunk_size, buffers=opts.buffers, stage=stage,
                      cancel=self.cancel) as pipe:
            try:
                for kind, pos, n, payload in pipe:
                    if kind == UNREADABLE:
                        self.read_errors += 1
                        self.reporter.read_errors = self.read_errors
                        self.map.set(pos, n, NON_TRIMMED)
                        continue
                    if self.failure is not None:
                        continue  # drain
                    try:
                        self.write(payload, pos, n, zero=kind == ZERO)
                        self.mark(pos, n, FINISHED)
                        self.copied += n
                        done += n
                    except OSError as e:
                        self.failure = (f"write error on the target {self.plan.target.node} "
                                        f"at byte {pos}: {e.strerror}")
                        pipe.stop()
                        continue
                    except transport.Outage as e:  # the TARGET's
                        self.gave_up(e)
                        pipe.stop()
                        continue
                    try:
                        self.maybe_save(pos + n)
                    except OSError as e:
                        self.failure = (f"cannot flush the target {self.plan.target.node} "
                                        f"after byte {pos + n}: {e.strerror or e}")
                        pipe.stop()
                        continue
                    self.reporter.update(done)
            except transport.Outage as e:  # the SOURCE's, from the reader; or a save's sync
                self.gave_up(e)
        self.unread += reader.unread
        return bool(stage and stage.valid)  # valid: a hasher that kept up

    # passes 2 and 3: narrowing down read errors -----------------------------------------
    def narrow(self, status: str, step: int, fail_status: str, phase: str) -> None:
        """Re-read every ``status`` area in ``step``-sized pieces; what fails again
        becomes ``fail_status`` (for bad sectors, zeros are written in their place)."""
        areas = list(self.map.ranges(status))
        if not areas or self.failure:
            return
        self.map.phase = status
        done = self.done_bytes()
        self.reporter.start(phase, self.size, done)
        buf = blockdev.AlignedBuffer(max(step, self.sector))
        try:
            for pos, n in _chunks(areas, step):
                if self.cancel.is_set():
                    return
                ok = self.read_piece(buf.view[:n], pos)  # an outage: waited out, read again
                if not ok:
                    self.read_errors += 1
                    self.reporter.read_errors = self.read_errors
                    if fail_status == BAD:
                        buf.zero(0, n)
                if ok or fail_status == BAD:
                    try:
                        self.write(buf, pos, n)
                    except OSError as e:
                        self.failure = (f"write error on the target {self.plan.target.node} "
                                        f"at byte {pos}: {e.strerror}")
                        return
                    done += n
                self.mark(pos, n, FINISHED if ok else fail_status)
                if ok:
                    self.copied += n
                elif fail_status == BAD:
                    self.reporter.unreadable += n
                self.maybe_save(pos + n)
                self.reporter.update(done)
        except transport.Outage as e:
            self.gave_up(e)
        finally:
            buf.close()

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

    def _run(self, started: float, resumed: bool) -> CopyResult:
        plan, opts = self.plan, self.opts
        hasher = None
        if opts.verify and not resumed:
            hasher = RegionHasher(opts.algorithm, self.size,
                                  region_size_for(self.size, opts.chunk_size))
        t0 = self.t0 = time.monotonic()
        self.started, self.resumed = started, resumed
        self.running_report("copy")  # the report exists from the start: the pair, the map
        self.reporter.start("copy", self.size, self.done_bytes())
        hash_ok = self.copy_pass(hasher, skipping=True)
        if self.map.bytes_with(NON_TRIED) and not self.failure and not self.cancel.is_set():
            self.copy_pass(None, skipping=False)  # come back for what was skipped
            hash_ok = False
        self.narrow(NON_TRIMMED, CLUSTER, NON_SCRAPED, "trim")
        self.narrow(NON_SCRAPED, self.sector, BAD, "scrape")
        finished = self.map.finished and not self.failure
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
        self.warnings += [ev.text() for g in self.guards.values() for ev in g.events]
        if finished:
            blockdev.flush_buffers(self.dst_fd)
        self.reporter.update(self.done_bytes(), force=True)
        copy_seconds = time.monotonic() - t0
        unreadable = list(self.map.ranges(BAD))
        digest = hasher.digest() if hasher and hash_ok else None

        result = CopyResult(
            operation="copy", status="ok", message="", source=plan.source.describe(),
            target=plan.target.describe(), size=self.size, started=started, finished=0.0,
            algorithm=opts.algorithm, resumed=resumed, mapfile=self.mapfile_path,
            copied_bytes=self.copied, written_bytes=self.written,
            skipped_zero_bytes=self.skipped, unread_hole_bytes=self.unread,
            source_map=self.source_map,
            write_calls=self.write_calls,
            read_errors=self.read_errors, copy_seconds=copy_seconds, unreadable=unreadable,
            source_digest=digest, warnings=[*plan.warnings, *self.warnings],
            options={"verify": opts.verify, "skip_zeros": opts.skip_zeros,
                     "chunk_size": opts.chunk_size},
        )
        if self.failure:
            result.status, result.message = "failed", (
                f"{self.failure}; the mapfile {self.mapfile_path} records what was copied: "
                f"{opts.choices.again}")
        elif self.cancel.is_set() and not finished:
            result.status, result.message = "cancelled", (
                f"interrupted; the mapfile {self.mapfile_path} records what was copied: "
                f"{opts.choices.again}")
        else:
            if opts.verify:
                self.running_report("verify")  # copied; a verification may take hours
                before = {role: len(g.events) for role, g in self.guards.items()}
                if digest:  # an outage while reading is waited out (read_again)
                    result.verify = verify_against(self.dst_fd, digest,
                                                   progress=self.reporter, cancel=self.cancel,
                                                   chunk_size=opts.chunk_size,
                                                   on_error=self.read_again("TARGET"))
                else:
                    result.verify = compare_devices(self.src_fd, self.dst_fd, self.size,
                                                    opts.algorithm, holes=unreadable,
                                                    reporter=self.reporter, cancel=self.cancel,
                                                    chunk_size=opts.chunk_size,
                                                    src_error=self.read_again("SOURCE"),
                                                    dst_error=self.read_again("TARGET"))
                self.record_verification(result)
                result.warnings += [ev.text() for role, g in self.guards.items()
                                    for ev in g.events[before.get(role, 0):]]
            conclude(result, self.cancel)
            v = result.verify
            if v and v.error and result.status == "failed" and any(
                    not ev.resumed for g in self.guards.values() for ev in g.events):
                result.message += (f"; the copy itself is finished (the mapfile "
                                   f"{self.mapfile_path} records it), only its verification "
                                   f"is not: {opts.choices.again} (it verifies again)")
            was = self.state
            if was and was.finished and not was.foreign and not self.copied \
                    and result.status == "ok":  # resumed a finished copy: nothing to do
                result.message = (
                    f"nothing left to copy: this pair was already copied on "
                    f"{binding.shown(was.meta.get('finished'))}; "
                    + ("verified again: identical" if result.verify else "not verified"))
            if was and resumed and result.status == "mismatch":  # what the fingerprint missed
                result.message += "; " + was.mismatch_hint(
                    len(self.fp.samples) if self.fp else fingerprint.COUNT, opts.choices)
        result.finished = time.time()
        return result


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
