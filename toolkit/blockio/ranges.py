"""Byte ranges: :class:`RangeSet` (looked up by position) and :func:`gaps` between ranges."""

from __future__ import annotations

import bisect
from collections.abc import Iterable


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
