"""Fit a restored image to a larger disk.

- GPT: ``sfdisk --relocate gpt-bak-std`` moves the backup header and table
  to the disk's real end, and makes the space up to it usable (an image from
  a smaller disk has them in the middle, and firmware or Windows may then call
  the disk damaged). Always done on a larger target. ``sgdisk -e`` does the
  same, but sleeps a second before asking the kernel to re-read the table
  (gptfdisk's DiskSync); sfdisk is told not to, the restore re-reads it once
  (:func:`toolkit.restore.contents.refresh_partitions`).
- ``--grow``: ``growpart DISK N`` grows the partition that ends last (GPT or
  MBR), then its filesystem, offline where the tool allows it:
  ext2/3/4 with ``e2fsck -f -y`` then ``resize2fs``; NTFS with ``ntfsresize``
  (answers its question with "y"); XFS only mounted (``xfs_growfs -d``), on a
  temporary mount point, with ``nouuid`` (another copy of the same image may be
  mounted: XFS refuses a second filesystem with the same UUID otherwise).
  Other filesystems keep their size (reported).

Every tool here writes the restored disk only while the write gate holds it
(``hold``: :class:`toolkit.disks.gate.WriteHold`, O_EXCL on the whole disk): sfdisk
and growpart get the disk's node, checked just before to lead to the held device
(:meth:`~toolkit.disks.gate.WriteHold.vouch`); e2fsck, resize2fs, ntfsresize and the XFS
mount claim their partition exclusively themselves, which the kernel refuses while the
whole disk is claimed, so the gate lends them that partition
(:meth:`~toolkit.disks.gate.WriteHold.lend`: checked to be a partition of the held disk,
the other partitions claimed meanwhile, the whole disk claimed again afterwards through
the gate's own descriptor). Without a hold only a regular file (an image) is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from toolkit.blockio.blockdev import is_block_device
from toolkit.errors import Refused
from toolkit.restore import contents
from toolkit.system import mount, tools

FILESYSTEMS = "/proc/filesystems"  # read after a failed mount: can this kernel mount XFS?


class FitError(RuntimeError):
    """The disk could not be fitted; a tool's failure is its cause (``__cause__``, a
    ToolError: the tool, its exit status and its last stderr line are in the message)."""


def _run(*cmd: str, input: str | None = None, ok=(0,)) -> str:
    """Run a fitting tool: a failure raises ToolError (an OSError)."""
    return tools.run(cmd, input=input, ok=ok).stdout


def _vouched(path: str, hold) -> str:
    """``path`` for a tool that writes it: checked by the write gate's ``hold`` to lead to
    the held disk; without a hold, only a path that is no block device."""
    if hold is not None:
        try:
            return hold.vouch(path)
        except Refused as e:  # the disk is written already: a failure, not a refusal
            raise FitError(f"the write gate does not vouch for {path}: {e}") from None
    if is_block_device(path):
        raise FitError(f"{path} is a block device: it is written only while the write gate "
                       "holds it")
    return path


@contextlib.contextmanager
def _lent(node: str, hold):
    """The partition ``node`` lent by the write gate's ``hold`` to a tool that claims it
    exclusively (yields the path to give the tool)."""
    if hold is None:
        if is_block_device(node):
            raise FitError(f"{node} is a block device: it is written only while the write "
                           "gate holds its disk")
        yield node
        return
    try:
        with hold.lend(node) as path:
            yield path
    except Refused as e:  # the disk is written already: a failure, not a refusal
        raise FitError(f"the write gate does not lend {node}: {e}") from None


def relocate_gpt_backup(disk: str, hold=None) -> None:
    """The backup GPT header and table to the end of the disk (the caller re-reads it)."""
    _run("sfdisk", "--relocate", "gpt-bak-std", "--no-reread", "--no-tell-kernel",
         _vouched(disk, hold))


def last_partition(disk: str) -> dict | None:
    parts = contents.partitions(disk)
    return max(parts, key=lambda p: p["start"] + p["size"]) if parts else None


def grow_filesystem(node: str, fstype: str | None, hold=None) -> str:
    """Grow the filesystem on ``node`` to its partition; returns what was done."""
    if fstype not in ("ext2", "ext3", "ext4", "ntfs", "xfs"):
        return f"filesystem {fstype or 'unknown'} left at its size (no offline grow tool)"
    with _lent(node, hold) as path:
        if fstype in ("ext2", "ext3", "ext4"):
            _run("e2fsck", "-f", "-y", path, ok=(0, 1))
            _run("resize2fs", path)
            return f"{fstype} grown with resize2fs (after e2fsck -f)"
        if fstype == "ntfs":
            _run("ntfsresize", "--force", path, input="y\n")
            return "NTFS grown with ntfsresize (Windows runs chkdsk at its next boot)"
        grow_xfs(path)
        return "XFS grown with xfs_growfs (mounted for the purpose)"


def grow_xfs(node: str) -> None:
    """Mount ``node`` on a temporary directory, ``xfs_growfs -d``, unmount."""
    mnt = tempfile.mkdtemp(prefix="rtk-xfs-")
    try:
        mark = _kernel_log()[-1:]  # the kernel's last line before mounting
        try:
            mount.mount(node, mnt, fstype="xfs", options=("nouuid",))
        except tools.ToolNotInstalled:
            raise
        except tools.ToolError as e:
            raise FitError(_xfs_mount_error(node, str(e), _kernel_log_since(mark))) from e
        try:
            _run("xfs_growfs", "-d", mnt)
        finally:
            try:
                mount.umount(mnt)
            except tools.ToolError as e:
                raise FitError(f"{node} is still mounted on {mnt} ({e}): unmount it before "
                               "using the disk") from e
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mnt)  # never a recursive removal: a mount point still mounted keeps its files


def _xfs_mount_error(node: str, said: str, log: list[str]) -> str:
    """Why the XFS could not be mounted (xfs_growfs works only on a mounted filesystem).
    ``said``: mount's message; ``log``: the kernel's lines since (its own reason), e.g.
    ``[ 36.12] XFS (sdb2): Superblock has unknown incompatible features (0x80000000) enabled.``
    """
    later = "grow it with xfs_growfs once the restored system has booted"
    if not _kernel_has("xfs"):
        return (f"this kernel cannot mount XFS (no xfs in {FILESYSTEMS}: the module is "
                f"missing), and xfs_growfs works only on a mounted filesystem: {later}")
    tag = f"XFS ({os.path.basename(node)}): "
    kernel = [line.split(tag, 1)[1] for line in log if tag in line][:3]
    return (f"mounting the XFS filesystem on {node} failed ({said}"
            f"{'; kernel: ' + ' / '.join(kernel) if kernel else ''}), and xfs_growfs works "
            f"only on a mounted filesystem: {later}")


def _kernel_has(fstype: str) -> bool:
    """``fstype`` in /proc/filesystems (read after mount has tried to load the module)."""
    try:
        with open(FILESYSTEMS) as f:
            return fstype in {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return True  # unknown: say what mount said


def _kernel_log() -> list[str]:
    try:
        return tools.run(["dmesg"], check=False, timeout=30).stdout.splitlines()
    except tools.ToolError:
        return []


def _kernel_log_since(mark: list[str]) -> list[str]:
    """The kernel's lines after ``mark`` (timestamped, so unique; the ring buffer may
    have dropped its oldest lines meanwhile, so no counting)."""
    log = _kernel_log()
    return log[log.index(mark[0]) + 1:] if mark and mark[0] in log else log


def fit(disk: str, *, image_size: int, disk_size: int, grow: bool, hold=None) -> list[str]:
    """Relocate the GPT backup and optionally grow the last partition; the steps done.
    ``hold``: the write gate's hold of ``disk`` (needed for a block device)."""
    steps: list[str] = []
    table = contents.table_type(disk)
    if disk_size > image_size and table == "gpt":
        relocate_gpt_backup(disk, hold)
        steps.append("backup GPT moved to the end of the disk (sfdisk --relocate)")
    if not grow:
        return steps
    if disk_size <= image_size:
        steps.append("nothing to grow: the disk is not larger than the image")
        return steps
    last = last_partition(disk)
    if last is None:
        steps.append("nothing to grow: no partition")
        return steps
    p = tools.run(["growpart", _vouched(disk, hold), str(last["number"])], check=False)
    if p.returncode == 1 and "NOCHANGE" in p.stdout:
        steps.append(f"partition {last['number']} already fills the disk")
    elif p.returncode:
        e = tools.failure(p.args, p.returncode, p.stderr, stdout=p.stdout)
        raise FitError(f"growing partition {last['number']} of {disk} failed: {e}") from e
    else:
        steps.append(f"partition {last['number']} grown: {p.stdout.strip()}")
    contents.refresh_partitions(disk)
    node = last["node"]
    if not os.path.exists(node):
        raise FitError(f"{node} did not appear after growing partition {last['number']}")
    try:
        steps.append(grow_filesystem(node, contents.filesystem(node).get("fstype"), hold))
    except (FitError, tools.ToolError) as e:
        raise FitError(f"partition {last['number']} fills the disk now, its filesystem does "
                       f"not: {e}") from e
    return steps
