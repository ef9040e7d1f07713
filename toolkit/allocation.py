"""Which parts of a source device hold no data: what need not be read.

A thin source (a sparse image file behind a loop device, a thin snapshot)
stores only what was written; the rest reads as zeros. With ``--skip-zeros``
(the target reads back zeros), those parts need neither reading nor writing.
What is known here:

- a loop device (or a partition of one) over a regular file: the file's holes
  (``lseek`` ``SEEK_DATA``/``SEEK_HOLE``), at the loop's offset; the source's
  dirty pages are flushed first, so a hole is never data still in the cache.

Anything else (a SCSI LUN: GET LBA STATUS is not asked yet) gives None: no map,
every byte is read. Boundaries are rounded inwards to the logical sector.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

SYS_BLOCK = Path("/sys/class/block")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def loop_backing(device: str) -> tuple[str, int] | None:
    """``(backing file, byte offset of this device in it)`` for a loop device or a
    partition of one; None for anything else."""
    name = os.path.basename(os.path.realpath(device))
    sysdir = SYS_BLOCK / name
    start = 0
    if (sysdir / "partition").exists():
        start = int(_read(sysdir / "start") or 0) * 512
        name = sysdir.resolve().parent.name
    loop = SYS_BLOCK / name / "loop"
    backing = _read(loop / "backing_file")
    if not backing or backing.endswith(" (deleted)"):
        return None
    return backing, int(_read(loop / "offset") or 0) + start


def file_holes(path: str, start: int, size: int) -> list[tuple[int, int]]:
    """The holes of ``path`` within ``[start, start+size)``, relative to ``start``."""
    holes: list[tuple[int, int]] = []
    end = start + size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
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


def unallocated(device: str, fd: int, size: int, sector: int) -> list[tuple[int, int]] | None:
    """Sector-aligned ranges of ``device`` (open as ``fd``) that hold no data, or None
    when this cannot be known."""
    found = loop_backing(device)
    if found is None:
        return None
    try:
        os.fsync(fd)  # written through the device but still cached: into the file first
        holes = file_holes(*found, size)
    except OSError:
        return None
    out = []
    for pos, n in holes:
        a, b = -(-pos // sector) * sector, (pos + n) // sector * sector
        if b > a:
            out.append((a, b - a))
    return out
