"""What sysfs and the loop driver say about a block device, for the write gate.

:class:`SysfsView` reads a system's sysfs (a root for tests): a device number's kernel
name and node, its size, a whole disk's serial and WWN (:func:`wwn_of`), and a loop
device's backing file or device at its offset (LOOP_GET_STATUS64: device and inode, as
losetup does; sysfs ``loop/offset``). :class:`Unresolvable` is what every step of the
resolution raises when a path cannot be followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
from collections.abc import Callable

LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")  # struct loop_info64 (<linux/loop.h>)
MAX_DEPTH = 32  # loops over loops over files...: deeper is refused, not followed


class Unresolvable(Exception):
    """The path cannot be followed to what holds its bytes (then nothing may be written
    onto or from it on the strength of a resolution)."""


def parse_devno(text: str) -> int:
    """``MAJ:MIN`` as a device number."""
    major, minor = text.strip().split(":")
    return os.makedev(int(major), int(minor))


def wwn_of(wwid: str | None) -> str | None:
    """The WWN in a sysfs ``wwid`` (``naa.5000c500a1b2c3d4``, ``eui.``, NVMe's ``nvme.``),
    or None when it holds none: a ``t10.`` designator is a vendor, model and serial
    string (``t10.ATA     QEMU HARDDISK                 RTK-AHCI-1``, what libata reports
    for a SATA disk without a WWN), not a World Wide Name."""
    if not wwid or wwid.lower().startswith("t10."):
        return None
    return wwid


def dev_key(rdev: int) -> str:
    """A device's key in a :class:`~toolkit.disks.aliases.Piece`: ``dev:MAJ:MIN``."""
    return f"dev:{os.major(rdev)}:{os.minor(rdev)}"


class SysfsView:
    """A system's sysfs and /dev, and the mount table and swaps it reads them with
    (roots for tests).

    ``names_of(kernel_name)``: more names of a whole disk (the inventory's serial and
    WWN from udev), besides those sysfs gives."""

    def __init__(self, sys_root: str = "/sys", dev_root: str = "/dev",
                 mountinfo: str = "/proc/self/mountinfo", swaps: str = "/proc/swaps",
                 names_of: Callable[[str], frozenset[str]] | None = None):
        self.sys, self.dev, self.mountinfo, self.swaps = sys_root, dev_root, mountinfo, swaps
        self.names_of = names_of or (lambda _name: frozenset())

    @staticmethod
    def devno(text: str) -> int:
        """``MAJ:MIN`` as a device number."""
        return parse_devno(text)

    def node(self, rdev: int) -> str:
        """The kernel's node of ``rdev`` (/dev/NAME), or ``MAJ:MIN`` when not in sysfs."""
        name = self.kernel_name(rdev)
        return os.path.join(self.dev, name) if name else f"{os.major(rdev)}:{os.minor(rdev)}"

    def read(self, path: str) -> str | None:
        """The stripped text of the file ``path`` (None: it cannot be read)."""
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None

    def sysdir(self, rdev: int) -> str | None:
        link = os.path.join(self.sys, "dev", "block", f"{os.major(rdev)}:{os.minor(rdev)}")
        return os.path.realpath(link) if os.path.exists(link) else None

    def kernel_name(self, rdev: int) -> str | None:
        d = self.sysdir(rdev)
        return os.path.basename(d) if d else None

    def size(self, sysdir: str) -> int:
        return int(self.read(os.path.join(sysdir, "size")) or 0) * 512

    def disk_names(self, sysdir: str) -> frozenset[str]:
        name = os.path.basename(sysdir)
        names = set(self.names_of(name))
        for attr, kind in (("wwid", "wwn"), ("device/wwid", "wwn"), ("serial", "serial"),
                           ("device/serial", "serial")):
            value = self.read(os.path.join(sysdir, attr))
            if kind == "wwn":
                value = wwn_of(value)
            if value:
                names.add(f"{kind}:{value}")
        return frozenset(names)

    def loop_backing(self, name: str, sysdir: str) -> tuple[str, int, int, int] | None:
        """``(backing path, offset, lo_device, lo_inode or lo_rdevice)`` of a loop device
        (None: not one, or unbound). A backing device has lo_rdevice set; the identity
        comes from the loop driver when /dev/NAME is this device, else from sysfs."""
        backing = self.read(os.path.join(sysdir, "loop", "backing_file"))
        if backing is None:
            return None
        offset = int(self.read(os.path.join(sysdir, "loop", "offset")) or 0)
        node = os.path.join(self.dev, name)
        with contextlib.suppress(OSError):
            st = os.stat(node)
            if stat.S_ISBLK(st.st_mode) and self.sysdir(st.st_rdev) == sysdir:
                fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                try:
                    info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64.size))
                finally:
                    os.close(fd)
                lo_dev, lo_ino, lo_rdev, lo_off = _LOOP_INFO64.unpack(info)[:4]
                if lo_rdev:
                    return backing, lo_off, -1, lo_rdev
                return backing, lo_off, lo_dev, lo_ino
        path = backing.removesuffix(" (deleted)")
        try:
            st = os.stat(path)
        except OSError as e:
            raise Unresolvable(f"the loop device {node}'s backing file {backing} cannot be "
                               f"found ({e.strerror})") from None
        if stat.S_ISBLK(st.st_mode):
            return backing, offset, -1, st.st_rdev
        return backing, offset, st.st_dev, st.st_ino
