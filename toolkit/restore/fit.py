"""Fit a restored image to a larger disk.

- GPT: ``sgdisk -e`` moves the backup header and table to the disk's real
  end (an image from a smaller disk has them in the middle, and firmware or
  Windows may then call the disk damaged). Always done on a larger target.
- ``--grow``: ``growpart DISK N`` grows the partition that ends last (GPT or
  MBR), then its filesystem, offline where the tool allows it:
  ext2/3/4 with ``e2fsck -f -y`` then ``resize2fs``; NTFS with ``ntfsresize``
  (answers its question with "y"); XFS only mounted (``xfs_growfs``), on a
  temporary mount point. Other filesystems keep their size (reported).
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from toolkit.restore import contents


class FitError(RuntimeError):
    pass


def _run(*cmd: str, input: str | None = None, ok=(0,)) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if p.returncode not in ok:
        raise FitError(f"{' '.join(cmd)} failed ({p.returncode}): "
                       f"{(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def relocate_gpt_backup(disk: str) -> None:
    """``sgdisk -e``: the backup GPT header and table to the end of the disk."""
    _run("sgdisk", "-e", disk)


def last_partition(disk: str) -> dict | None:
    parts = contents.partitions(disk)
    return max(parts, key=lambda p: p["start"] + p["size"]) if parts else None


def grow_filesystem(node: str, fstype: str | None) -> str:
    """Grow the filesystem on ``node`` to its partition; returns what was done."""
    if fstype in ("ext2", "ext3", "ext4"):
        _run("e2fsck", "-f", "-y", node, ok=(0, 1))
        _run("resize2fs", node)
        return f"{fstype} grown with resize2fs (after e2fsck -f)"
    if fstype == "ntfs":
        _run("ntfsresize", "--force", node, input="y\n")
        return "NTFS grown with ntfsresize (Windows runs chkdsk at its next boot)"
    if fstype == "xfs":
        with tempfile.TemporaryDirectory(prefix="rtk-xfs-") as mnt:
            _run("mount", "-t", "xfs", node, mnt)
            try:
                _run("xfs_growfs", mnt)
            finally:
                _run("umount", mnt)
        return "XFS grown with xfs_growfs (mounted for the purpose)"
    return f"filesystem {fstype or 'unknown'} left at its size (no offline grow tool)"


def fit(disk: str, *, image_size: int, disk_size: int, grow: bool) -> list[str]:
    """Relocate the GPT backup and optionally grow the last partition; the steps done."""
    steps: list[str] = []
    table = contents.table_type(disk)
    if disk_size > image_size and table == "gpt":
        relocate_gpt_backup(disk)
        steps.append("backup GPT moved to the end of the disk (sgdisk -e)")
    if not grow:
        return steps
    if disk_size <= image_size:
        steps.append("nothing to grow: the disk is not larger than the image")
        return steps
    last = last_partition(disk)
    if last is None:
        steps.append("nothing to grow: no partition")
        return steps
    p = subprocess.run(["growpart", disk, str(last["number"])], capture_output=True, text=True)
    if p.returncode == 1 and "NOCHANGE" in p.stdout:
        steps.append(f"partition {last['number']} already fills the disk")
    elif p.returncode:
        raise FitError(f"growpart {disk} {last['number']} failed: {(p.stderr or p.stdout)[-400:]}")
    else:
        steps.append(f"partition {last['number']} grown: {p.stdout.strip()}")
    contents.refresh_partitions(disk)
    node = last["node"]
    if not os.path.exists(node):
        raise FitError(f"{node} did not appear after growing partition {last['number']}")
    steps.append(grow_filesystem(node, contents.filesystem(node).get("fstype")))
    return steps
