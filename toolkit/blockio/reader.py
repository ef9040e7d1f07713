"""The pipeline's reader of a device (:class:`DeviceReader`): O_DIRECT chunks, ranges
read as zeros or not at all, unreadable chunks reported and skipped, a rate limit.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable

from toolkit.blockio import blockdev
from toolkit.blockio.pipeline import BAD, DATA, ZERO, Feed
from toolkit.blockio.ranges import RangeSet, gaps


class _Throttle:
    def __init__(self, max_rate: float | None, stop: threading.Event):
        self.max_rate, self.stop = max_rate, stop
        self.t0, self.bytes = time.monotonic(), 0

    def restart(self) -> None:
        self.t0, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        if not self.max_rate:
            return
        self.bytes += n
        delay = self.t0 + self.bytes / self.max_rate - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


def _read_holes(fd: int, buf: blockdev.AlignedBuffer, pos: int, n: int,
                holes: list[tuple[int, int]]) -> None:
    """Read ``n`` bytes at ``pos``, zeros instead of reading inside ``holes`` (sorted)."""
    cur = pos
    for a, b in gaps(holes, pos, n):
        buf.zero(cur - pos, a - cur)
        blockdev.read_exact(fd, buf.view[a - pos:b - pos], a)
        cur = b
    buf.zero(cur - pos, pos + n - cur)


class DeviceReader:
    """The reader of a :class:`~toolkit.blockio.pipeline.Pipeline`: reads ``ranges`` of
    ``fd`` (any iterable of ``(start, length)``, consumed as it goes) in chunks and
    puts ("data", pos, n, buffer) items, or ("bad", pos, n, error text).

    With ``skip_errors`` a failed chunk is reported and the reader skips ahead
    (ddrescue style, the skipped part is left for a later pass); otherwise it stops.
    ``holes`` are read as zeros (unreadable ranges already given up on);
    ``unallocated`` too (:mod:`toolkit.blockio.allocation`), and where a chunk lies
    wholly in one, the rest of that range (within the area) is not read at
    all: one ("zero", pos, n, buffer) item, ``n`` possibly many chunks, the
    buffer's content undefined. ``unread`` counts those bytes.

    ``on_error(pos, n, error)``, when given, is asked first about every failed read
    (in the reader's thread): it returns the descriptor to read the same chunk again
    from (the path was down and is back, :mod:`toolkit.disks.transport`: an outage,
    not a bad sector; a device that came back under another name has a new one), or
    None (a media error: the chunk is reported unreadable as above). What it raises
    (the outage lasted too long) ends the reading: the consumer gets it after the
    items before, and the chunk is in no item.
    """

    def __init__(self, fd: int, ranges: Iterable[tuple[int, int]], chunk: int, *,
                 skip_errors: bool = False, max_skip: int = 0, holes=(),
                 unallocated=(), max_rate: float | None = None,
                 on_error: Callable[[int, int, OSError], int | None] | None = None):
        self.fd, self.ranges, self.chunk = fd, ranges, chunk
        self.skip_errors, self.max_skip, self.max_rate = skip_errors, max_skip, max_rate
        self.on_error = on_error
        self.holes = RangeSet(holes)
        self.unallocated = RangeSet(unallocated)
        self.unread = 0

    def _read(self, buf: blockdev.AlignedBuffer, pos: int, n: int, end: int
              ) -> tuple[str, int]:
        """Fill ``buf`` with the ``n`` bytes at ``pos`` (or, in an unallocated range,
        skip up to its end, at most ``end``); the item's kind and length."""
        hole_end = self.unallocated.covers(pos, n)
        if hole_end:
            n = min(hole_end, end) - pos
            self.unread += n
            return ZERO, n
        skip = self.holes.within(pos, n) + self.unallocated.within(pos, n)
        if skip:
            _read_holes(self.fd, buf, pos, n, sorted(skip))
        else:
            blockdev.read_exact(self.fd, buf.view[:n], pos)
        return DATA, n

    def __call__(self, feed: Feed) -> None:
        throttle = _Throttle(self.max_rate, feed.stop)
        skip = 0
        for area_pos, area_size in self.ranges:
            pos, end = area_pos, area_pos + area_size
            while pos < end and not feed.stopped:
                n = min(self.chunk, end - pos)
                buf = feed.buffer()
                try:
                    kind, n = self._read(buf, pos, n, end)
                except OSError as e:
                    feed.give_back(buf)
                    again = self.on_error(pos, n, e) if self.on_error else None
                    if again is not None:  # an outage waited out: the same chunk again
                        self.fd = again
                        throttle.restart()  # the time waited is no credit to read faster
                        continue
                    feed.put(BAD, pos, n, f"{os.strerror(e.errno or errno.EIO)} "
                                          f"at {e.filename or pos}")
                    if not self.skip_errors:
                        return
                    pos += n
                    if self.max_skip:
                        skip = min(max(self.chunk, 2 * skip), self.max_skip)
                        pos = min(end, pos + skip)
                    continue
                skip = 0
                feed.put(kind, pos, n, buf)
                pos += n
                if kind == DATA:
                    throttle.add(n)
