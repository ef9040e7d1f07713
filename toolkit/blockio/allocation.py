"""Which parts of a source device hold no data: what need not be read.

A thin source (a sparse image file behind a loop device, a thin snapshot LUN)
stores only what was written; the rest reads as zeros. With ``--skip-zeros``
(the target reads back zeros), those parts need neither reading nor writing.
What is known here, after an ``fsync`` of the source (so that nothing written
through it is still only in its cache):

- a loop device (or a partition of one) over a regular file: the file's holes
  (``lseek`` ``SEEK_DATA``/``SEEK_HOLE``), at the loop's offset, in the very
  file the loop driver uses (device and inode checked);
- a SCSI disk (an iSCSI LUN, or a partition of one) that the kernel found
  thin-provisioned and that reads unmapped blocks as zeros (LBPME and
  LBPRZ): its deallocated blocks, from GET LBA STATUS (:mod:`toolkit.blockio.sgio`).

Anything else gives None: no map, every byte is read. Boundaries are rounded
inwards to the logical sector.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from toolkit.blockio import sgio

SYS_BLOCK = Path("/sys/class/block")
LOOP_FILE = "holes of the loop device's file"
SCSI_MAP = "SCSI GET LBA STATUS (deallocated blocks, LBPRZ)"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def whole_disk(device: str) -> tuple[str, int]:
    """``(disk name, byte offset of device on it)``: a partition's disk and start."""
    name = os.path.basename(os.path.realpath(device))
    sysdir = SYS_BLOCK / name
    if (sysdir / "partition").exists():
        return sysdir.resolve().parent.name, int(_read(sysdir / "start") or 0) * 512
    return name, 0


LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")  # struct loop_info64 (<linux/loop.h>)


def loop_backing(device: str) -> tuple[str, int, int, int] | None:
    """``(backing file, byte offset of this device in it, st_dev, st_ino)`` for a loop
    device or a partition of one; None for anything else. The file is named by sysfs
    and identified by the loop driver itself (LOOP_GET_STATUS64), as losetup does:
    the name may since lead elsewhere (renamed, replaced, mounted over)."""
    name, start = whole_disk(device)
    try:
        backing = (SYS_BLOCK / name / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return None
    if not backing or backing.endswith(" (deleted)"):
        return None
    fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64.size))
    finally:
        os.close(fd)
    st_dev, st_ino, _rdev, offset = _LOOP_INFO64.unpack(info)[:4]
    return backing, offset + start, st_dev, st_ino


def file_holes(path: str, start: int, size: int, identity: tuple[int, int] | None = None
               ) -> list[tuple[int, int]]:
    """The holes of ``path`` within ``[start, start+size)``, relative to ``start``;
    ``identity=(st_dev, st_ino)``: raises OSError unless the file opened is that one."""
    holes: list[tuple[int, int]] = []
    end = start + size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if identity and (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) != \
                (os.major(identity[0]), os.minor(identity[0]), identity[1]):
            raise OSError(errno.ESTALE, f"{path} is not the loop device's file any more")
        pos = start
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no data after pos
                    raise
                data = end
            if data > pos:
                holes.append((pos - start, min(data, end) - pos))
            if data >= end:
                break
            pos = os.lseek(fd, data, os.SEEK_HOLE)
    finally:
        os.close(fd)
    return holes


def thin_scsi(disk: str) -> bool:
    """Whether the kernel found SCSI disk ``disk`` thin-provisioned (LBPME): only those
    are asked GET LBA STATUS (a USB bridge may hang on commands it does not know)."""
    for attr in (SYS_BLOCK / disk / "device" / "scsi_disk").glob("*/thin_provisioning"):
        if _read(attr) == "1":
            return True
    return False


def scsi_unmapped(disk: str, start: int, size: int) -> list[tuple[int, int]]:
    """Deallocated ranges of SCSI disk ``disk`` within ``[start, start+size)``, relative
    to ``start``; raises OSError when the disk cannot tell."""
    fd = os.open(f"/dev/{disk}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        runs, block = sgio.deallocated_runs(fd)
    finally:
        os.close(fd)
    out = []
    for lba, count in runs:
        a, b = max(lba * block, start), min((lba + count) * block, start + size)
        if b > a:
            out.append((a - start, b - a))
    return out


def unallocated(device: str, fd: int, size: int, sector: int
                ) -> tuple[list[tuple[int, int]], str] | tuple[None, None]:
    """``(sector-aligned ranges of device that hold no data, where that came from)``,
    or ``(None, None)`` when this cannot be known. ``fd``: the device, open."""
    disk, start = whole_disk(device)
    try:
        found = loop_backing(device)
        if found is not None:
            os.fsync(fd)
            path, offset, st_dev, st_ino = found
            holes, how = file_holes(path, offset, size, (st_dev, st_ino)), LOOP_FILE
        elif thin_scsi(disk):
            os.fsync(fd)
            holes, how = scsi_unmapped(disk, start, size), SCSI_MAP
        else:
            return None, None
    except OSError:
        return None, None
    out = []
    for pos, n in holes:
        a, b = -(-pos // sector) * sector, (pos + n) // sector * sector
        if b > a:
            out.append((a, b - a))
    return out, how
