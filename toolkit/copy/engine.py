"""Disk Copy: a verified, resumable block copy of a disk or partition onto another.

The steps, each usable on its own (the menu and ``rtk copy`` call the same,
all importable from here):

* :func:`plan_copy` resolves both paths to devices and refuses unsafe pairs
  with :class:`Refused` (:mod:`toolkit.copy.plan`; :func:`check_pair` is the
  pure part).
* :func:`copy` (this module) copies with O_DIRECT on both sides through a
  bounded pipeline (reader thread -> hasher thread -> writer,
  :mod:`toolkit.blockio.pipeline`), keeps a GNU ddrescue mapfile so that running it
  again resumes, reads around bad sectors (ddrescue style: skip, come back,
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
from toolkit.copy.plan import (
    CopyPlan,
    Refused,
    check_pair,
    default_mapfile,
    endpoint_key,
    plan_copy,
)
from toolkit.copy.report import write_result_report
from toolkit.copy.result import CopyResult, conclude
from toolkit.copy.verify import verify_disks, verify_hash
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


def _chunks(ranges: Iterable[tuple[int, int]], chunk: int):
    for pos, size in ranges:
        end = pos + size
        while pos < end:
            n = min(chunk, end - pos)
            yield pos, n
            pos += n


class _Copier:
    """One run of a copy: owns the file descriptors, the mapfile and the counters."""

    def __init__(self, plan: CopyPlan, opts: CopyOptions, progress, cancel):
        self.plan, self.opts = plan, opts
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

    # mapfile --------------------------------------------------------------------------
    def load_map(self) -> bool:
        """Open or create the mapfile; True when an earlier run had done something."""
        src_key, dst_key = endpoint_key(self.plan.source), endpoint_key(self.plan.target)
        if os.path.exists(self.mapfile_path):
            m = Mapfile.load(self.mapfile_path)
            if m.size != self.size:
                raise Refused(f"the mapfile {self.mapfile_path} covers {m.size} bytes but the "
                              f"source has {self.size} bytes: it belongs to another copy")
            for k, want in (("source", src_key), ("target", dst_key)):
                if m.meta.get(k, want) != want:
                    raise Refused(f"the mapfile {self.mapfile_path} belongs to another copy: "
                                  f"its {k} is {m.meta[k]}, this {k} is {want}")
            self.map = m
            resumed = m.bytes_with(NON_TRIED) != self.size
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.mapfile_path)), exist_ok=True)
            self.map = Mapfile(self.size)
            resumed = False
        self.map.meta.update(source=src_key, target=dst_key)
        self.map.meta["started"] = report.iso_time(time.time())
        self.save_map()
        return resumed

    def save_map(self, sync: bool = True) -> None:
        if sync and self.dst_fd >= 0:
            os.fdatasync(self.dst_fd)  # what the map calls finished must be on the target
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
            blockdev.write_exact(self.dst_fd, buf.view[a - pos:b - pos], a)
            self.written += b - a
            self.write_calls += 1
            self.unsynced += b - a
        self.skipped += n - (self.written - written_before)

    # pass 1: the pipeline -------------------------------------------------------------
    def copy_pass(self, hasher: RegionHasher | None, skipping: bool) -> bool:
        """Copy every non-tried area; False when a hash could not follow the stream.
        A failure of the reader or the hasher (a bug, memory) is raised."""
        opts = self.opts
        max_skip = max(opts.chunk_size, min(GiB, self.size // 100)) if skipping else 0
        reader = DeviceReader(self.src_fd, list(self.map.ranges(NON_TRIED)), opts.chunk_size,
                              skip_errors=True, max_skip=max_skip, max_rate=opts.max_rate,
                              unallocated=self.holes.ranges)
        middle = hasher is not None or opts.skip_zeros  # a stage between reader and writer
        stage = HashStage(hasher, self.zeros if opts.skip_zeros else None) if middle else None
        self.map.phase, self.map.current_pass = "?", 1 if skipping else 2
        done = self.done_bytes()
        with Pipeline(reader, chunk=opts.chunk_size, buffers=opts.buffers, stage=stage,
                      cancel=self.cancel) as pipe:
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
                    self.map.set(pos, n, FINISHED)
                    self.copied += n
                    done += n
                except OSError as e:
                    self.failure = (f"write error on the target {self.plan.target.node} at "
                                    f"byte {pos}: {e.strerror}")
                    pipe.stop()
                    continue
                self.maybe_save(pos + n)
                self.reporter.update(done)
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
                try:
                    blockdev.read_exact(self.src_fd, buf.view[:n], pos)
                    ok = True
                except OSError:
                    ok = False
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
                self.map.set(pos, n, FINISHED if ok else fail_status)
                if ok:
                    self.copied += n
                elif fail_status == BAD:
                    self.reporter.unreadable += n
                self.maybe_save(pos + n)
                self.reporter.update(done)
        finally:
            buf.close()

    def run(self) -> CopyResult:
        plan, opts = self.plan, self.opts
        started = time.time()
        new_hasher(opts.algorithm)  # fail early on an unknown name
        self.src_fd = blockdev.open_device(plan.source.path)
        try:
            try:
                self.dst_fd = blockdev.open_device(plan.target.path, write=True, exclusive=True)
            except blockdev.DeviceBusy as e:
                raise Refused(f"the target {plan.target.node} is busy: it is mounted, swap, "
                              "held by RAID/LVM, or opened exclusively by another program "
                              f"({e.strerror})") from None
            for fd, e in ((self.src_fd, plan.source), (self.dst_fd, plan.target)):
                if blockdev.device_size(fd) != e.size:
                    raise Refused(f"{e.node} changed size since it was checked")
            resumed = self.load_map()
            if opts.skip_zeros:  # holes read as zeros, the target reads back zeros
                holes, self.source_map = allocation.unallocated(
                    plan.source.path, self.src_fd, self.size, self.sector)
                self.holes = RangeSet(holes or ())
            return self._run(started, resumed)
        finally:
            for fd in (self.src_fd, self.dst_fd):
                if fd >= 0:
                    os.close(fd)

    def _run(self, started: float, resumed: bool) -> CopyResult:
        plan, opts = self.plan, self.opts
        hasher = None
        if opts.verify and not resumed:
            hasher = RegionHasher(opts.algorithm, self.size,
                                  region_size_for(self.size, opts.chunk_size))
        t0 = time.monotonic()
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
        try:
            self.save_map()
        except OSError as e:
            self.failure = self.failure or f"cannot sync the target or save the mapfile: {e}"
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
            source_digest=digest, warnings=list(plan.warnings),
            options={"verify": opts.verify, "skip_zeros": opts.skip_zeros,
                     "chunk_size": opts.chunk_size},
        )
        if self.failure:
            result.status, result.message = "failed", (
                f"{self.failure}; the mapfile {self.mapfile_path} records what was copied: "
                "run the same copy again to resume")
        elif self.cancel.is_set() and not finished:
            result.status, result.message = "cancelled", (
                f"interrupted; the mapfile {self.mapfile_path} records what was copied: run "
                "the same copy again to resume")
        else:
            if opts.verify:
                if digest:
                    result.verify = verify_against(self.dst_fd, digest,
                                                   progress=self.reporter, cancel=self.cancel,
                                                   chunk_size=opts.chunk_size)
                else:
                    result.verify = compare_devices(self.src_fd, self.dst_fd, self.size,
                                                    opts.algorithm, holes=unreadable,
                                                    reporter=self.reporter, cancel=self.cancel,
                                                    chunk_size=opts.chunk_size)
            conclude(result, self.cancel)
        result.finished = time.time()
        return result


def copy(plan: CopyPlan, options: CopyOptions | None = None,
         progress: Callable[[Progress], None] | None = None,
         cancel: threading.Event | None = None) -> CopyResult:
    """Copy ``plan.source`` onto ``plan.target``, verify, write the report.

    ``progress`` is called from this (worker) thread with :class:`Progress`
    events a few times a second: keep it cheap. Setting ``cancel`` stops the
    copy soon, leaving a consistent mapfile. Raises :class:`Refused` when the
    target cannot be opened exclusively or the mapfile belongs to another copy.
    """
    opts = options or CopyOptions()
    result = _Copier(plan, opts, progress, cancel).run()
    if opts.write_report:
        result.report = write_result_report(result, opts.report_dir)
    return result
