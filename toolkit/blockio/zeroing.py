"""Freeing a target's blocks so that they read back zeros (a copy of a domain: the blocks
outside it), where the device guarantees it; decided conservatively from what the kernel
says of the device in sysfs (:func:`frees_to_zeros`), done with
:func:`toolkit.blockio.blockdev.punch_zeros` (a write-zeroes request that may deallocate
and never writes the zeros itself: it fails where the device cannot).

- A loop device (or a partition of one) over a regular file: the loop driver punches a
  hole in the file (its filesystem reads zeros there), when it offers write-zeroes at all
  (``queue/write_zeroes_max_bytes`` above 0). A filesystem that cannot punch holes fails
  the request: the blocks are then left as they are.
- A SCSI disk (an iSCSI LUN, a SAN LUN, or a partition of one) that the kernel found
  thin-provisioned (``thin_provisioning`` 1) and whose zeroing is WRITE SAME with the UNMAP
  bit (``zeroing_mode`` ``writesame_16_unmap`` or ``writesame_10_unmap``: the kernel
  chooses that only for a LUN that reported LBPRZ, unmapped blocks read as zeros, with
  UNMAP through WRITE SAME).
- Anything else (a thick LUN, which would write the zeros one by one; NVMe, virtio, USB,
  device-mapper, a loop device over a device): no.

The old ``queue/discard_zeroes_data`` is gone from current kernels (always 0), and a
plain discard (BLKDISCARD, SCSI UNMAP) may leave blocks as they were: neither is trusted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SYS_BLOCK = Path("/sys/class/block")
UNMAP_MODES = ("writesame_16_unmap", "writesame_10_unmap")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _disk(name: str, sys_block: Path) -> str:
    """The whole disk of ``name`` (itself, or a partition's parent)."""
    d = sys_block / name
    return d.resolve().parent.name if (d / "partition").exists() else name


def frees_to_zeros(node: str, sys_block: Path = SYS_BLOCK) -> str | None:
    """How the device at ``node`` (/dev/NAME) frees blocks that then read back zeros, in
    words for the report; None when it is not known to (left as they are)."""
    disk = _disk(os.path.basename(os.path.realpath(node)), sys_block)
    queue = sys_block / disk / "queue"
    if disk.startswith("loop"):
        backing = _read(sys_block / disk / "loop" / "backing_file")
        if not backing or backing.endswith("(deleted)"):
            return None
        try:
            regular = stat.S_ISREG(os.stat(backing).st_mode)
        except OSError:
            return None
        if not regular or int(_read(queue / "write_zeroes_max_bytes") or 0) <= 0:
            return None
        return "a loop device over a file: holes punched in the file, which read as zeros"
    for d in (sys_block / disk / "device" / "scsi_disk").glob("*"):
        mode = _read(d / "zeroing_mode")
        if _read(d / "thin_provisioning") == "1" and mode in UNMAP_MODES:
            return (f"a thin-provisioned LUN whose unmapped blocks read as zeros (LBPRZ): "
                    f"unmapped with WRITE SAME ({mode})")
    return None
