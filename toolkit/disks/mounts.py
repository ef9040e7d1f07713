"""Parsers for /proc/self/mountinfo and /proc/swaps (pure functions, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.disks.filesystems import unescape


@dataclass(frozen=True)
class Mount:
    devno: str  # "major:minor" as the kernel reports it
    mountpoint: str
    fstype: str
    source: str
    options: frozenset[str] = frozenset()  # the mount's own: "ro", "noatime"...
    super_options: tuple[str, ...] = ()  # the filesystem's: "upperdir=/x", "errors=..."

    def super_option(self, key: str) -> str | None:
        """The value of the filesystem option ``key`` (``upperdir`` of an overlay), "" for
        a flag, None when it is not there."""
        for opt in reversed(self.super_options):  # the last one counts, as in the kernel
            k, _, v = opt.partition("=")
            if k == key:
                return v
        return None


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo.

    Sample line (real, from the live guest)::

        29 1 0:27 / / rw,noatime - overlay overlay rw,lowerdir=/run/live/rootfs/...
        37 29 11:0 / /run/live/medium ro,noatime - iso9660 /dev/sr0 ro,nojoliet
    """
    mounts = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 2:
            continue
        mounts.append(Mount(lf[2], unescape(lf[4]), rf[0], unescape(rf[1]),
                            frozenset(lf[5].split(",")) if len(lf) > 5 else frozenset(),
                            tuple(rf[2].split(",")) if len(rf) > 2 else ()))
    return mounts


def parse_swaps(text: str) -> list[str]:
    """Parse /proc/swaps; returns the swap files or devices in use.

    Sample::

        Filename    Type        Size     Used   Priority
        /dev/vdb2   partition   1048572  0      -2
    """
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields:
            out.append(unescape(fields[0]))
    return out
