"""Filesystems that can hold the state or a logs bundle (:class:`Volume`): those on the
inventory's disks (:func:`volumes_of`), why one cannot be mounted read-write
(:meth:`Volume.mount_problems`), the menu's choice of one (:func:`volumes`: which may be picked,
why not the others) and mounting it (:func:`mount_volume`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from toolkit.disks.inventory import Disk
from toolkit.system import mount, tools
from toolkit.units import human_size

# Filesystems a technician may pick for the state or a logs bundle (mounted read-write):
# those of an RTK-DATA partition (toolkit.system.state.DATA_FILESYSTEMS) and more.
WRITABLE_FILESYSTEMS = ("ext4", "ext3", "ext2", "vfat", "exfat", "ntfs", "xfs", "btrfs", "f2fs")


class StateError(OSError):
    """The state directory cannot be moved where it was asked to."""


@dataclass(frozen=True)
class Volume:
    """A filesystem that can hold the state or a logs bundle."""

    name: str  # kernel name of the partition (or the disk, for a filesystem on it all)
    path: str
    size: int
    fstype: str
    label: str | None
    uuid: str | None
    disk: Disk
    mountpoints: tuple[str, ...] = ()

    def describe(self) -> str:
        """``/dev/sdb3 ext4 "RTK-DATA" 7.5 GB, UUID 1b2c..., on /dev/sdb (usb, SanDisk,
        serial 4C53...)``."""
        d = self.disk
        what = ", ".join(x for x in (d.transport, d.model, d.serial and f"serial {d.serial}")
                         if x)
        label = f' "{self.label}"' if self.label else ""
        uuid = f", UUID {self.uuid}" if self.uuid else ""
        where = "" if self.path == d.path else f" on {d.path} ({what})"
        return f"{self.path} {self.fstype}{label} {human_size(self.size)}{uuid}{where}"

    def mount_problems(self) -> list[str]:
        """Why it cannot be mounted read-write by us: in use, read-only, a SOURCE."""
        d = self.disk
        reasons = []
        if d.role == "SOURCE":
            reasons.append("on an iSCSI disk attached as SOURCE (never written)")
        if d.read_only:
            reasons.append("read-only disk")
        part = next((p for p in d.partitions if p.path == self.path), None)
        swap, holders = (part.swap, part.holders) if part else (d.swap, d.holders)
        if swap:
            reasons.append("in use as swap")
        if holders:
            reasons.append("held by " + ", ".join(holders))
        return reasons


def volumes_of(disks: Iterable[Disk]) -> list[Volume]:
    """Every filesystem on ``disks`` (of a partition, or of a whole disk without a
    partition table); CD and floppy drives' are never written."""
    out = []
    for d in disks:
        if d.transport in ("cdrom", "floppy"):
            continue
        if not d.partitions and d.fstype:
            out.append(Volume(d.name, d.path, d.size, d.fstype, d.label, None, d,
                              tuple(d.mountpoints)))
        for p in d.partitions:
            if p.fstype:
                out.append(Volume(p.name, p.path, p.size, p.fstype, p.label, p.uuid, d,
                                  tuple(p.mountpoints)))
    return out



def mount_volume(v: Volume, mountpoint: str) -> None:
    """Mount ``v`` read-write at ``mountpoint`` (made if missing); NTFS with ntfs-3g.
    Raises ToolError (the mount's message) or StateError."""
    os.makedirs(mountpoint, exist_ok=True)
    if os.path.ismount(mountpoint):
        raise StateError(f"{mountpoint} is already a mount point")
    try:
        if v.fstype == "ntfs":
            tools.run(["ntfs-3g", "-o", "noatime", v.path, mountpoint], timeout=120)
        else:
            mount.mount(v.path, mountpoint, fstype=v.fstype, options=("rw", "noatime"))
    except tools.ToolError:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        raise


def volumes(disks: Iterable[Disk], busy: Iterable[str] = ()) -> list[tuple[Volume, str | None]]:
    """Every filesystem that could be mounted read-write, with None for those that may be
    chosen and the reason for the others. ``busy``: paths of disks that a job is about to
    use (its SOURCE and TARGET), never chosen."""
    busy = {os.path.realpath(b) if b.startswith("/dev/") else b for b in busy}
    out = []
    for v in volumes_of(disks):
        if v.fstype not in WRITABLE_FILESYSTEMS:
            continue
        why = v.mount_problems()
        if v.disk.role == "TARGET":
            why.append("on an iSCSI disk attached as TARGET (to be overwritten)")
        if {v.disk.path, v.path, v.disk.name} & busy:
            why.append("part of this job")
        if v.mountpoints:
            why.append("mounted at " + ", ".join(v.mountpoints))
        out.append((v, "; ".join(why) or None))
    return sorted(out, key=lambda c: (c[1] is not None, not c[0].disk.removable, c[0].path))
