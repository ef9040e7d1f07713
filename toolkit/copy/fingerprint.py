"""A cheap fingerprint of a copy's SOURCE: its size and the BLAKE3 of a few sampled regions.

Taken when a copy starts (the first run of a mapfile) and again when it is resumed: the
source is only ever read, so the same source gives the same fingerprint, and a resumed
copy of a source that changed meanwhile (a snapshot LUN re-used for a newer backup, a
disk written in between) is refused instead of being finished into a mix of two states.

:func:`offsets`: :data:`COUNT` regions of :data:`REGION` bytes, at fixed places that
depend on the size only: the start of the disk (partition table, boot sector) and of the
first MiB boundary (where partitions usually start), the last MiB and the very end
(backup GPT), and the rest spread evenly in between, aligned to the logical sector.
Read with O_DIRECT (16 reads of 64 KiB: milliseconds, whatever the disk's size).

A change outside the sampled regions is not seen: the fingerprint tells a re-used or
rewritten source apart, it does not prove two disks equal (the verification does that).
A region that cannot be read is recorded as unreadable (``-``) and not compared; but a
read that fails while the source's storage path is down (:mod:`toolkit.disks.transport`)
says nothing about the medium: :func:`take` raises :class:`PathDown` ("SOURCE path to
10.0.2.2 is down: ...") instead of recording a fingerprint without regions.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass

import blake3

from toolkit.blockio import blockdev
from toolkit.disks import transport

KiB, MiB = 1 << 10, 1 << 20
REGION = 64 * KiB
COUNT = 16
DIGEST = 16  # bytes of BLAKE3 kept per region
ALGORITHM = "blake3"
UNREADABLE = "-"
SYS_ROOT = "/sys"  # where the source's path state is read (tests: a replayed sysfs)


class PathDown(OSError):
    """A region could not be read because the source's storage path is down (not a bad
    sector): its message names the disk and says so, the CLI prints it as it is."""


def _device_name(fd: int, sys_root: str) -> str | None:
    """The kernel name of the block device open as ``fd`` (sysfs), None for a file."""
    with contextlib.suppress(OSError):
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            link = os.path.join(sys_root, "dev", "block",
                                f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
            return os.path.basename(os.path.realpath(link))
    return None


def path_down(fd: int, pos: int, error: OSError, role: str = "SOURCE") -> PathDown | None:
    """The :class:`PathDown` to raise when the read at ``pos`` of ``fd`` failed with
    ``error`` while the device's path is down (or the device is gone); None when it is up
    (a media error) or ``fd`` is no block device."""
    name = _device_name(fd, SYS_ROOT)
    if name is None:
        return None
    state = transport.path_state(name, SYS_ROOT)
    if state == transport.UP:
        return None
    lun = transport.Lun.of(role, name, SYS_ROOT)
    where = lun.where() if lun.address else name
    gone = "gone" if state == transport.GONE else "down"
    e = PathDown(f"{role} {where} is {gone}: the fingerprint of the source (/dev/{name}) "
                 f"cannot be read ({os.strerror(error.errno) if error.errno else error} at "
                 f"byte {pos}): an outage, not a bad sector; run the same command again "
                 "once the path is back")
    e.errno = error.errno
    return e


def region_length(size: int, sector: int = 512, region: int = REGION) -> int:
    """The length of each sampled region: ``region``, or all of a smaller device."""
    n = min(region, size)
    return n - n % sector if n >= sector else n


def offsets(size: int, sector: int = 512, region: int = REGION, count: int = COUNT
            ) -> list[int]:
    """Where the regions are: sorted, distinct, sector-aligned, each wholly inside. The
    start, 1 MiB, the last MiB and the end, and ``count - 4`` evenly in between (fewer on
    a disk so small that they coincide)."""
    n = region_length(size, sector, region)
    if n <= 0:
        return []
    last = size - n
    picks = [0, min(MiB, last), max(0, size - MiB), last]
    picks += [last * i // (count - 3) for i in range(1, count - 3)]
    return sorted({p - p % sector for p in picks})


@dataclass(frozen=True)
class Fingerprint:
    """``samples``: ``(offset, hex digest)`` of each region, ``-`` when it was unreadable."""

    size: int
    region: int
    samples: tuple[tuple[int, str], ...]
    algorithm: str = ALGORITHM

    def to_text(self) -> str:
        """One line: ``blake3 size=N region=65536 0:HEX 1048576:HEX ...``."""
        return " ".join([self.algorithm, f"size={self.size}", f"region={self.region}",
                         *(f"{pos}:{h}" for pos, h in self.samples)])

    @classmethod
    def from_text(cls, text: str) -> Fingerprint:
        """The fingerprint :meth:`to_text` wrote; ValueError when it is not one."""
        words = text.split()
        if len(words) < 3 or not words[1].startswith("size=") \
                or not words[2].startswith("region="):
            raise ValueError("not a fingerprint: expected 'ALGORITHM size=N region=N POS:HEX...'")
        samples = []
        for w in words[3:]:
            pos, _, h = w.partition(":")
            if not h or (h != UNREADABLE and any(c not in "0123456789abcdef" for c in h)):
                raise ValueError(f"not a fingerprint sample: {w!r}")
            samples.append((int(pos), h))
        return cls(int(words[1][5:]), int(words[2][7:]), tuple(samples), words[0])

    def difference(self, now: Fingerprint) -> str | None:
        """How the source fingerprinted ``now`` differs from this one, or None: the size,
        or the first region whose hash differs (regions unreadable then or now are not
        compared)."""
        if now.size != self.size:
            return f"its size differs: {self.size} bytes then, {now.size} bytes now"
        if (now.algorithm, now.region) != (self.algorithm, self.region):
            return (f"its fingerprint was taken another way ({self.algorithm}, "
                    f"{self.region}-byte regions): it cannot be compared")
        theirs = dict(now.samples)
        for pos, h in self.samples:
            other = theirs.get(pos)
            if other is None or UNREADABLE in (h, other):
                continue
            if other != h:
                return f"the region at byte {pos} differs"
        return None


def take(fd: int, size: int, sector: int = 512, region: int = REGION, count: int = COUNT
         ) -> Fingerprint:
    """Fingerprint the ``size`` bytes readable from ``fd`` (O_DIRECT or not); raises
    :class:`PathDown` when a read fails while the device's storage path is down."""
    n = region_length(size, sector, region)
    samples: list[tuple[int, str]] = []
    if n <= 0:
        return Fingerprint(size, n, ())
    buf = blockdev.AlignedBuffer(max(n, 4096))
    try:
        for pos in offsets(size, sector, region, count):
            try:
                blockdev.read_exact(fd, buf.view[:n], pos)
            except OSError as e:
                down = path_down(fd, pos, e)
                if down is not None:  # an outage, not a bad sector: say so
                    raise down from None
                samples.append((pos, UNREADABLE))
                continue
            samples.append((pos, blake3.blake3(buf.view[:n]).hexdigest(length=DIGEST)))
    finally:
        buf.close()
    return Fingerprint(size, n, tuple(samples))


def take_path(path: str) -> Fingerprint:
    """Fingerprint the device (or file) at ``path``, read with O_DIRECT."""
    fd = blockdev.open_device(path)
    try:
        return take(fd, blockdev.device_size(fd), blockdev.logical_sector_size(fd))
    finally:
        os.close(fd)
