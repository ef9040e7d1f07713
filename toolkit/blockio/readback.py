"""Reading a target back behind its writer: the verification overlapped with the writing.

The writer flushes the target (fdatasync) in steps (:func:`step_for`, at most
:data:`SYNC_EVERY`) and hands each flushed area over (:meth:`ReadBack.hand_over`); a
pipeline (:mod:`toolkit.blockio.pipeline`) reads them back with O_DIRECT in its own thread,
so the bytes come from the device, not from a cache, and its middle stage checks them
(a sink: nothing reaches a consumer but the unreadable and the end). Where the writer
waits (a slow source, a download), the reading costs nothing; where it does not, the
two disks work at once. :meth:`ReadBack.drain`, once the writer is done, reads what is
left; :meth:`ReadBack.stop` on every way out (the thread stops, the buffers are freed).

Two checks on it:

* :class:`RegionReadBack` (a restore): the target from byte 0 on, in order, hashed as the
  image was (its hash and BLAKE3 region digests,
  :class:`~toolkit.blockio.hashing.RegionHasher`), a held-back head standing in for the
  first bytes; compared at the end.
* :class:`PieceReadBack` (a copy): each piece the writer wrote, wherever it lies (a
  domain, a resumed copy, the pieces around bad sectors), against the BLAKE3 digest of
  the source's piece taken in the copy's pipeline
  (:class:`~toolkit.blockio.hashing.PieceHasher`), or zeros where zeros are expected;
  compared as it is read, the pieces read back recorded (:attr:`PieceCheck.checked`).

A failed read goes to ``on_error(pos, n, error)`` first (the verification's hook,
:mod:`toolkit.blockio.verify`: an outage waited out, the same chunk read again).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import blake3

from toolkit.blockio.hashing import (
    REGION_DIGEST,
    HashStage,
    RegionHasher,
    SourceDigest,
    Walk,
    finish_digest,
    new_hasher,
)
from toolkit.blockio.pipeline import BAD, DATA, END, Item, MiB, Pipeline
from toolkit.blockio.reader import DeviceReader
from toolkit.blockio.verify import OnError, Stopped, VerifyOutcome, asking, compare_regions
from toolkit.jobs.progress import Reporter

SYNC_EVERY = 256 * MiB  # flush at least this often, and read back what was flushed
MIN_STEP = 64 * MiB  # a flush costs a device cache flush: not more often than this


def step_for(size: int, chunk: int) -> int:
    """How much to write between two flushes: a 32nd of ``size`` (what is left to read
    back once the writer is done is at most that), from :data:`MIN_STEP` (or 4 chunks)
    to :data:`SYNC_EVERY`, in whole chunks."""
    step = max(MIN_STEP, 4 * chunk, min(SYNC_EVERY, size // 32))
    return -(-step // chunk) * chunk


class Cancelled(Exception):
    """The job was cancelled while the rest was read back."""


class ReadBack:
    """The reading itself: ``fd`` read back in ``chunk`` pieces, area by area as they are
    handed over, each item given to ``check`` in the pipeline's middle thread."""

    def __init__(self, fd: int, chunk: int, check: Callable[[Item], Item | None], *,
                 on_error: OnError | None = None, buffers: int = 2,
                 names: tuple[str, str] = ("rtk-read-back", "rtk-read-back-hash")):
        self.cond = threading.Condition()
        self.areas: deque[tuple[int, int]] = deque()
        self.final = self.stopped = False
        self.handed = 0  # bytes handed over
        self.t0 = time.monotonic()
        self.reader = DeviceReader(fd, self._areas(), chunk, on_error=on_error)
        self.pipe = Pipeline(self.reader, chunk=chunk, buffers=buffers, stage=check,
                             names=names)

    def _areas(self) -> Iterable[tuple[int, int]]:
        """The areas handed over, each once it is; the end once :meth:`drain` says so."""
        while True:
            with self.cond:
                while not self.stopped and not self.areas and not self.final:
                    self.cond.wait()
                if self.stopped or not self.areas:
                    return
                area = self.areas.popleft()
            yield area

    def start(self) -> None:
        self.pipe.start()

    def retarget(self, fd: int) -> None:
        """Read from ``fd`` from the next chunk on (the target reopened after an outage)."""
        self.reader.fd = fd

    def hand_over(self, pos: int, n: int) -> None:
        """``n`` bytes at ``pos`` are written and flushed: to read back."""
        if n <= 0:
            return
        with self.cond:
            self.areas.append((pos, n))
            self.handed += n
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()
        self.pipe.close()

    def drain(self, reporter: Reporter, cancel: threading.Event, done: Callable[[], int]
              ) -> str | None:
        """Once nothing more is handed over: read the rest. ``done()``: the progress count.
        Returns the first read error (None: all read); raises :class:`Cancelled` on
        ``cancel``, and a failure of the reading or checking (a bug, memory) as it is."""
        with self.cond:
            self.final = True
            self.cond.notify()
        error = None
        while True:
            if cancel.is_set():
                self.stop()
                raise Cancelled("cancelled")
            item = self.pipe.get(timeout=0.25)
            reporter.update(done())
            if item is not None and item[0] == END:
                break
            if item is not None and item[0] == BAD:
                error = error or f"cannot read the target back: {item[3]}"
        self.stop()
        reporter.update(done(), force=True)
        return error


