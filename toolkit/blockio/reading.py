"""Reading and hashing block devices: the threads of the copy and verify pipelines.

A :class:`Reader` thread reads chunks with O_DIRECT into a pool of aligned
buffers (:func:`buffer_pool`) and queues them; a :class:`Hasher` thread can
sit between it and the consumer, feeding a :class:`RegionHasher` (a
whole-stream hash plus one short BLAKE3 digest per region).
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterable

import blake3

from toolkit.blockio import blockdev
from toolkit.copy.result import SourceDigest

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_CHUNK = 8 * MiB
ALGORITHMS = ("blake3", "sha256")
REGION_DIGEST = 16  # bytes of BLAKE3 per region
MAX_REGIONS = 1 << 20  # so region digests stay under 16 MiB whatever the disk size


def _blake3():
    """BLAKE3 using every core for large updates (the same digest as one thread)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def new_hasher(algorithm: str):
    if algorithm == "blake3":
        return _blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown hash algorithm {algorithm!r} (use one of {', '.join(ALGORITHMS)})")


class RegionHasher:
    """The whole-stream hash plus one short BLAKE3 digest per region, fed in order."""

    def __init__(self, algorithm: str, size: int, region_size: int):
        self.algorithm, self.size, self.region_size = algorithm, size, region_size
        self.stream = new_hasher(algorithm)
        self.region = _blake3()
        self.regions = bytearray(REGION_DIGEST * -(-size // region_size)) if size else b""
        self.pos = 0

    def update(self, pos: int, view: memoryview) -> bool:
        """Add the bytes at ``pos``; False (and nothing added) unless ``pos`` continues."""
        if pos != self.pos:
            return False
        self.stream.update(view)
        off = 0
        while off < len(view):
            boundary = (self.pos // self.region_size + 1) * self.region_size
            take = min(len(view) - off, boundary - self.pos)
            self.region.update(view[off:off + take])
            off += take
            self.pos += take
            if self.pos == boundary or self.pos == self.size:
                i = (self.pos - 1) // self.region_size
                self.regions[i * REGION_DIGEST:(i + 1) * REGION_DIGEST] = \
                    self.region.digest(length=REGION_DIGEST)
                self.region = _blake3()
        return True

    def digest(self) -> SourceDigest | None:
        if self.pos != self.size:
            return None
        return SourceDigest(self.algorithm, self.stream.hexdigest(), self.size,
                            self.region_size, bytes(self.regions))


def region_size_for(size: int, chunk: int) -> int:
    """A multiple of ``chunk`` giving at most :data:`MAX_REGIONS` regions."""
    chunks = -(-size // chunk) if size else 1
    return chunk * -(-chunks // MAX_REGIONS)


class _Throttle:
    def __init__(self, max_rate: float | None, stop: threading.Event):
        self.max_rate, self.stop = max_rate, stop
        self.t0, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        if not self.max_rate:
            return
        self.bytes += n
        delay = self.t0 + self.bytes / self.max_rate - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


class RangeSet:
    """Sorted, non-overlapping ``(start, length)`` ranges, looked up by position."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()):
        self.ranges = sorted((p, n) for p, n in ranges if n > 0)
        self.starts = [p for p, _n in self.ranges]

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def covers(self, pos: int, n: int) -> int:
        """The end of the range holding all of ``[pos, pos+n)``, or 0 if none does."""
        i = bisect.bisect_right(self.starts, pos) - 1
        end = sum(self.ranges[i]) if i >= 0 else 0
        return end if end >= pos + n else 0

    def within(self, pos: int, n: int) -> list[tuple[int, int]]:
        """The ranges that meet ``[pos, pos+n)``."""
        i = max(0, bisect.bisect_right(self.starts, pos) - 1)
        j = bisect.bisect_left(self.starts, pos + n)
        return [r for r in self.ranges[i:j] if sum(r) > pos]


def gaps(ranges: Iterable[tuple[int, int]], pos: int, n: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` pieces of ``[pos, pos+n)`` outside ``ranges`` (sorted by
    start; they may overlap)."""
    parts, cur = [], pos
    for rp, rs in ranges:
        if rp > cur:
            parts.append((cur, min(rp, pos + n)))
        cur = max(cur, rp + rs)
        if cur >= pos + n:
            break
    if cur < pos + n:
        parts.append((cur, pos + n))
    return [(a, b) for a, b in parts if b > a]


def _read_holes(fd: int, buf: blockdev.AlignedBuffer, pos: int, n: int,
                holes: list[tuple[int, int]]) -> None:
    """Read ``n`` bytes at ``pos``, zeros instead of reading inside ``holes`` (sorted)."""
    cur = pos
    for a, b in gaps(holes, pos, n):
        buf.zero(cur - pos, a - cur)
        blockdev.read_exact(fd, buf.view[a - pos:b - pos], a)
        cur = b
    buf.zero(cur - pos, pos + n - cur)


class Reader(threading.Thread):
    """Reads chunks into free buffers and queues ``(kind, pos, n, payload)`` items:
    ("data", pos, n, buffer), ("bad", pos, n, error text), then ("end", ...).

    With ``skip_errors`` a failed chunk is reported and the reader skips ahead
    (ddrescue style, the skipped part is left for a later pass); otherwise it stops.
    ``holes`` are read as zeros (unreadable ranges already given up on);
    ``unallocated`` too (:mod:`toolkit.allocation`), and where a chunk lies
    wholly in one, the rest of that range (within the area) is not read at
    all: one ("zero", pos, n, buffer) item, ``n`` possibly many chunks, the
    buffer's content undefined. ``unread`` counts those bytes.
    """

    def __init__(self, fd: int, ranges: Iterable[tuple[int, int]], chunk: int,
                 free: queue.Queue, out: queue.Queue, stop: threading.Event, *,
                 skip_errors: bool = False, max_skip: int = 0, holes=(),
                 unallocated=(), max_rate: float | None = None):
        super().__init__(daemon=True, name="rtk-reader")
        self.fd, self.ranges, self.chunk = fd, ranges, chunk
        self.free, self.out, self.stop = free, out, stop
        self.skip_errors, self.max_skip = skip_errors, max_skip
        self.holes = RangeSet(holes)
        self.unallocated = RangeSet(unallocated)
        self.unread = 0
        self.throttle = _Throttle(max_rate, stop)
        self.crash: BaseException | None = None

    def _read(self, buf: blockdev.AlignedBuffer, pos: int, n: int, end: int
              ) -> tuple[str, int]:
        """Fill ``buf`` with the ``n`` bytes at ``pos`` (or, in an unallocated range,
        skip up to its end, at most ``end``); the item's kind and length."""
        hole_end = self.unallocated.covers(pos, n)
        if hole_end:
            n = min(hole_end, end) - pos
            self.unread += n
            return "zero", n
        skip = self.holes.within(pos, n) + self.unallocated.within(pos, n)
        if skip:
            _read_holes(self.fd, buf, pos, n, sorted(skip))
        else:
            blockdev.read_exact(self.fd, buf.view[:n], pos)
        return "data", n

    def run(self) -> None:
        try:
            skip = 0
            for area_pos, area_size in self.ranges:
                pos, end = area_pos, area_pos + area_size
                while pos < end and not self.stop.is_set():
                    n = min(self.chunk, end - pos)
                    buf = self.free.get()
                    try:
                        kind, n = self._read(buf, pos, n, end)
                    except OSError as e:
                        self.free.put(buf)
                        self.out.put(("bad", pos, n, f"{os.strerror(e.errno or errno.EIO)} "
                                                     f"at {e.filename or pos}"))
                        if not self.skip_errors:
                            return
                        pos += n
                        if self.max_skip:
                            skip = min(max(self.chunk, 2 * skip), self.max_skip)
                            pos = min(end, pos + skip)
                        continue
                    skip = 0
                    self.out.put((kind, pos, n, buf))
                    pos += n
                    if kind == "data":
                        self.throttle.add(n)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.crash = e
        finally:
            self.out.put(("end", 0, 0, None))


class Hasher(threading.Thread):
    """Between reader and writer: feeds data items to a :class:`RegionHasher` (if any)
    and, given ``zeros``, turns all-zero data items into ("zero", pos, n, buffer)
    items, so that neither the hash nor the zero check holds up the writer.
    The reader's own "zero" items (needs ``zeros``) are hashed as zeros.

    Should the hashing itself fail (``crash``: a bug, memory), every later item
    still passes through unhashed, so the writer never waits for an item that
    will not come; the consumer then raises ``crash`` (the hash is lost)."""

    def __init__(self, hasher: RegionHasher | None, inq: queue.Queue, out: queue.Queue,
                 zeros: bytes | None = None):
        super().__init__(daemon=True, name="rtk-hasher")
        self.hasher, self.inq, self.out, self.zeros = hasher, inq, out, zeros
        self.valid = hasher is not None
        self.crash: BaseException | None = None

    def run(self) -> None:
        while True:
            item = self.inq.get()
            if self.crash is None:
                try:
                    item = self._process(item)
                except BaseException as e:  # noqa: BLE001 - handed to the consumer
                    self.crash, self.valid = e, False
            self.out.put(item)
            if item[0] == "end":
                return

    def _process(self, item: tuple) -> tuple:
        kind, pos, n, buf = item
        if kind == "data":
            if self.valid:
                self.valid = self.hasher.update(pos, buf.view[:n])
            if self.zeros is not None and buf.is_zero(n, self.zeros):
                return ("zero", pos, n, buf)
        elif kind == "zero":  # not read: the source holds no data there
            zeros = memoryview(self.zeros)
            for off in range(0, n, len(zeros)):
                if self.valid:
                    self.valid = self.hasher.update(pos + off, zeros[:min(len(zeros), n - off)])
        elif kind == "bad":
            self.valid = False
        return item


def buffer_pool(count: int, size: int) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    for _ in range(count):
        q.put(blockdev.AlignedBuffer(size))
    return q


def close_pool(q: queue.Queue) -> None:
    while not q.empty():
        q.get_nowait().close()
