"""What a copy covers (:class:`Scope`): the whole source, or a domain
(:class:`toolkit.copy.usedblocks.Domain`: the partition table areas, the used blocks of
the filesystems a tool vouches for, everything else in full), and what becomes of the
target's blocks outside it (:class:`FreeBlocks`, a mixin of
:class:`toolkit.copy.engine._Copier`): freed so that they read back zeros where the target
guarantees that (:mod:`toolkit.blockio.zeroing`), else left as they were.

Only the scope's ranges are read, written and verified; the mapfile tiles the whole
source as ever, the blocks outside the scope staying non-tried (``?``), and is bound to
the domain by its digest (:mod:`toolkit.copy.binding`).
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.blockio import zeroing
from toolkit.blockio.ranges import intersect, merge, subtract, total
from toolkit.disks import transport
from toolkit.errors import Refused
from toolkit.units import human_size

GiB = 1 << 30
DISCARDED = "discarded, the target reads back zeros"
LEFT = "left as they were on the target (not copied, not verified)"


@dataclass
class Scope:
    """The bytes of the source a copy covers: ``ranges`` (sorted, disjoint), all of
    ``[0, size)`` without a domain."""

    size: int
    ranges: list[tuple[int, int]]
    domain: Any = None  # a toolkit.copy.usedblocks.Domain

    @classmethod
    def of(cls, domain, size: int, sector: int) -> Scope:
        """The scope of a copy of ``size`` bytes (``sector``-byte sectors) limited to
        ``domain`` (None: the whole source); :class:`Refused`, in words, for a domain that
        does not fit this source."""
        if domain is None:
            return cls(size, [(0, size)] if size else [])
        what = f"the domain to copy ({domain.summary()})"
        if domain.size != size:
            raise Refused(f"{what} was worked out for a source of {domain.size} bytes; this "
                          f"source has {size} bytes: it is another disk's")
        if domain.sector_size != sector:
            raise Refused(f"{what} counts {domain.sector_size}-byte sectors; this source has "
                          f"{sector}-byte sectors")
        end = 0
        for pos, n in domain.ranges:
            if pos < end or n <= 0 or pos + n > size or pos % sector or n % sector:
                raise Refused(f"{what} is not usable: its range at byte {pos} ({n} bytes) is "
                              "out of order, overlapping, outside the source or not on a "
                              "sector boundary")
            end = pos + n
        return cls(size, merge(domain.ranges), domain)

    @property
    def bytes(self) -> int:
        return total(self.ranges)

    def summary(self) -> str:
        """``used blocks of 2 NTFS partitions and everything else: 118 MB of 49.87 GB``;
        without a domain ``the whole source: 49.9 GB``."""
        if self.domain is None:
            return f"the whole source: {human_size(self.size)}"
        return self.domain.summary()

    def digest(self) -> str | None:
        return self.domain.digest() if self.domain is not None else None

    def within(self, ranges) -> list[tuple[int, int]]:
        """The parts of ``ranges`` inside the scope."""
        return merge(ranges) if self.domain is None else intersect(ranges, self.ranges)

    def free(self) -> list[tuple[int, int]]:
        """The source's bytes outside the scope (the target's there are not copied)."""
        return subtract([(0, self.size)], self.ranges)

    def record(self) -> dict | None:
        """The domain for the report and the result (None: the whole source)."""
        if self.domain is None:
            return None
        data = dict(self.domain.as_dict())
        data.update(summary=self.summary(), digest=self.digest(), bytes=self.bytes,
                    size=self.size, range_count=len(self.ranges))
        data.pop("ranges", None)  # the mapfile holds the state; the report stays short
        return data


def domain_of(meta: dict) -> dict | None:
    """The ``domain`` line of a mapfile's rtk lines, read (None: none, or unreadable)."""
    try:
        d = json.loads(meta["domain"])
        return d if isinstance(d, dict) and {"digest", "bytes", "summary"} <= d.keys() else None
    except (KeyError, ValueError, TypeError):
        return None


def domain_problem(path: str, meta: dict, domain) -> str | None:
    """Why the mapfile at ``path`` (its rtk lines ``meta``) is not of a copy of ``domain``
    (None: the whole source), or None when it is."""
    then, line = domain_of(meta), meta.get("domain")
    want = domain.digest() if domain is not None else None
    if (then["digest"] if then else None) == want and (then or not line):
        return None
    was = (f"a copy of {then['summary']} (domain {then['digest'][:16]})" if then else
           "a copy with a domain line that cannot be read" if line else
           "a copy of the whole source")
    now = (f"a copy of {domain.summary()} (domain {want[:16]})" if domain is not None
           else "a copy of the whole source")
    return (f"it was written for {was}, this is {now}: what it records as copied is not "
            "taken for this one")


class FreeBlocks:
    """The target's blocks outside a domain, after the copy (state: the copier's)."""

    def free_blocks(self, result) -> None:
        """Free them where the target reads back zeros afterwards (``CopyOptions.free_blocks``
        "auto"), else leave them; ``result.free_blocks`` says which (``action``
        "discarded", "left", "partly discarded")."""
        scope = self.scope
        if scope.domain is None:
            return
        free = scope.free()
        n = total(free)
        how = None
        if n and self.opts.free_blocks == "auto":
            how = zeroing.frees_to_zeros(self.plan.target.node, self.sys_block())
        record = {"action": "left", "bytes": n, "how": None, "text": LEFT}
        result.free_blocks = record
        if not n:
            record.update(text="none: the domain is the whole source")
            return
        if how is None:
            record["how"] = ("not asked for" if self.opts.free_blocks != "auto" else
                             "the target is not known to read back zeros once freed")
            return
        done, error = self._punch(free, n)
        if error is None:
            record.update(action="discarded", how=how, text=DISCARDED)
        elif not done:
            record.update(how="cancelled before the free blocks were freed: left as they were"
                          if error == "cancelled" else f"the target refused to free them: {error}")
        else:
            record.update(action="partly discarded", how=how, text=(
                f"{human_size(done)} of {human_size(n)} discarded (reading back zeros), "
                f"then {error}: the rest left as they were on the target (not copied, "
                "not verified)"))
        record["discarded_bytes"] = done

    def _punch(self, free, n: int) -> tuple[int, str | None]:
        """Free ``free`` (``n`` bytes) in pieces of at most 1 GiB, then flush; ``(bytes
        freed, why it stopped)``. An outage is waited out (:meth:`punch_piece`)."""
        self.reporter.start("discard", n)
        done, at = 0, free[0][0]
        try:
            for pos, size in free:
                for at in range(pos, pos + size, GiB):
                    if self.cancel.is_set():
                        return done, "cancelled"
                    m = min(GiB, pos + size - at)
                    self.punch_piece(at, m)
                    done += m
                    self.reporter.update(done)
            self.sync_target()
        except OSError as e:
            why = ("the device does not offer it" if e.errno == errno.EOPNOTSUPP
                   else e.strerror or str(e))
            return done, f"freeing failed at byte {at}: {why}"
        except transport.Outage as e:  # the copy is done: only the freeing stops
            return done, f"freeing stopped at byte {at}: {e}"
        finally:
            self.reporter.update(done, force=True)
        return done, None

    def sys_block(self) -> Path:
        return Path(self.opts.sys_root) / "class" / "block"