# --- a restore: the target in order, against the image's region digests --------------------

class RegionReadBack(ReadBack):
    """A restore's read-back: what the writer flushed from byte 0 on (:meth:`advance`),
    hashed as the image was hashed, ``head`` standing in for the target's first bytes
    (still zeros there: written last, and read back then)."""

    def __init__(self, fd: int, size: int, algorithm: str, region_size: int, head: bytes,
                 chunk: int, *, on_error: OnError | None = None):
        self.head = head
        self.hasher = RegionHasher(algorithm, size, region_size)
        self.hasher.update(0, memoryview(head))
        self.synced = len(head)  # handed over up to here
        self.while_writing = 0  # bytes read back before the writer finished
        super().__init__(fd, chunk, HashStage(self.hasher, sink=True), on_error=on_error)

    def advance(self, synced: int) -> None:
        """Everything up to byte ``synced`` is written and flushed."""
        if synced > self.synced:
            self.hand_over(self.synced, synced - self.synced)
            self.synced = synced

    def finish(self, digest: SourceDigest, reporter: Reporter, cancel: threading.Event
               ) -> VerifyOutcome:
        """Read what is left (up to ``digest.size``, all of it flushed now) and compare.
        Raises :class:`Cancelled`, and a failure of the reading or hashing as it is."""
        self.advance(digest.size)
        done = self.hasher.pos
        self.while_writing = done if done > len(self.head) else 0
        reporter.start("verify", digest.size, done)
        error = self.drain(reporter, cancel, lambda: self.hasher.pos)
        out = VerifyOutcome(match=False, method="read back target", source_hash=digest.hexdigest,
                            error=error, seconds=time.monotonic() - self.t0,
                            read_back_bytes=self.hasher.pos - len(self.head),
                            read_while_writing=self.while_writing)
        if error or self.hasher.pos != digest.size:
            out.error = out.error or "the target was not read back in full"
            return out
        got = finish_digest(self.hasher, digest.size)
        out.target_hash = got.hexdigest
        compare_regions(out, got.regions, digest, 0, len(digest.regions) // REGION_DIGEST)
        out.match = out.differing_regions == 0 and got.hexdigest == digest.hexdigest
        return out


# --- a copy: each piece written, against the source's piece --------------------------------

class PieceCheck:
    """The middle stage of a copy's read-back: each piece read back against what was
    expected there (``expected``: ``(pos, n, digest)`` in the order handed over; digest
    None: zeros). ``checked``: the ranges read back and compared (merged); ``differing``,
    ``first``: the pieces that differ, the first of them ``(pos, n)``. With ``algorithm``
    and ``ranges``, the target's hash of them in order too (:attr:`target_hash`)."""

    def __init__(self, chunk: int, algorithm: str | None = None,
                 ranges: Iterable[tuple[int, int]] | None = None):
        self.expected: deque[tuple[int, int, bytes | None]] = deque()
        self.zeros = bytes(chunk)
        self.checked: list[tuple[int, int]] = []
        self.read = 0  # bytes read back and checked
        self.differing = 0
        self.first: tuple[int, int] | None = None
        self._now: list = []  # the piece being checked: [pos, end, digest, hasher, same]
        self.stream = new_hasher(algorithm) if algorithm and ranges is not None else None
        self.walk = Walk(ranges or [])

    def _piece(self, pos: int) -> list:
        while not self._now or pos >= self._now[1]:
            p, n, digest = self.expected.popleft()  # handed over before it was read
            self._now = [p, p + n, digest, blake3.blake3() if digest else None, True]
        return self._now

    def _differs(self, pos: int, n: int) -> None:
        self.differing += 1
        if self.first is None:
            self.first = (pos, n)

    def __call__(self, item: Item) -> Item | None:
        kind, pos, n, buf = item
        if kind != DATA:
            return item  # unreadable: to the consumer
        view = buf.view[:n]
        if self.stream is not None and self.walk.follows(pos, n):
            self.stream.update(view)
        piece = self._piece(pos)
        start, end, digest, h = piece[:4]
        if digest is None:  # zeros expected
            if not buf.is_zero(n, self.zeros):
                self._differs(pos, n)
        else:
            h.update(view)
            if pos + n == end and h.digest(length=REGION_DIGEST) != digest:
                self._differs(start, end - start)
        if pos + n == end or digest is None:
            a = start if digest is not None else pos
            if self.checked and sum(self.checked[-1]) == a:
                self.checked[-1] = (self.checked[-1][0], pos + n - self.checked[-1][0])
            else:
                self.checked.append((a, pos + n - a))
        self.read += n
        return None

    @property
    def target_hash(self) -> str | None:
        return self.stream.hexdigest() if self.stream is not None and self.walk.complete \
            else None


class PieceReadBack(ReadBack):
    """A copy's read-back: :meth:`hand_over` takes each piece with its source digest."""

    def __init__(self, fd: int, chunk: int, *, algorithm: str | None = None,
                 ranges: Iterable[tuple[int, int]] | None = None,
                 on_error: OnError | None = None):
        self.check = PieceCheck(chunk, algorithm, ranges)
        super().__init__(fd, chunk, self.check, on_error=asking(on_error),
                         names=("rtk-read-back", "rtk-read-back-check"))

    def hand_over(self, pos: int, n: int, digest: bytes | None = None) -> None:  # type: ignore[override]
        """The piece at ``pos`` (written and flushed) and its source digest (None: zeros
        expected there)."""
        if n > 0:
            self.check.expected.append((pos, n, digest))  # before its reading can start
            super().hand_over(pos, n)

    def finish(self, reporter: Reporter, cancel: threading.Event, total: int
               ) -> VerifyOutcome:
        """Read back the rest of what was handed over; the outcome of all of it (its
        ``read_back_bytes``; the ranges: :attr:`PieceCheck.checked`). ``total``: what the
        verification covers in all (the progress's total)."""
        c = self.check
        out = VerifyOutcome(match=False, method="read back target",
                            read_while_writing=c.read)
        reporter.start("verify", total, c.read)
        try:
            out.error = self.drain(reporter, cancel, lambda: c.read)
        except Cancelled:
            out.error = "cancelled"
        except Stopped as e:  # an outage past its limit: no verdict on the bytes
            out.error = str(e)
        except Exception as e:  # noqa: BLE001 - the verification did not finish: a failure
            out.error = f"{type(e).__name__}: {e}"
        if not out.error and c.read < self.handed:
            out.error = "the target was not read back in full"
        out.read_back_bytes = c.read
        out.differing_regions = c.differing
        if c.first:
            out.first_difference = {"start": c.first[0], "end": sum(c.first)}
        out.match = not out.error and not c.differing
        out.target_hash = c.target_hash if out.match else None
        out.seconds = time.monotonic() - self.t0
        return out


__all__ = ["MIN_STEP", "SYNC_EVERY", "Cancelled", "PieceCheck", "PieceReadBack", "ReadBack",
           "RegionReadBack", "step_for"]
