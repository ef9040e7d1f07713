"""Where the state directory (mapfiles, reports, logs) really is, and whether what is
written there survives a reboot: :func:`location` follows it through symbolic links and
mounts (``/proc/self/mountinfo``: an overlay's upper layer, a loop device's backing file)
to a :class:`StateLocation`; :func:`persistent_state` is its yes or no, for the menu's
warning before a long job and ``python -m toolkit.system.state status``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from toolkit.disks.mounts import Mount, parse_mountinfo
from toolkit.system import paths

# Filesystems whose files are gone after a reboot (or that cannot be written).
VOLATILE = {"tmpfs", "ramfs", "devtmpfs", "squashfs", "iso9660", "udf", "proc", "sysfs",
            "rootfs", "erofs"}


@dataclass(frozen=True)
class StateLocation:
    path: str  # the state directory as the toolkit names it (/var/log/rtk)
    real: str  # where it really is (/run/rtk/data/rtk)
    mountpoint: str | None
    fstype: str | None
    device: str | None
    persistent: bool  # survives a reboot (and a power cut)
    writable: bool

    @property
    def message(self) -> str:
        """One sentence for the technician."""
        where = self.path if self.real == self.path else f"{self.path} ({self.real})"
        if self.persistent and self.writable:
            return (f"Mapfiles, reports and logs are kept in {where} on {self.device} "
                    f"({self.fstype}): they survive a reboot or a power cut.")
        if self.persistent:
            return f"{where} on {self.device} is not writable: mapfiles and reports fail."
        return (f"Mapfiles, reports and logs are kept in {where}, in RAM ({self.fstype}): a "
                "reboot or a power cut loses the resume point (mapfile) and the reports.")



def _mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount ``path`` is on: the longest mount point above it (the last one of a
    mount point mounted over)."""
    best = None
    for m in mounts:
        mp = m.mountpoint
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
                best is None or len(mp) >= len(best.mountpoint)):
            best = m
    return best


def _loop_backing(device: str) -> str | None:
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip().removesuffix(" (deleted)") or None
    except OSError:
        return None


def _survives(path: str, mounts: list[Mount], depth: int = 0) -> tuple[bool, Mount | None]:
    """Whether the file at ``path`` survives a reboot; the mount it is on."""
    m = _mount_of(path, mounts)
    if m is None or depth > 4:
        return False, m
    fstype, source = m.fstype, m.source
    if fstype == "overlay":  # live-boot's root: its upper layer decides (persistence)
        upper = m.super_option("upperdir")
        return (_survives(upper, mounts, depth + 1)[0] if upper else False), m
    if fstype in VOLATILE or source.startswith(("/dev/zram", "/dev/ram")):
        return False, m
    if re.fullmatch(r"/dev/loop\d+", source):  # as durable as the file behind it
        backing = _loop_backing(source)
        return (_survives(backing, mounts, depth + 1)[0] if backing else False), m
    return True, m


def location(state: str | None = None, *, mountinfo: str | None = None) -> StateLocation:
    """Where the state directory ``state`` (default :func:`paths.state_dir`) really is,
    and whether what is written there survives a reboot."""
    state = state or paths.state_dir()
    real = os.path.realpath(state)
    probe = real
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    mounts = parse_mountinfo(mountinfo)
    persistent, m = _survives(probe, mounts)
    read_only = bool(m and "ro" in m.options)
    writable = not read_only and os.access(probe, os.W_OK)
    return StateLocation(state, real, m.mountpoint if m else None, m.fstype if m else None,
                         m.source if m else None, persistent, writable)


def persistent_state(state: str | None = None) -> bool:
    """Whether the mapfiles and reports written now survive a reboot (False on the live
    system's tmpfs overlay, True once an RTK-DATA partition or a chosen disk holds them)."""
    try:
        loc = location(state)
    except OSError:
        return False
    return loc.persistent and loc.writable
