"""Local and USB media that hold images: which partitions, mount read-only, browse.

:func:`data_volumes` lists the filesystems (partitions, or a filesystem on a
whole disk) that can be opened: not the boot medium, not mounted, not swap,
not held. :func:`mount_ro` mounts one read-only under
``$RTK_RUN_DIR/media/NAME`` (default ``/run/rtk/media``): ``mount -o ro``, or
``ntfs-3g -o ro`` for NTFS (the live kernel may have no ntfs driver).
:func:`remount_rw_for` makes one writable, only for a change the person agreed to
(a VHDX's log replayed in the file itself). :func:`list_dir` shows a directory as a
person browses it: directories first, then files with their sizes, whatever their
names (the restore recognises an image by its content).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from toolkit.disks.inventory import Disk
from toolkit.system import mount, tools

# Filesystems a technician keeps images on.
FILESYSTEMS = ("ext2", "ext3", "ext4", "vfat", "exfat", "ntfs", "xfs", "btrfs", "iso9660",
               "udf", "f2fs")


class MediaError(OSError):
    """A volume could not be mounted or read."""


@dataclass(frozen=True)
class Volume:
    name: str  # kernel name of the partition (or disk)
    path: str
    size: int
    fstype: str
    label: str | None
    disk: Disk


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    is_dir: bool
    size: int | None  # files only


def media_dir() -> str:
    return os.path.join(os.environ.get("RTK_RUN_DIR", "/run/rtk"), "media")


def data_volumes(disks: list[Disk]) -> list[Volume]:
    """Filesystems that can be mounted read-only to look for images."""
    out = []
    for d in disks:
        if d.boot_medium:
            continue
        if not d.partitions:
            if d.fstype in FILESYSTEMS and not (d.mountpoints or d.swap or d.holders):
                out.append(Volume(d.name, d.path, d.size, d.fstype, d.label, d))
            continue
        for p in d.partitions:
            if p.fstype in FILESYSTEMS and not (p.mountpoints or p.swap or p.holders):
                out.append(Volume(p.name, p.path, p.size, p.fstype, p.label, d))
    return out


def mount_ro(device: str, fstype: str | None, name: str | None = None) -> str:
    """Mount ``device`` read-only under :func:`media_dir`; returns the mount point."""
    mnt = os.path.join(media_dir(), name or os.path.basename(device))
    os.makedirs(mnt, exist_ok=True)
    if os.path.ismount(mnt):
        raise MediaError(f"{mnt} is already a mount point")
    try:
        if fstype == "ntfs":
            tools.run(["ntfs-3g", "-o", "ro", device, mnt], timeout=120)
        else:
            mount.mount(device, mnt, fstype=fstype, options=("ro",))
    except tools.ToolError as e:
        _rmdir(mnt)
        raise MediaError(f"cannot mount {device} read-only: {e}") from e
    return mnt


def _mount_of(path: str) -> tuple[str, str, str, list[str]] | None:
    """(device, mount point, fstype, options) of the mount under :func:`media_dir` that
    holds ``path``, from /proc/self/mounts; None for a path elsewhere."""
    real, best = os.path.realpath(path), None
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = (x.encode().decode("unicode_escape") if "\\" in x else x
                                      for x in line.split()[:4])
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            longer = best is None or len(mnt) > len(best[1])
            if inside and mnt.startswith(media_dir()) and longer:
                best = (dev, mnt, fstype, opts.split(","))
    return best


def remount_rw_for(path: str) -> str | None:
    """Make the medium holding ``path`` (mounted read-only by :func:`mount_ro`) writable,
    for a change the person agreed to (a VHDX's log replayed in the file itself): ``mount
    -o remount,rw``, or ntfs-3g mounted again read-write. Its mount point; None when
    ``path`` is on no medium of ours."""
    found = _mount_of(path)
    if found is None:
        return None
    dev, mnt, fstype, opts = found
    if "ro" not in opts:
        return mnt
    try:
        if fstype == "fuseblk":  # ntfs-3g: a FUSE mount cannot be remounted
            mount.umount(mnt)
            tools.run(["ntfs-3g", dev, mnt], timeout=120)
        else:
            mount.mount(dev, mnt, options=("remount", "rw"))
    except tools.ToolError as e:
        raise MediaError(f"cannot make {mnt} writable: {e}") from e
    return mnt


def unmount(mountpoint: str) -> None:
    """Unmount (lazily if busy) and remove the mount point directory."""
    if os.path.ismount(mountpoint):
        try:
            mount.umount(mountpoint)
        except tools.ToolError:
            with contextlib.suppress(tools.ToolError):
                mount.umount(mountpoint, lazy=True)
    _rmdir(mountpoint)


def _rmdir(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


def list_dir(path: str) -> list[Entry]:
    """Directories first, then files (with sizes), by name; hidden ones too."""
    try:
        names = os.listdir(path)
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e.strerror}") from None
    dirs, files = [], []
    for n in sorted(names, key=str.lower):
        full = os.path.join(path, n)
        try:
            st = os.stat(full)
        except OSError:
            continue
        if os.path.isdir(full):
            dirs.append(Entry(n, full, True, None))
        else:
            files.append(Entry(n, full, False, st.st_size))
    return dirs + files
