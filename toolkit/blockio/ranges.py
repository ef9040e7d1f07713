"""Byte ranges: :class:`RangeSet` (looked up by position), :func:`gaps` between ranges, and
lists of ``(start, length)`` merged, intersected, subtracted, summed."""

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


Ranges = list[tuple[int, int]]


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """``ranges`` sorted, the touching and overlapping ones joined, the empty ones left out."""
    out: Ranges = []
    for p, n in sorted(r for r in ranges if r[1] > 0):
        if out and p <= out[-1][0] + out[-1][1]:
            q, m = out[-1]
            out[-1] = (q, max(q + m, p + n) - q)
        else:
            out.append((p, n))
    return out


def intersect(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> Ranges:
    """The bytes in both ``a`` and ``b`` (any order, overlaps allowed), merged."""
    a, b = merge(a), merge(b)
    out: Ranges = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][0] + a[i][1], b[j][0] + b[j][1])
        if hi > lo:
            out.append((lo, hi - lo))
        if a[i][0] + a[i][1] < b[j][0] + b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> Ranges:
    """The bytes of ``a`` not in ``b``, merged."""
    out: Ranges = []
    cut = RangeSet(merge(b))
    for p, n in merge(a):
        out += [(x, y - x) for x, y in gaps(cut.within(p, n), p, n)]
    return out


def total(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(n for _p, n in ranges)
