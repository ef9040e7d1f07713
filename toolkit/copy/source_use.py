"""Whether bytes of a SOURCE are in use through ANY alias, not just through the kernel's
own partitions of it that the inventory lists: a filesystem mounted read-write from a
loop device over the source's byte range (``losetup -o 1M --sizelimit 100M /dev/sdb``,
then ``mount`` of that loop device), a swap area or a held device on such an alias.

The write gate asks the same of a TARGET (:func:`toolkit.disks.decision.in_use_problems`:
"reaches a mounted filesystem through an alias"); here the question is the source's:
its allocation may change while it is copied, so a used-blocks copy may not trust a map
of it (:mod:`toolkit.copy.usedblocks`) and the plan warns (:mod:`toolkit.copy.plan`).
Resolution: :mod:`toolkit.disks.aliases`, from the kernel's records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from toolkit.disks import aliases, decision
from toolkit.disks.endpoint import Endpoint


def _slice(fp: aliases.Footprint, size: int, start: int, length: int) -> aliases.Footprint:
    """``fp`` (the source's, ``size`` bytes) cut to its bytes ``[start, start+length)``:
    a piece that maps the source one to one (a partition's disk, a loop device's backing
    device or file) is shifted; any other piece (the devices under a RAID or dm device, a
    file's filesystem) is kept whole: more of it may meet, never less."""
    out = aliases.Footprint(fp.given, rdev=fp.rdev, inode=fp.inode)
    for p in fp.pieces:
        if p.inside is None and p.end - p.start == size:
            p = dataclasses.replace(p, start=p.start + start, end=p.start + start + length)
        out.pieces.append(p)
    return out


def finder(source: Endpoint) -> Callable[[int, int], str]:
    """``in_use(start, length)``: what in use reaches bytes ``[start, start+length)`` of
    ``source`` and how (``/dev/loop3, mounted at /mnt: /dev/loop3 is a loop device over
    /dev/sdb at byte 1048576; both reach /dev/sdb (...)``), "" when nothing does. The
    devices in use are read once, at the first question."""
    seen: list = []

    def in_use(start: int, length: int) -> str:
        if not seen:
            seen.append(_reader(source))
        return seen[0](start, length)
    return in_use


def _reader(source: Endpoint) -> Callable[[int, int], str]:
    resolver = decision.resolver_for(source)
    try:
        ours = (resolver.device_footprint(source.rdev, source.node)
                if source.rdev is not None else resolver.footprint(source.path))
        used = []
        for u in decision.devices_in_use(resolver):
            try:
                used.append((u, resolver.footprint(u.path) if u.path
                             else resolver.device_footprint(u.rdev, u.what)))
            except (aliases.Unresolvable, OSError):
                continue
    except (aliases.Unresolvable, OSError) as e:
        why = f"what uses {source.node} cannot be told ({e})"
        return lambda start, length: why

    def in_use(start: int, length: int) -> str:
        mine = _slice(ours, source.size, start, length)
        for u, theirs in used:
            col = aliases.collision(mine, theirs, raw_only=True)
            if col is not None:
                return f"{u.what}: {col.words()}"
        return ""
    return in_use
