"""Which bytes of a SOURCE a used-blocks copy must copy: its :class:`Domain`.

The domain is everything EXCEPT the free blocks that a tool vouches for: for each
partition of the source (read from the source itself by libblkid, ``partx``, not from the
kernel), or for a filesystem that fills the whole source, partclone's allocation map
(:mod:`toolkit.copy.partclone`) says which blocks are free. Everything else is copied in
full: the partition table areas, the space between and after the partitions, extended
partitions' boot records, every partition whose type is not one made for exactly one
filesystem (:mod:`toolkit.copy.parttypes`: a dynamic disk's, LVM's, RAID's), whose
filesystem is unknown, not mapped here, encrypted (BitLocker, LUKS), ReFS, swap,
mounted or held (through any alias: :mod:`toolkit.copy.source_use`), whose journal is not clean
(:mod:`toolkit.system.fsstate`: a snapshot of a live volume), or whose tool fails or refuses
(a dirty NTFS), with the reason in the part's ``note``; the first MiB of every mapped
filesystem (boot code that no map need vouch for); and the part of a partition after its
filesystem's end (NTFS's backup boot sector). A failure here never fails a copy: what
could not be mapped is copied in full.

Every tool runs on a read-only loop device over the filesystem's byte range
(:mod:`toolkit.system.loopdev`): nothing can write to the source. :func:`used_domain`
computes the domain; :func:`recognised` (cheap: no map is made) says which partitions a
tool would vouch for, for the menu's recommendation.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass

from toolkit.copy import partclone, parttypes, source_use
from toolkit.disks.endpoint import Endpoint
from toolkit.system import blkid, fsstate, loopdev, partx, tools
from toolkit.units import human_size

log = logging.getLogger("toolkit.copy.usedblocks")

HEAD = 1 << 20  # the first MiB of every mapped filesystem is copied whole
CONTAINERS = {"5", "f", "85"}  # MBR extended partitions: their logical ones are listed too
NAMES = {"ntfs": "NTFS", "vfat": "FAT", "xfs": "XFS"}
FULL = {  # blkid TYPE -> why it is copied in full
    "bitlocker": "BitLocker: encrypted, copied in full",
    "crypto_luks": "LUKS: encrypted, copied in full",
    "refs": "ReFS: no tool maps it, copied in full",
    "swap": "swap: copied in full",
}
SIGNATURES = {b"-FVE-FS-": "BitLocker", b"ReFS\0\0\0\0": "ReFS"}  # the OEM field at byte 3


@dataclass(frozen=True)
class DomainPart:
    number: int | None  # partition number; None for a whole disk holding a filesystem, or a gap
    start: int  # byte offset on the source
    size: int  # bytes
    fstype: str | None  # blkid's TYPE
    label: str | None
    tool: str | None  # "partclone.ntfs" when a map was used; None when copied in full
    used: int  # bytes of this part inside the domain
    note: str  # why in full; "" when mapped


@dataclass
class Domain:
    size: int  # the source's size in bytes
    sector_size: int
    ranges: list[tuple[int, int]]  # (pos, length): sorted, disjoint, merged, sector-aligned
    parts: list[DomainPart]

    def bytes(self) -> int:
        return sum(length for _pos, length in self.ranges)

    def mapped(self) -> list[DomainPart]:
        return [p for p in self.parts if p.tool]

    def summary(self) -> str:
        """``used blocks of 2 NTFS partitions and everything else: 118.0 MB of 49.9 GB``."""
        mapped = self.mapped()
        sizes = f"{human_size(self.bytes())} of {human_size(self.size)}"
        if not mapped:
            return f"everything (no filesystem mapped): {sizes}"
        if len(mapped) == 1 and mapped[0].number is None:
            what = f"the {_name(mapped[0].fstype)} filesystem"
        else:
            counts = Counter(_name(p.fstype) for p in mapped)
            n = len(mapped)
            what = (f"{n} {next(iter(counts))} partition{'s' if n > 1 else ''}"
                    if len(counts) == 1 else f"{n} partitions ("
                    + ", ".join(f"{k} {t}" for t, k in counts.items()) + ")")
        rest = " and everything else" if self.bytes() > sum(p.used for p in mapped) else ""
        return f"used blocks of {what}{rest}: {sizes}"

    def digest(self) -> str:
        """SHA-256 of the size and the ranges: binds a mapfile or a report to this domain."""
        h = hashlib.sha256(f"rtk-domain-1 {self.size}\n".encode())
        for pos, length in self.ranges:
            h.update(f"{pos} {length}\n".encode())
        return h.hexdigest()

    def as_dict(self) -> dict:
        return {"size": self.size, "sector_size": self.sector_size, "bytes": self.bytes(),
                "summary": self.summary(), "digest": self.digest(),
                "ranges": [list(r) for r in self.ranges],
                "parts": [asdict(p) for p in self.parts]}

    @classmethod
    def from_dict(cls, d: dict) -> Domain:
        return cls(int(d["size"]), int(d["sector_size"]),
                   [(int(p), int(n)) for p, n in d["ranges"]],
                   [DomainPart(**p) for p in d.get("parts", [])])

    @classmethod
    def full(cls, size: int, sector_size: int, note: str) -> Domain:
        """Everything, for ``note``'s reason."""
        part = DomainPart(None, 0, size, None, None, None, size, note)
        return cls(size, sector_size, [(0, size)] if size else [], [part])


