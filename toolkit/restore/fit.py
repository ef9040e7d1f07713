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
  Other filesystems keep their size (reported). An encrypted last partition
  (BitLocker, LUKS: its first bytes, :func:`toolkit.restore.layout.encryption`) and a
  BIOS boot partition are not touched at all: restored as is, not resized (reported).
- A GPT's protective MBR keeps the boot flag the image gave it
  (:func:`keep_protective_mbr`): sfdisk and growpart clear it, and some BIOSes boot a
  GPT disk only with it; its boot code and the BIOS boot partition stay as they were.

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

from toolkit.blockio import blockdev
from toolkit.blockio.blockdev import is_block_device
from toolkit.errors import Refused
from toolkit.restore import contents, detect, layout
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


def read_at(disk: str, offset: int, n: int, hold=None) -> bytes:
    """``n`` bytes of ``disk`` at ``offset``: through the write gate's O_DIRECT descriptor
    when it holds the disk (the device's bytes, not a page cache of what it held before)."""
    if hold is None:
        with open(disk, "rb") as f:
            return os.pread(f.fileno(), n, offset)
    sector = blockdev.logical_sector_size(hold.fd)
    start = offset // sector * sector
    length = -(-(offset + n - start) // sector) * sector
    buf = blockdev.AlignedBuffer(length)
    try:
        blockdev.read_exact(hold.fd, buf.view[:length], start)
        return bytes(buf.mem[offset - start:offset - start + n])
    finally:
        buf.close()


def keep_protective_mbr(disk: str, before: bytes, hold=None) -> list[str]:
    """A GPT's protective MBR as the image had it (``before``: its first sector). sfdisk and
    growpart rewrite it: they keep its boot code but clear its boot flag, which some BIOSes
    need to boot a GPT disk (they pass over a disk without an active partition); growpart
    also replaces a hybrid MBR by a plain protective one (sfdisk --relocate keeps it). The
    flag is set again (``sfdisk --activate DISK 1``, which on a GPT disk marks the
    protective entry); a hybrid MBR that was replaced is said."""
    after = read_at(disk, 0, 512, hold)
    if after == before:
        return []
    was, now = detect.mbr_entries(before), detect.mbr_entries(after)
    steps = []
    hybrid = [e for e in was if e.type != "0xee"]
    if hybrid and not any(e.type != "0xee" for e in now):
        numbers = ", ".join(str(e.number) for e in hybrid)
        steps.append(f"the image's hybrid MBR (MBR entries {numbers} besides the protective "
                     "one) was replaced by a protective MBR when the "
                     "partition was grown: recreate it (gdisk: r, h) if this machine "
                     "boots through it")
    if any(e.type == "0xee" and e.active for e in was) and not any(e.active for e in now):
        _run("sfdisk", "--activate", "--no-reread", "--no-tell-kernel", _vouched(disk, hold),
             "1")
        steps.append("the protective MBR's boot flag set again, as the image had it (sfdisk "
                     "and growpart clear it; some BIOSes boot a GPT disk only with it)")
    return steps


def _not_grown(disk: str, last: dict, hold) -> str | None:
    """Why the last partition is left as it is: the BIOS boot partition (GRUB's core, no
    filesystem), or an encrypted volume (BitLocker, LUKS: never resized here)."""
    n = last["number"]
    if last["type"] == layout.BIOS_BOOT_GUID:
        return f"partition {n} is the BIOS boot partition: not grown"
    try:
        kind = layout.encryption(read_at(disk, last["start"], 4096, hold))
    except OSError as e:
        raise FitError(f"cannot read partition {n} of {disk}: {e}") from e
    if kind:
        return (f"partition {n}: {kind}: restored as is, not resized (the grow step leaves an "
                "encrypted volume and its partition as they are; grow it from the restored "
                "system once it is unlocked)")
    return None


def grow_last(disk: str, hold=None) -> list[str]:
    """Grow the partition that ends last, then its filesystem; the steps done."""
    last = last_partition(disk)
    if last is None:
        return ["nothing to grow: no partition"]
    why = _not_grown(disk, last, hold)
    if why:
        return [why]
    steps = []
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


def fit(disk: str, *, image_size: int, disk_size: int, grow: bool, hold=None) -> list[str]:
    """Relocate the GPT backup and optionally grow the last partition; the steps done.
    A GPT's protective MBR keeps its boot flag (:func:`keep_protective_mbr`). ``hold``:
    the write gate's hold of ``disk`` (needed for a block device)."""
    steps: list[str] = []
    table = contents.table_type(disk)
    pmbr = read_at(disk, 0, 512, hold) if table == "gpt" else None
    try:
        if disk_size > image_size and table == "gpt":
            relocate_gpt_backup(disk, hold)
            steps.append("backup GPT moved to the end of the disk (sfdisk --relocate)")
        if grow and disk_size <= image_size:
            steps.append("nothing to grow: the disk is not larger than the image")
        elif grow:
            steps += grow_last(disk, hold)
    except (FitError, tools.ToolError):
        if pmbr is not None:  # the flag still, before the failure is told
            with contextlib.suppress(FitError, OSError, Refused):
                keep_protective_mbr(disk, pmbr, hold)
        raise
    if pmbr is not None:
        steps += keep_protective_mbr(disk, pmbr, hold)
    return steps
