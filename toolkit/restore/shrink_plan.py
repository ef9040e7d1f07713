"""Planning a restore onto a disk smaller than the image: which partitions shrink, which
move, and whether the data fits at all.

:func:`plan_shrink` reads the image's partition table and, for each partition, what it
holds (blkid) and how small its filesystem can be made, from the field's own tools:
``ntfsresize --info`` ("You might resize at N bytes") for NTFS, ``resize2fs -P`` (its
estimated minimum, in blocks) for ext2/3/4. Everything is read through a read-only
FUSE export of the image (:mod:`toolkit.system.qsd`), for every format qemu-img knows.

The partitions keep their order, and the gaps between them unless the disk needs that
room too (then they are closed, the first partition staying where it is). The space
the disk lacks is taken from the shrinkable filesystems in proportion to their free
space (what each has beyond its minimum plus a margin, :data:`MARGIN` of it and at
least :data:`MIN_MARGIN`: a filesystem made exactly full would not start), so each
keeps a fair share of free room; the partitions after a shrunk one move towards the
disk's start. Other partitions (FAT, swap, XFS, encrypted, unknown) keep their size:
XFS cannot shrink, BitLocker and LUKS are never resized, an NTFS that is hibernated,
marked dirty or whose journal is not clean is never shrunk (ntfsresize resets the
journal; a hibernated Windows resumed onto moved clusters corrupts the volume), and
the refusal says so when the disk needs them to. A BIOS boot partition never moves
(GRUB's boot code holds its absolute sectors). Sizes are whole MiB; a GPT keeps room
for its backup table (as long as the image's table says) at the disk's end.

Refused with both figures (what the partitions need, what the disk has) when the data
does not fit, and when the temporary directory cannot hold the overlay the shrinking
writes (:data:`toolkit.restore.shrink.overlay` holds what the tools move, at most the
data of the partitions that shrink).
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import asdict, dataclass, field

from toolkit.disks import ptable
from toolkit.errors import Refused
from toolkit.restore import detect, layout, qemu
from toolkit.system import blkid, fsstate, qsd, tools
from toolkit.units import human_size

MiB = 1 << 20
MARGIN = 0.10  # of a shrunk filesystem's minimum size, kept free in it
MIN_MARGIN = 16 * MiB
OVERLAY_EXTRA = 64 * MiB  # metadata the tools rewrite, beyond the data they move
SHRINKABLE = ("ntfs", "ext2", "ext3", "ext4")
BIOS_BOOT = "BIOS boot"
HIBERNATED = (b"hibr", b"HIBR", b"wake", b"WAKE")  # hiberfil.sys of a sleeping Windows


@dataclass
class Part:
    """One partition of the image and where it goes on the smaller disk (bytes)."""

    number: int
    start: int
    size: int
    new_start: int
    new_size: int
    type_name: str | None = None
    fstype: str | None = None
    label: str | None = None
    minimum: int | None = None  # the smallest its filesystem can be made
    fixed: str | None = None  # why it keeps its size
    pinned: str | None = None  # why it must not move either
    notes: list[str] = field(default_factory=list)  # said before writing, if it moves
    replay: str | None = None  # said before writing, if it shrinks: its journal is replayed
    sleeping: bool = False  # NTFS holding a hibernated Windows (or one shut down with Fast
    # Startup): nothing of its disk may move or shrink under its session

    @property
    def free(self) -> int:
        """What it can give up: its size beyond its minimum plus the margin (bytes)."""
        if self.fixed or self.minimum is None:
            return 0
        floor = _align_up(self.minimum + max(int(self.minimum * MARGIN), MIN_MARGIN))
        return max(0, (self.size - floor) // MiB * MiB)

    @property
    def action(self) -> str:
        if self.new_size < self.size:
            return "shrunk"
        return "moved" if self.new_start != self.start else "kept"

    @property
    def what(self) -> str:
        fs = f'{self.fstype} "{self.label}"' if self.label else (self.fstype or "unknown")
        return f"partition {self.number} ({fs})"

    def line(self) -> str:
        if self.action == "shrunk":
            used = f" (its data needs {human_size(self.minimum)})" if self.minimum else ""
            return (f"{self.what} shrinks from {human_size(self.size)} to "
                    f"{human_size(self.new_size)}{used}" +
                    (f", and moves to byte {self.new_start}" if self.new_start != self.start
                     else ""))
        if self.action == "moved":
            return f"{self.what} moves from byte {self.start} to byte {self.new_start}"
        return f"{self.what} stays as it is"


@dataclass
class ShrinkPlan:
    """The image's partitions on the smaller disk; ``size``: the disk written (bytes)."""

    scheme: str
    sector: int
    image_size: int
    size: int
    parts: list[Part] = field(default_factory=list)
    overlay_room: int = 0  # bytes the overlay may need in the temporary directory
    tmpdir: str = ""
    tail: int = 0  # bytes kept at the disk's end (a GPT's backup table and header)
    # each file the image is read from (the image, a container's backing chain) as planned:
    # path -> (size, mtime, ctime, inode, device); each must be the same once written
    # (:func:`toolkit.restore.shrink.unchanged`); a block device cannot be told so
    files: dict[str, tuple] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # said before writing, of the whole disk

    @property
    def shrunk(self) -> list[Part]:
        return [p for p in self.parts if p.action == "shrunk"]

    def lines(self) -> list[str]:
        """What the plan says before anything is written."""
        head = (f"the image ({human_size(self.image_size)}) is larger than the target "
                f"({human_size(self.size)}): its partitions are fitted to the target")
        if not self.shrunk:
            head += " (they fit without shrinking: only the partition table is rewritten)"
        moves = [p.line() for p in self.parts if p.action != "kept"]
        tail = ("the image itself is never changed: the shrinking is done on a "
                f"copy-on-write overlay in {self.tmpdir} (up to "
                f"{human_size(self.overlay_room)})") if self.shrunk else ""
        notes = [*self.notes, *(n for p in self.parts if p.action != "kept" for n in p.notes),
                 *(p.replay for p in self.shrunk if p.replay)]
        return [head + (": " + "; ".join(moves) if moves else ""), *([tail] if tail else []),
                *notes]

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "image_size": self.image_size, "size": self.size,
                "parts": [{**asdict(p), "action": p.action} for p in self.parts]}