def _name(fstype: str | None) -> str:
    return NAMES.get(fstype or "", fstype or "?")


# --- ranges ----------------------------------------------------------------------------------

def merge(ranges) -> list[tuple[int, int]]:
    """Sorted, overlapping or adjacent ranges joined, empty ones dropped."""
    out: list[tuple[int, int]] = []
    for pos, length in sorted(r for r in ranges if r[1] > 0):
        if out and pos <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], pos + length)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((pos, length))
    return out


def complement(holes, size: int) -> list[tuple[int, int]]:
    """``[0, size)`` without ``holes``."""
    out, at = [], 0
    for pos, length in merge(holes):
        if pos > at:
            out.append((at, min(pos, size) - at))
        at = max(at, pos + length)
        if at >= size:
            break
    if at < size:
        out.append((at, size - at))
    return [r for r in out if r[1] > 0]


def shrink(ranges, sector: int) -> list[tuple[int, int]]:
    """Each range cut to whole sectors (free ranges shrink: the domain grows outwards)."""
    out = []
    for pos, length in ranges:
        a, b = -(-pos // sector) * sector, (pos + length) // sector * sector
        if b > a:
            out.append((a, b - a))
    return out


def covered(ranges: list[tuple[int, int]], start: int, end: int) -> int:
    """Bytes of the sorted, disjoint ``ranges`` inside ``[start, end)``."""
    i = max(bisect.bisect_right(ranges, (start, float("inf"))) - 1, 0)
    total = 0
    for pos, length in ranges[i:]:
        if pos >= end:
            break
        total += max(0, min(end, pos + length) - max(start, pos))
    return total


# --- the layout --------------------------------------------------------------------------------

@dataclass
class Slot:
    """A partition (or the whole source) as the table on the source says: bytes."""

    number: int | None
    start: int
    size: int
    container: bool = False
    problem: str = ""  # why it is copied in full whatever it holds


def slots_from_partx(rows: list[dict[str, str]], size: int, label: str) -> list[Slot]:
    """``partx -g -b -P -o NR,START,SIZE,TYPE`` rows (START in 512-byte units whatever the
    sector size, SIZE in bytes) -> the partitions, sorted; those past the source's end
    are cut there, overlapping ones marked to be copied in full."""
    slots = []
    for row in rows:
        start, length = int(row["START"]) * 512, int(row["SIZE"])
        if length <= 0 or start >= size:
            continue
        kind = row.get("TYPE", "").lower().removeprefix("0x")
        s = Slot(int(row["NR"]), start, min(length, size - start),
                 container=label == "dos" and kind in CONTAINERS)
        if start + length > size:
            s.problem = "extends past the end of the disk: copied in full"
        elif not s.container:
            s.problem = parttypes.problem(label, kind)
        slots.append(s)
    slots.sort(key=lambda s: s.start)
    plain = [s for s in slots if not s.container]
    for a in plain:
        for b in plain:
            if a is not b and a.start < b.start + b.size and b.start < a.start + a.size:
                a.problem = f"overlaps partition {b.number}: copied in full"
    return slots


def layout(source: Endpoint) -> tuple[list[Slot], str, str]:
    """(slots, label, problem): the source's partitions as its own table says (libblkid
    reading the disk: the kernel may know none of them), or the source itself when it
    holds a filesystem directly or is a partition; ``problem``: why all of it is copied
    in full (no table nor filesystem, both, a table with no partitions...)."""
    if source.is_partition:
        n = source.partition.number
        label = blkid.probe(source.disk.path).get("PTTYPE", "")
        kind = next((r.get("TYPE") for r in partx.partitions(source.disk.path, "NR,TYPE")
                     if r.get("NR") == str(n)), None)
        return [Slot(n, 0, source.size, problem=parttypes.problem(label, kind))], "", ""
    tags = blkid.probe(source.node)
    rows = partx.partitions(source.node, "NR,START,SIZE,TYPE")
    label, fstype = tags.get("PTTYPE", ""), tags.get("TYPE")
    if label and fstype or (rows and not label):
        return [], label, (f"ambiguous: {label or 'partitions'} and "
                           f"{fstype or 'no partition table type'} found: copied in full")
    if fstype:
        return [Slot(None, 0, source.size)], "", ""
    if not label:
        return [], "", "no partition table or filesystem recognised: copied in full"
    if not rows:
        return [], label, f"a {label} partition table with no partition read: copied in full"
    return slots_from_partx(rows, source.size, label), label, ""


def _busy(source: Endpoint, slot: Slot, in_use) -> str:
    """Why the filesystem in ``slot`` may change while it is copied ("" when it may not):
    the inventory's records, then ``in_use`` (:func:`toolkit.copy.source_use.finder`:
    a mount, swap or holder on any alias of its bytes)."""
    if source.is_partition:
        held = [source.partition]
    else:
        held = [source.disk, *(p for p in source.disk.partitions
                               if p.start < slot.start + slot.size
                               and slot.start < p.start + p.size)]
    for d in held:
        if d.mountpoints:
            return (f"mounted at {d.mountpoints[0]}: its allocation can change while it is "
                    "copied, copied in full")
        if d.swap or d.holders:
            return f"in use ({'swap' if d.swap else 'held by ' + ', '.join(d.holders)}): " \
                   "copied in full"
    other = in_use(slot.start, slot.size)
    return (f"in use through another device ({other}): its allocation can change while it "
            "is copied, copied in full") if other else ""


# --- the domain ------------------------------------------------------------------------------

def _probe(dev: str) -> tuple[str | None, str | None]:
    """(TYPE, LABEL) of the filesystem on ``dev``: blkid's, or BitLocker and ReFS by their
    signature at byte 3 (blkid recognises BitLocker only with its metadata intact)."""
    tags = blkid.probe(dev)
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        oem = os.pread(fd, 16, 0)[3:11]
    finally:
        os.close(fd)
    kind = SIGNATURES.get(oem)
    return (kind or tags.get("TYPE")), tags.get("LABEL")


@contextlib.contextmanager
def _device(source: Endpoint, slot: Slot):
    with loopdev.read_only(source.node, slot.start, slot.size, source.sector_size) as dev:
        yield dev


def _why_full(fstype: str | None) -> str:
    if not fstype:
        return "unknown filesystem: copied in full"
    if fstype.lower() in FULL:
        return FULL[fstype.lower()]
    tool = partclone.TOOLS.get(fstype)
    if tool is None:
        return f"{fstype}: no tool here maps it, copied in full"
    if not tools.installed(tool):
        return f"{tool} is not installed (partclone): copied in full"
    return ""


def _map(source: Endpoint, slot: Slot, in_use) -> tuple[dict, list[tuple[int, int]]]:
    """The part's fields (all but ``used``) and the free ranges on the source that its
    filesystem's tool vouches for (none when it is copied in full)."""
    fields = {"number": slot.number, "start": slot.start, "size": slot.size, "fstype": None,
              "label": None, "tool": None, "note": ""}
    shown = f"partition {slot.number}" if slot.number is not None else source.node
    fsmap, tool = None, None
    try:
        with _device(source, slot) as dev:
            fstype, label = _probe(dev)
            fields.update(fstype=fstype, label=label)
            why = (slot.problem or _busy(source, slot, in_use) or _why_full(fields["fstype"])
                   or fsstate.unsettled(fields["fstype"], dev))
            if not why:
                tool = partclone.TOOLS[fields["fstype"]]
                fsmap = partclone.allocation_map(fields["fstype"], dev, shown=shown)
    except (OSError, ValueError) as e:
        why = str(e) if tool is None or str(e).startswith(tool) else f"{tool}: {e}"
    if fsmap is not None and fsmap.extent > slot.size:
        why = (f"its filesystem ({human_size(fsmap.extent)}) is larger than the partition "
               f"({human_size(slot.size)}): copied in full")
    if why:
        return {**fields, "note": why}, []
    free = [(slot.start + max(p, HEAD), p + n - max(p, HEAD)) for p, n in fsmap.free()
            if p + n > HEAD]
    return {**fields, "tool": tool}, free


def _gap_note(start: int, end: int, size: int, label: str) -> str:
    """What a stretch outside every partition is (only a partitioned source has one)."""
    if start == 0:
        return "partition table and the space before the first partition"
    if end == size:
        return "after the last partition" + (" (backup GPT)" if label == "gpt" else "")
    return "between partitions"


def _assemble(source: Endpoint, slots: list[Slot], label: str, sector: int) -> Domain:
    size = source.size
    fields, free = [], []
    in_use = source_use.finder(source)
    for slot in slots:
        if slot.container:
            fields.append({"number": slot.number, "start": slot.start, "size": slot.size,
                           "fstype": None, "label": None, "tool": None,
                           "note": "extended partition: its boot records are copied, its "
                                   "logical partitions are listed on their own"})
            continue
        f, fr = _map(source, slot, in_use)
        fields.append(f)
        free += fr
    ranges = complement(shrink(merge(free), sector), size)
    tops = merge((s.start, s.size) for s in slots)
    for pos, length in complement(tops, size):
        fields.append({"number": None, "start": pos, "size": length, "fstype": None,
                       "label": None, "tool": None,
                       "note": _gap_note(pos, pos + length, size, label)})
    parts = []
    for f in sorted(fields, key=lambda f: (f["start"], -f["size"])):
        used = covered(ranges, f["start"], f["start"] + f["size"])
        if f["note"].startswith("extended partition"):
            used -= sum(covered(ranges, s.start, s.start + s.size) for s in slots
                        if not s.container and f["start"] <= s.start < f["start"] + f["size"])
        parts.append(DomainPart(used=used, **f))
    return Domain(size, sector, ranges, parts)


def used_domain(source: Endpoint) -> Domain:
    """The bytes of ``source`` (a whole disk or a partition) that a used-blocks copy
    copies. Never raises for what is on the source: what cannot be mapped is in full."""
    sector = source.sector_size or 512
    try:
        slots, label, problem = layout(source)
        if problem:
            return Domain.full(source.size, sector, problem)
        return _assemble(source, slots, label, sector)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.info("used blocks of %s: copied in full: %s", source.node, e)
        return Domain.full(source.size, sector, f"layout unreadable ({e}): copied in full")


def recognised(source: Endpoint) -> list[str]:
    """The partitions (``["partition 2 (ntfs)"]``, or ``["the whole disk (ext4)"]``) whose
    free blocks a tool would vouch for; [] when none. No map is made: the tool may still
    refuse when :func:`used_domain` asks it."""
    try:
        slots, _label, problem = layout(source)
    except (OSError, ValueError, KeyError, TypeError):
        return []
    out = []
    in_use = source_use.finder(source) if slots and not problem else None
    for slot in [] if problem else slots:
        if slot.container or slot.problem or _busy(source, slot, in_use):
            continue
        try:
            with _device(source, slot) as dev:
                fstype = _probe(dev)[0]
                if _why_full(fstype) or fsstate.unsettled(fstype, dev):
                    continue
        except (OSError, ValueError):
            continue
        out.append(f"partition {slot.number} ({fstype})" if slot.number is not None
                   else f"the whole {'partition' if source.is_partition else 'disk'} "
                        f"({fstype})")
    return out
