"""The copy's passes over its scope (:mod:`toolkit.copy.scope`): pass 1 (and its return for
what was skipped) through the pipeline, then passes 2 and 3 (trim, scrape) narrowing read
errors down to the sector, ddrescue style; and the writes they make, each piece then
waiting to be read back (:mod:`toolkit.copy.behind`). A mixin of
:class:`toolkit.copy.engine._Copier`."""

from __future__ import annotations

from collections.abc import Iterable

from toolkit.blockio import blockdev
from toolkit.blockio.hashing import HashStage, PieceStage, piece_digest
from toolkit.blockio.mapfile import BAD, FINISHED, NON_TRIED, NON_TRIMMED
from toolkit.blockio.pipeline import BAD as UNREADABLE
from toolkit.blockio.pipeline import ZERO, GiB, KiB, Pipeline
from toolkit.blockio.ranges import gaps
from toolkit.blockio.reader import DeviceReader
from toolkit.disks import transport

CLUSTER = 64 * KiB  # the read size when narrowing down a failed chunk


def _chunks(ranges: Iterable[tuple[int, int]], chunk: int):
    for pos, size in ranges:
        end = pos + size
        while pos < end:
            n = min(chunk, end - pos)
            yield pos, n
            pos += n


class CopyPasses:
    """The passes of one copy and their writes (state: the copier's)."""

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


    # pass 1: the pipeline -------------------------------------------------------------
    def copy_pass(self, skipping: bool) -> None:
        """Copy every non-tried area of the scope (with verification, each piece's digest
        to the read-back: :mod:`toolkit.copy.behind`). A failure of the reader or the
        hasher (a bug, memory) is raised."""
        opts = self.opts
        max_skip = max(opts.chunk_size, min(GiB, self.size // 100)) if skipping else 0
        reader = DeviceReader(self.src_fd, self.todo(NON_TRIED), opts.chunk_size,
                              skip_errors=True, max_skip=max_skip, max_rate=opts.max_rate,
                              unallocated=self.holes.ranges, on_error=self.read_failed)
        zeros = self.zeros if opts.skip_zeros else None
        hasher = self.hasher
        stage = (PieceStage(hasher, zeros) if hasher is not None
                 else HashStage(None, zeros) if opts.skip_zeros else None)
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
                    if hasher is not None:
                        self.behind(pos, n, hasher.take(pos, n))
                    try:
                        self.maybe_flush()
                        self.maybe_save(pos + n)
                    except OSError as e:
                        self.failure = (f"cannot flush the target {self.plan.target.node} "
                                        f"after byte {pos + n}: {e.strerror or e}")
                        pipe.stop()
                        continue
                    self.reporter.update(done)
            except transport.Outage as e:  # the SOURCE's, from the reader; or a sync's
                self.gave_up(e)
        self.unread += reader.unread

    # passes 2 and 3: narrowing down read errors -----------------------------------------
    def narrow(self, status: str, step: int, fail_status: str, phase: str) -> None:
        """Re-read every ``status`` area in ``step``-sized pieces; what fails again
        becomes ``fail_status`` (for bad sectors, zeros are written in their place)."""
        areas = self.todo(status)
        if not areas or self.failure:
            return
        self.map.phase = status
        done = self.done_bytes()
        self.reporter.start(phase, self.scope.bytes, done)
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
                if ok or fail_status == BAD:  # read back later: the data, or the zeros
                    self.behind(pos, n, piece_digest(buf.view[:n]) if ok else None)
                if ok:
                    self.copied += n
                elif fail_status == BAD:
                    self.reporter.unreadable += n
                self.maybe_flush()
                self.maybe_save(pos + n)
                self.reporter.update(done)
        except transport.Outage as e:
            self.gave_up(e)
        finally:
            buf.close()
