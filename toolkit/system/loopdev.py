"""``losetup``: a read-only loop device over a byte range of a device, for tools that
must read a filesystem and never write it.

A loop device made with ``losetup -r`` refuses every write in the kernel, whatever flags
the program opens it with (``xfs_logprint`` opens its device O_RDWR), so a tool run on it
cannot change the device under it. The offset and size come from the partition table as
it is on the disk (not from the kernel's idea of it, which may be stale or missing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from toolkit.system import tools

LOSETUP = "losetup"


def attach_read_only(device: str, offset: int = 0, size: int | None = None,
                     sector_size: int = 512) -> str:
    """A new read-only loop device over ``size`` bytes of ``device`` from ``offset``
    (to its end when ``size`` is None); its /dev path. Raises ToolError."""
    argv = [LOSETUP, "-r", "-f", "--show", "-b", str(sector_size)]
    if offset:
        argv += ["-o", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    return tools.run([*argv, device], timeout=60).stdout.strip()


def detach(loop: str) -> None:
    tools.run([LOSETUP, "-d", loop], check=False, timeout=60)


@contextlib.contextmanager
def read_only(device: str, offset: int = 0, size: int | None = None,
              sector_size: int = 512) -> Iterator[str]:
    """:func:`attach_read_only`, detached at the end."""
    loop = attach_read_only(device, offset, size, sector_size)
    try:
        yield loop
    finally:
        detach(loop)
