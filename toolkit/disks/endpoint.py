"""A block device named by a path, resolved to the disk (and partition) it is.

:func:`resolve` turns any path to a device (a /dev/disk/by-* link, another node
of it) into an :class:`Endpoint` with the sizes of the device's ioctls and the
:func:`physical_keys` of its medium, which :mod:`toolkit.disks.overlap` compares;
:func:`endpoint_from_disk` does the same from inventory objects (no device).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from toolkit.blockio import blockdev
from toolkit.disks.identity import DiskIdentity, identity_of
from toolkit.disks.inventory import Disk, Partition
from toolkit.errors import Refused


@dataclass
class Endpoint:
    """A whole disk or a partition, as a copy, a restore or a verification sees it."""

    path: str  # as given
    node: str  # /dev/NAME
    size: int  # bytes, from BLKGETSIZE64
    sector_size: int  # logical, from BLKSSZGET
    disk: Disk  # the whole disk (the parent of a partition)
    partition: Partition | None = None
    start: int = 0  # byte offset on the whole disk
    keys: frozenset[str] = frozenset()  # what names the physical medium
    rdev: int | None = None
    diskseq: str | None = None  # the kernel's sequence number of the disk when resolved

    @property
    def is_partition(self) -> bool:
        return self.partition is not None

    @property
    def identity(self) -> str | None:
        return self.disk.identity

    def record(self) -> DiskIdentity:
        """This end's identity record (:mod:`toolkit.disks.identity`)."""
        return identity_of(self.disk, self.partition, path=self.path, size=self.size,
                           sector_size=self.sector_size)

    def describe(self) -> dict:
        """The identity of this end, for reports and logs."""
        return self.record().to_dict()

    def label(self) -> str:
        """One line for messages: ``/dev/sdb (ST4000NM, serial Z1Z2, 4.0 TB)``."""
        return self.record().label()


def physical_keys(disk: Disk, whole_rdev: int | None = None) -> frozenset[str]:
    """Names of the physical medium under ``disk``: two ends sharing one are the same disk.

    The kernel name, the serial and WWN (the same LUN through another path),
    the device number, and for a loop device its backing file (two loop
    devices over one file are one disk).
    """
    keys = {f"name:{disk.name}"}
    if disk.serial:
        keys.add(f"serial:{disk.serial}")
    if disk.wwn:
        keys.add(f"wwn:{disk.wwn}")
    if whole_rdev is not None:
        keys.add(f"rdev:{os.major(whole_rdev)}:{os.minor(whole_rdev)}")
    if disk.backing_file:
        bf = disk.backing_file.removesuffix(" (deleted)")
        keys.add(f"file:{os.path.realpath(bf)}")
        try:
            st = os.stat(bf)
            keys.add(f"inode:{st.st_dev}:{st.st_ino}")
        except OSError:
            pass
    return frozenset(keys)


def endpoint_from_disk(disk: Disk, partition: Partition | None = None, *,
                       path: str | None = None, size: int | None = None,
                       sector_size: int | None = None, rdev: int | None = None,
                       whole_rdev: int | None = None) -> Endpoint:
    """An :class:`Endpoint` from inventory objects (sizes default to the inventory's)."""
    node = partition.path if partition else disk.path
    return Endpoint(
        path=path or node, node=node,
        size=size if size is not None else (partition.size if partition else disk.size),
        sector_size=sector_size or disk.logical_sector_size,
        disk=disk, partition=partition, start=partition.start if partition else 0,
        keys=physical_keys(disk, whole_rdev), rdev=rdev,
    )


def resolve(path: str, disks: list[Disk]) -> Endpoint:
    """The device at ``path`` (any link or node to it), with sizes from its ioctls."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise Refused(f"{path}: {e.strerror}") from None
    if not blockdev.is_block_device(path):
        raise Refused(f"{path} is not a block device (for an image file, use losetup)")
    name = _sysfs_name(st.st_rdev) or os.path.basename(os.path.realpath(path))
    for d in disks:
        parts = [p for p in d.partitions if p.name == name]
        if d.name == name or parts:
            break
    else:
        raise Refused(f"{path} ({name}) is not in the disk inventory")
    try:
        fd = blockdev.open_device(path, direct=False)
        try:
            size, sector = blockdev.device_size(fd), blockdev.logical_sector_size(fd)
        finally:
            os.close(fd)
    except OSError as e:  # EACCES as non-root, ENXIO for a loop device without a file...
        raise Refused(open_problem(path, e)) from None
    try:
        whole_rdev = os.stat(d.path).st_rdev
    except OSError:
        whole_rdev = None
    end = endpoint_from_disk(d, parts[0] if parts else None, path=path, size=size,
                             sector_size=sector, rdev=st.st_rdev, whole_rdev=whole_rdev)
    end.diskseq = _diskseq(d.name)  # the write gate checks the disk is still this one
    return end


def open_problem(path: str, e: OSError, *, write: bool = False) -> str:
    """Why the device at ``path`` cannot be opened, in plain words (no "[Errno 13]")."""
    if e.errno in (errno.EACCES, errno.EPERM):
        if os.geteuid() != 0:
            return f"{path}: permission denied (run as root?)"
        return (f"{path}: permission denied" + (": the device is read-only (a SOURCE, or "
                "blockdev --setro)" if write else " (a container or a sandbox may forbid "
                "opening block devices)"))
    if e.errno == errno.EROFS:
        return f"{path}: the device is read-only"
    if e.errno in (errno.ENXIO, errno.ENODEV, errno.ENOMEDIUM):
        return f"{path}: no medium behind this device ({e.strerror})"
    return f"{path}: cannot open it: {e.strerror or type(e).__name__}"


def _diskseq(name: str) -> str | None:
    """The kernel's sequence number of disk ``name``: a new one for every disk attached
    (a loop device bound to another file is another disk)."""
    try:
        with open(f"/sys/block/{name}/diskseq") as f:
            return f.read().strip()
    except OSError:
        return None


def _sysfs_name(rdev: int) -> str | None:
    try:
        link = os.readlink(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    except OSError:
        return None
    return os.path.basename(link)