def file_identity(st: os.stat_result) -> tuple | None:
    """What changes when a regular file is written (None: not a regular file)."""
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _identities(image: str, fmt: str) -> dict[str, tuple | None]:
    """Each file the image is read from, with its identity (None: a block device)."""
    names = [image, *(qemu.referenced_files(image, fmt) if fmt != detect.RAW else [])]
    return {n: file_identity(os.stat(n)) for n in names}


def _align_up(n: int) -> int:
    return -(-n // MiB) * MiB


def usable_end(size: int, tail: int) -> int:
    """Where the last partition may end on a disk of ``size`` bytes (whole MiB) that keeps
    ``tail`` bytes at its end."""
    return (size - tail) // MiB * MiB


def gpt_tail(path: str, sector: int) -> int:
    """The bytes a GPT's backup takes at the disk's end: its header and its entry array
    (128 entries of 128 bytes by default; the image's own header says)."""
    with open(path, "rb") as f:
        f.seek(sector)
        h = f.read(92)
    count, size = struct.unpack_from("<II", h, 80) if h[:8] == b"EFI PART" else (128, 128)
    return sector + -(-count * size // sector) * sector


def ntfs_minimum(path: str) -> int:
    """The smallest size ntfsresize can make the NTFS in ``path`` (bytes)."""
    out = tools.run(["ntfsresize", "--info", "--force", "--no-progress-bar", path],
                    check=False)
    m = re.search(r"You might resize at (\d+) bytes", out.stdout)
    if not m:
        text = (out.stdout + out.stderr).strip().splitlines()
        reason = next((ln for ln in text if "chkdsk" in ln.lower() or "error" in ln.lower()),
                      text[-1] if text else "no answer")
        raise Refused(f"ntfsresize cannot tell how small this NTFS can be made: {reason}")
    return int(m.group(1))


def ext_minimum(path: str, replay: bool = False) -> int:
    """The smallest size resize2fs can make the ext2/3/4 in ``path`` (bytes); ``replay``:
    its journal is still to be replayed (resize2fs is forced to estimate from the
    filesystem as it is, and :data:`OVERLAY_EXTRA` more is kept for what the journal holds)."""
    out = tools.run(["resize2fs", *(["-f"] if replay else []), "-P", path], check=False)
    m = re.search(r"minimum size of the filesystem: (\d+)", out.stdout)
    info = tools.run(["dumpe2fs", "-h", path], check=False).stdout
    b = re.search(r"^Block size:\s+(\d+)", info, re.M)
    if not m or not b:
        said = (out.stderr or out.stdout).strip().splitlines()
        raise Refused("resize2fs cannot tell how small this filesystem can be made: " +
                      (said[-1] if said else "no answer"))
    return int(m.group(1)) * int(b.group(1)) + (OVERLAY_EXTRA if replay else 0)


SLEEPING = ("{what} is hibernated (or shut down with Fast Startup): its session holds the "
            "disk's volumes where they are, and resuming it onto a volume moved or shrunk "
            "corrupts them; shut Windows down fully (shutdown /s /f /t 0) and take the image "
            "again, or restore onto a disk of the image's size")


def _sleeping(parts: list[Part]) -> None:
    """A hibernated Windows on the disk: none of its partitions moves or shrinks (the
    session Windows resumes has them all mounted where they were)."""
    asleep = next((p for p in parts if p.sleeping), None)
    if asleep is None:
        return
    for p in parts:
        if not p.sleeping:
            p.fixed = p.pinned = f"the Windows on {asleep.what} is hibernated: no volume " \
                "of its disk moves or shrinks under its session"


def hibernated(path: str) -> bool:
    """Whether the NTFS in ``path`` holds a sleeping Windows (hibernation or Fast Startup:
    ``hiberfil.sys`` starting with hibr/wake, ntfs-3g's own test)."""
    try:  # its first bytes only: a hiberfil.sys is gigabytes
        return fsstate.head(["ntfscat", "-f", path, "/hiberfil.sys"], 4) in HIBERNATED
    except tools.ToolError:
        return False  # none there (ntfscat fails)


def _ntfs_facts(part: Part, path: str) -> None:
    if hibernated(path):
        part.sleeping = True
        part.fixed = part.pinned = SLEEPING.format(what="Windows on it")
    elif why := fsstate.unsettled("ntfs", path):
        # ntfsresize resets the journal: what it holds would be lost
        part.fixed = (f"{why}: shrinking it could lose data; let Windows check it (chkdsk "
                      "/f) and take the image again, or restore onto a disk of the image's "
                      "size")
    else:
        part.minimum = ntfs_minimum(path)


def _ext_facts(part: Part, path: str) -> None:
    why = fsstate.unsettled(part.fstype, path)
    if why:  # e2fsck replays the journal (and repairs) on the overlay before resize2fs
        part.replay = (f"{part.what}: {why}: e2fsck -f -y replays and repairs it on the "
                       "overlay before shrinking (what it changed is said after)")
    part.minimum = ext_minimum(path, replay=bool(why))


def _facts(part: Part, path: str) -> None:
    """What ``path`` (the partition's bytes) holds and how small it can be made."""
    with open(path, "rb") as f:
        head = f.read(4096)
    enc = layout.encryption(head)
    if enc:
        part.fstype, part.fixed = enc, f"{enc}: encrypted volumes are restored as is, never " \
                                       "resized"
        return
    tags = blkid.probe(path)
    part.fstype, part.label = tags.get("TYPE"), tags.get("LABEL")
    if part.type_name == BIOS_BOOT:
        part.fixed = part.pinned = "a BIOS boot partition: GRUB's boot code holds its " \
                                   "absolute sectors, it never moves"
    elif part.fstype == "xfs":
        part.fixed = "XFS cannot shrink (no tool makes an XFS filesystem smaller)"
    elif part.fstype not in SHRINKABLE:
        part.fixed = f"{part.fstype or 'no filesystem recognised'}: not shrunk (only NTFS " \
                     "and ext2/3/4 are)"
    else:
        try:
            (_ntfs_facts if part.fstype == "ntfs" else _ext_facts)(part, path)
        except Refused as e:
            part.fixed = "; ".join(e.problems)


def read_parts(image: str, fmt: str) -> tuple[ptable.Table, list[Part], int, bool]:
    """The image's table, its partitions with what each holds, the bytes its table keeps
    at the disk's end, and whether its MBR is a hybrid one (read only)."""
    try:
        return _read_parts(image, fmt)
    except OSError as e:  # ToolError: the daemon or a tool; a read error of the image
        raise Refused(f"cannot read the partitions of {image} to fit them to the smaller "
                      f"disk: {e}") from None


def _read_parts(image: str, fmt: str) -> tuple[ptable.Table, list[Part], int, bool]:
    with qsd.exported(image, fmt) as (whole,):
        table = ptable.read_table(whole)
        tail = gpt_tail(whole, table.sector_size) if table and table.scheme == "gpt" else 0
        with open(whole, "rb") as f:
            sector0 = f.read(512)
    if table is None:
        raise Refused(f"{image} holds no partition table: a whole-disk filesystem is not "
                      "fitted to a smaller disk")
    if table.damage:
        raise Refused(f"{image}: its partition table is damaged ({table.damage}): not "
                      "fitted to a smaller disk")
    if table.scheme == "mbr" and any(e.number > 4 or "xtended" in (e.type_name or "")
                                     for e in table.entries):
        raise Refused(f"{image} has MBR extended and logical partitions: fitting them to a "
                      "smaller disk is not supported (convert, or restore onto a disk of "
                      "the image's size)")
    entries = sorted((e for e in table.entries if e.size), key=lambda e: e.offset)
    parts = [Part(e.number, e.offset, e.size, e.offset, e.size, e.type_name) for e in entries]
    if parts:
        ranges = [qsd.Range(p.start, p.size) for p in parts]
        with qsd.exported(image, fmt, ranges) as paths:
            for p, path in zip(parts, paths, strict=True):
                _facts(p, path)
    hybrid = table.scheme == "gpt" and any(e.type != "0xee"
                                           for e in detect.mbr_entries(sector0))
    return table, parts, tail, hybrid


def _take(parts: list[Part], over: int) -> int:
    """Shrink the partitions by ``over`` bytes in all (whole MiB), each in proportion to
    what it can give up; returns what could not be taken."""
    for p in parts:
        p.new_size = p.size
    need = -(-max(over, 0) // MiB) * MiB
    givers = [p for p in parts if p.free]
    free = sum(p.free for p in givers)
    if need == 0:
        return 0
    if need >= free:
        for p in givers:
            p.new_size = p.size - p.free
        return max(0, over - free)
    shares = {id(p): need * p.free // free // MiB * MiB for p in givers}
    left = need - sum(shares.values())
    for p in sorted(givers, key=lambda p: p.free, reverse=True):  # the rest, MiB by MiB
        more = min(left, p.free - shares[id(p)])
        shares[id(p)] += more
        left -= more
    for p in givers:
        p.new_size = p.size - shares[id(p)]
    return 0


def _place(parts: list[Part], pack: bool) -> int:
    """New starts: after a shrunk partition the rest move left; ``pack`` closes the gaps
    too. Returns where the last one ends."""
    shift, end = 0, 0
    for i, p in enumerate(parts):
        p.new_start = p.start - shift
        if pack and i:
            p.new_start = min(p.new_start, _align_up(end))
        shift = p.start - p.new_start + p.size - p.new_size
        end = p.new_start + p.new_size
    return end


def _fit(parts: list[Part], limit: int) -> int:
    """Fit the partitions to end by ``limit``: shrink in proportion to free space, keeping
    the gaps, or closing them when that is not enough. Returns the bytes still over."""
    for pack in (False, True):
        pairs = zip(parts, parts[1:], strict=False)
        gaps = sum(max(0, b.start - _align_up(a.start + a.size)) for a, b in pairs) if pack \
            else 0
        over = _take(parts, max(p.start + p.size for p in parts) - gaps - limit)
        _place(parts, pack)
        if over <= 0:
            return 0
    return over


def _refuse_unfit(parts: list[Part], target_size: int, over: int, tail: int) -> Refused:
    """The refusal, with the smallest disk that takes the partitions: where they must end
    (the usable end, MiB-aligned, plus what is over) and the table's backup after them."""
    need = usable_end(target_size, tail) + over + tail
    fixed = [f"{p.what}: {p.fixed}" for p in parts if p.fixed]
    floors = [f"{p.what}: at least {human_size(p.size - p.free)}" for p in parts
              if p.minimum is not None and not p.fixed]
    return Refused(f"the image's data does not fit the target: its partitions need at least "
                   f"{need} bytes ({human_size(need)}), the target has {target_size} bytes "
                   f"({human_size(target_size)})" +
                   (" (" + "; ".join(floors + fixed) + ")" if floors or fixed else "") +
                   "; nothing was written")


def _check_room(sp: ShrinkPlan, tmpdir: str) -> None:
    if not os.path.isdir(tmpdir) or not os.access(tmpdir, os.W_OK | os.X_OK):
        raise Refused(f"the temporary directory {tmpdir} is not a writable directory: the "
                      "overlay of the shrinking goes there (--tmpdir); nothing was written")
    st = os.statvfs(tmpdir)
    if st.f_flag & os.ST_RDONLY:
        raise Refused(f"the temporary directory {tmpdir} is on a read-only filesystem: the "
                      "overlay of the shrinking goes there (--tmpdir); nothing was written")
    free = st.f_bavail * st.f_frsize
    if free < sp.overlay_room:
        raise Refused(f"shrinking needs up to {human_size(sp.overlay_room)} in the temporary "
                      f"directory {tmpdir} for its overlay, which has {human_size(free)} "
                      "free: give a directory on a disk with room (--tmpdir); nothing "
                      "was written")


def _moves(sp: ShrinkPlan) -> None:
    """Refuse a pinned partition that would move; note what a move means for Windows on
    an MBR disk."""
    for p in sp.parts:
        if p.new_start == p.start:
            continue
        if p.pinned:
            raise Refused(f"{p.what} would move from byte {p.start} to byte {p.new_start}, "
                          f"but {p.pinned}: the image is not fitted to this disk; nothing "
                          "was written")
        if sp.scheme == "mbr" and p.fstype == "ntfs":
            p.notes.append(f"{p.what} moves: Windows on an MBR disk finds its volumes by the "
                           "disk signature and the partition's offset, so if it boots from "
                           "this disk, run Startup Repair (or bcdboot) once afterwards")


def plan_shrink(image: str, fmt: str, image_size: int, target_size: int,
                tmpdir: str) -> ShrinkPlan:
    """Fit the image's partitions to a disk of ``target_size`` bytes; raises
    :class:`Refused` with both figures when the data does not fit."""
    files = _identities(image, fmt)
    table, parts, tail, hybrid = read_parts(image, fmt)
    sp = ShrinkPlan(table.scheme, table.sector_size, image_size, target_size, parts,
                    tmpdir=tmpdir, tail=tail, files={k: v for k, v in files.items() if v})
    if any(v is None for v in files.values()):
        sp.notes.append("the image is read from a disk (" + ", ".join(
            k for k, v in files.items() if v is None) + "): nothing may write to it while it "
            "is restored, a change would not be noticed")
    if hybrid:
        sp.notes.append("the image's hybrid MBR (MBR entries besides the protective one) is "
                        "kept: each of its entries follows its partition to the new place")
    if not parts:
        return sp
    _sleeping(parts)
    over = _fit(parts, usable_end(target_size, tail))
    if over > 0:
        raise _refuse_unfit(parts, target_size, over, tail)
    _moves(sp)
    sp.overlay_room = sum(p.minimum or 0 for p in sp.shrunk) + OVERLAY_EXTRA * len(sp.shrunk)
    if sp.shrunk:
        _check_room(sp, tmpdir)
    return sp
