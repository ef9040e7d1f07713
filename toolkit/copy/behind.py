"""The copy's verification: the target read back behind the writer, then what that did
not cover compared with the source. A mixin of :class:`toolkit.copy.engine._Copier`.

While the copy runs, every piece written (:meth:`BehindWriter.behind`) waits with the
BLAKE3 digest the source's piece had in the pipeline (:class:`PieceHasher`; zeros for a
piece not written because it is zeros, and for a bad sector's zeros); every
:attr:`step` bytes the target is flushed (fdatasync) and the pieces flushed go to the
read-back (:class:`toolkit.blockio.readback.PieceReadBack`), which reads them with
O_DIRECT in its own thread and compares, while the copy goes on. Once the copy is done,
the rest is read back, then what the read-back did not cover within the scope (what an
earlier run copied, before a resume) is compared with the source side by side
(:func:`toolkit.blockio.verify.compare_devices`; unreadable ranges as the zeros written
there). The outcome says how much was verified each way (``read_back_bytes``,
``compared_bytes``) and what it covered (``covered``: the scope's summary).
"""

from __future__ import annotations

import time

from toolkit.blockio.hashing import MISSING, PieceHasher
from toolkit.blockio.ranges import subtract
from toolkit.blockio.readback import PieceReadBack, step_for
from toolkit.blockio.verify import VerifyOutcome, compare_devices, first_difference_in

BOTH = "read back target and compared with source"


class BehindWriter:
    """The read-back behind the writer and the verification (state: the copier's)."""

    def start_read_back(self, resumed: bool) -> None:
        """With verification: the source's pieces hashed in the pipeline (the stream as a
        whole too, unless resumed: this run does not read all of the scope then), and the
        read-back thread started."""
        opts = self.opts
        if not opts.verify:
            return
        whole = None if resumed else self.scope.ranges
        self.hasher = PieceHasher(opts.algorithm, whole)
        self.step = opts.read_back_step or step_for(self.scope.bytes, opts.chunk_size)
        self.read_back = PieceReadBack(self.dst_fd, opts.chunk_size,
                                       algorithm=opts.algorithm if whole else None,
                                       ranges=whole, on_error=self.read_again("TARGET"))
        self.read_back.start()

    def stop_read_back(self) -> None:
        if self.read_back is not None:
            self.read_back.stop()

    def behind(self, pos: int, n: int, digest: bytes | None) -> None:
        """The piece at ``pos`` was written (or, ``digest`` None, holds zeros): to read
        back once flushed. A piece without a digest is left to the comparison after."""
        if self.read_back is not None and digest is not MISSING:
            self.pending.append((pos, n, digest))
            self.unflushed += n

    def maybe_flush(self) -> None:
        """Every :attr:`step` bytes: flush the target, hand what was flushed over."""
        if self.read_back is not None and self.unflushed >= self.step:
            self.sync_target()  # an outage waited out (past the limit: raised)
            self.since_sync.clear()
            self.hand_over()

    def hand_over(self) -> None:
        """The pieces written before the last flush, to the read-back."""
        for pos, n, digest in self.pending:
            self.read_back.hand_over(pos, n, digest)
        self.pending.clear()
        self.unflushed = 0

    # the verification, once the copy is done ------------------------------------------
    def verify(self, result) -> None:
        """Read back the rest, compare what was not read back; ``result.verify``."""
        self.running_report("verify")  # copied; a verification may take hours
        before = {role: len(g.events) for role, g in self.guards.items()}
        t0 = time.monotonic()
        self.hand_over()  # the copy's last save flushed them
        back = self.read_back.finish(self.reporter, self.cancel, self.scope.bytes)
        rest = subtract(self.scope.ranges, self.read_back.check.checked)
        out = back
        if rest and not back.error:
            out = self._compare(back, rest, result.unreadable)
        elif result.source_digest:
            out.source_hash = result.source_digest.hexdigest
            if back.target_hash and back.target_hash != out.source_hash:
                out.match = False  # every piece the same, the whole not: never so far
        fd = out.first_difference
        if fd and fd.get("offset") is None:  # read back: which byte of the piece
            off = first_difference_in(self.src_fd, self.dst_fd, fd["start"],
                                      fd["end"] - fd["start"])
            if off is not None:
                fd["offset"] = off
        out.covered = self.scope.summary()
        out.seconds = time.monotonic() - t0
        result.verify = out
        self.record_verification(result)
        result.warnings += [ev.text() for role, g in self.guards.items()
                            for ev in g.events[before.get(role, 0):]]

    def _compare(self, back: VerifyOutcome, rest, unreadable) -> VerifyOutcome:
        """Compare ``rest`` with the source; the outcome of both parts."""
        cmp = compare_devices(self.src_fd, self.dst_fd, self.size, self.opts.algorithm,
                              holes=unreadable, reporter=self.reporter, cancel=self.cancel,
                              chunk_size=self.opts.chunk_size,
                              src_error=self.read_again("SOURCE"),
                              dst_error=self.read_again("TARGET"),
                              ranges=rest, base=back.read_back_bytes)
        if not back.read_back_bytes:
            return cmp
        firsts = [d for d in (back.first_difference, cmp.first_difference) if d]
        return VerifyOutcome(
            match=back.match and cmp.match, method=BOTH, error=cmp.error,
            first_difference=min(firsts, key=lambda d: d["start"]) if firsts else None,
            differing_regions=back.differing_regions + cmp.differing_regions,
            read_back_bytes=back.read_back_bytes, read_while_writing=back.read_while_writing,
            compared_bytes=cmp.compared_bytes)
