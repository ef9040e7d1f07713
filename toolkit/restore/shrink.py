"""Restoring onto a disk smaller than the image (the plan: :mod:`toolkit.restore.shrink_plan`).

Nothing here writes the image or the target. :func:`prepared` makes what the restore
then streams onto the target like any raw image, verified and with its first MiB last
(:func:`toolkit.restore.engine.restore`):

1. a qcow2 overlay over the image in the temporary directory
   (:func:`toolkit.system.qsd.create_overlay`): every change below goes there;
2. each partition that shrinks, exported alone as a writable file
   (:func:`toolkit.system.qsd.exported`): NTFS with ``ntfsresize -s``, ext2/3/4 with
   ``e2fsck -f -y`` then ``resize2fs``; then checked at its new size (``ntfsfix -n``,
   ``e2fsck -fn``): a shrink that does not check clean stops the restore before the
   target is touched;
3. an NTFS or FAT that moves gets its boot sector's "hidden sectors" (its own start,
   which its boot code reads) set to its new start, in the boot sector and its backup;
4. the new partition table in a sparse file of the target's size: the image's bytes
   before its first partition (boot code, a boot loader in the gap), then the image's
   own table with only the places changed (:mod:`toolkit.restore.shrink_table`: disk
   GUID or signature, partition GUIDs, types, names, attributes, boot flags kept, the
   backup GPT at the end, any sector size);
5. :class:`Composed`: the disk as it must be written, read in order: the table file,
   with each partition's bytes (at its new size) read from the overlay.

The verification of the restore then compares the target with exactly that: the
shrunk overlay at the new layout.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import stat
import struct
import tempfile
from collections.abc import Iterator

from toolkit.restore import fit, shrink_table
from toolkit.restore.shrink_plan import Part, ShrinkPlan, file_identity
from toolkit.restore.write import Failed
from toolkit.system import qsd, tools
from toolkit.units import human_size


def _ours(path: str) -> str:
    """``path`` for a tool that writes it: never a block device (the target is written
    only through the write gate); here only our own overlay's exports and table file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise fit.FitError(f"{path} is not a regular file: the shrinking writes only its own "
                           "overlay")
    return path


def shrink_filesystem(path: str, part: Part) -> str:
    """Shrink the filesystem in ``path`` (the partition's bytes) to ``part.new_size``."""
    sectors = part.new_size // 512
    path = _ours(path)
    if part.fstype == "ntfs":
        tools.run(["ntfsresize", "--force", "--no-progress-bar", "-s", str(part.new_size),
                   path], input="y\n")
        return "ntfsresize"
    fsck = tools.run(["e2fsck", "-f", "-y", path], ok=(0, 1))
    tools.run(["resize2fs", path, f"{sectors}s"])
    if fsck.returncode == 1:  # it replayed the journal or corrected errors: say what
        said = [ln.strip() for ln in fsck.stdout.splitlines()
                if ln.strip() and not ln.startswith(("Pass ", "e2fsck "))][-6:]
        return ("e2fsck -f -y CHANGED the filesystem on the overlay (journal replayed or "
                "errors corrected; the image is unchanged): " + " / ".join(said) +
                "; then resize2fs")
    return "e2fsck -f, resize2fs"


def check_filesystem(path: str, fstype: str) -> str:
    """Check the filesystem in ``path`` without changing it; what was run. Raises
    ToolError when it is not clean."""
    path = _ours(path)
    if fstype == "ntfs":
        tools.run(["ntfsfix", "-n", path])
        return "ntfsfix -n: clean"
    tools.run(["e2fsck", "-fn", path])
    return "e2fsck -fn: clean"


def set_hidden_sectors(path: str, new_start: int, sector: int) -> bool:
    """A boot sector's hidden sectors (byte 0x1C: where the volume starts, in sectors,
    which its own boot code reads: NTFS, FAT12/16/32 alike) set to ``new_start``, in the
    boot sector and in its backup (NTFS: the volume's last sector; FAT32: the sector its
    BPB names). False when ``path`` holds neither."""
    value = struct.pack("<I", new_start // sector)
    fd = os.open(_ours(path), os.O_RDWR | os.O_NOFOLLOW)
    try:
        boot = os.pread(fd, 512, 0)
        if boot[3:11] == b"NTFS    ":
            backups = [os.fstat(fd).st_size - sector]
        elif boot[510:512] == b"\x55\xaa" and (boot[54:59] in (b"FAT12", b"FAT16")
                                               or boot[82:87] == b"FAT32"):
            bps = struct.unpack_from("<H", boot, 11)[0]
            backups = [struct.unpack_from("<H", boot, 50)[0] * bps] \
                if boot[82:87] == b"FAT32" else []
        else:
            return False
        for at in (0, *[b for b in backups if b > 0]):
            if os.pread(fd, 2, at + 510) == b"\x55\xaa" or at == 0:
                os.pwrite(fd, value, at + 0x1C)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


class Composed:
    """The smaller disk's bytes in order: ``table`` (a file of the disk's size) with each
    partition's new range read from ``view`` (the overlay, as a file) at its old start."""

    def __init__(self, table: str, view: str, sp: ShrinkPlan):
        self.size, self.pos = sp.size, 0
        self.table, self.view = os.open(table, os.O_RDONLY), os.open(view, os.O_RDONLY)
        # (start, end, source offset) of each partition on the new disk
        self.extents = sorted((p.new_start, p.new_start + p.new_size, p.start)
                              for p in sp.parts)

    def _piece(self, n: int) -> tuple[int, int, int]:
        """(fd, offset, length) of the next bytes from ``self.pos``, at most ``n``."""
        for start, end, src in self.extents:
            if start <= self.pos < end:
                return self.view, src + self.pos - start, min(n, end - self.pos)
            if self.pos < start:
                return self.table, self.pos, min(n, start - self.pos)
        return self.table, self.pos, min(n, self.size - self.pos)

    def read(self, n: int = 1 << 20) -> bytes:
        out = bytearray()
        while len(out) < n and self.pos < self.size:
            fd, at, length = self._piece(n - len(out))
            data = os.pread(fd, length, at)
            if len(data) != length:
                raise OSError(f"short read at byte {at} of the shrunk image")
            out += data
            self.pos += length
        return bytes(out)

    def close(self) -> None:
        for fd in (self.table, self.view):
            with contextlib.suppress(OSError):
                os.close(fd)


def _shrink_parts(overlay: str, sp: ShrinkPlan, work: str, reporter, cancel) -> list[str]:
    """Shrink, check and (NTFS) re-point each partition in the overlay; what was done."""
    done, moved = [], 0
    reporter.start("shrink", max(sum(p.size for p in sp.shrunk), 1))
    for p in sp.parts:
        if cancel.is_set():
            raise Failed("cancelled while shrinking: nothing was written", "cancelled")
        if p.action == "shrunk":
            with qsd.exported(overlay, "qcow2", [qsd.Range(p.start, p.size)], writable=True,
                              workdir=work) as (path,):
                how = shrink_filesystem(path, p)
        if p.fstype in ("ntfs", "vfat") and p.new_start != p.start:
            with qsd.exported(overlay, "qcow2", [qsd.Range(p.start, p.new_size)],
                              writable=True, workdir=work) as (path,):
                if set_hidden_sectors(path, p.new_start, sp.sector):
                    done.append(f"{p.what}: its boot sector's hidden sectors set to its new "
                                f"start (sector {p.new_start // sp.sector})")
        if p.action == "shrunk":
            with qsd.exported(overlay, "qcow2", [qsd.Range(p.start, p.new_size)],
                              workdir=work) as (path,):
                checked = check_filesystem(path, p.fstype)
            done.append(f"{p.what}: shrunk from {human_size(p.size)} to "
                        f"{human_size(p.new_size)} ({how}; {checked})")
            moved += p.size
            reporter.update(moved)
    return done


def unchanged(image: str, sp: ShrinkPlan) -> None:
    """Raise :class:`Failed` when a file the image is read from (itself, a container's
    backing chain) was written since the plan read it (its SHA-256, checked before
    writing, would then not be the bytes restored)."""
    for path, was in sp.files.items():
        try:
            now = file_identity(os.stat(path))
        except OSError as e:
            now = str(e)
        if now != was:
            what = "the image" if path == image else f"the image's backing file {path}"
            raise Failed(f"{what} changed while {image} was restored (its size or times are "
                         "not those it had when it was checked): its first MiB was not "
                         "written (no partition table: the disk does not look valid)",
                         "mismatch")


PREFIX = "rtk-shrink-"


def remove_stale(tmpdir: str) -> list[str]:
    """Work directories of restores that were killed (their owner process is gone): their
    overlay would stay in the temporary directory (RAM in the live system) for ever."""
    gone = []
    for d in glob.glob(os.path.join(tmpdir, PREFIX + "*")):
        try:
            with open(os.path.join(d, "owner")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue  # not one of ours, or still being made
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}") and not _has_mounts(d):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _has_mounts(d: str) -> bool:
    real = os.path.realpath(d) + "/"
    with open("/proc/self/mounts") as f:
        return any(len(p := line.split()) > 1 and p[1].startswith(real) for line in f)


@contextlib.contextmanager
def prepared(image: str, fmt: str, sp: ShrinkPlan, reporter, cancel) -> Iterator[Composed]:
    """The smaller disk as a :class:`Composed` stream; its ``done``: what was shrunk.
    Raises :class:`~toolkit.restore.write.Failed` ("nothing was written") when a tool
    fails: the target has not been touched yet."""
    remove_stale(sp.tmpdir or tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix=PREFIX, dir=sp.tmpdir or None) as work, \
            contextlib.ExitStack() as stack:
        with open(os.path.join(work, "owner"), "w") as f:
            f.write(f"{os.getpid()}\n")
        overlay = os.path.join(work, "overlay.qcow2")
        try:
            qsd.create_overlay(image, fmt, overlay)
            done = _shrink_parts(overlay, sp, work, reporter, cancel)
            (view,) = stack.enter_context(qsd.exported(overlay, "qcow2", workdir=work))
            table = os.path.join(work, "table.img")
            done += shrink_table.write_table(view, sp, table)
            src = Composed(table, view, sp)
        except (tools.ToolError, fit.FitError, OSError, ValueError) as e:
            raise Failed(f"fitting the image to the smaller disk failed: {e}; nothing was "
                         "written") from None
        stack.callback(src.close)
        src.done = done
        yield src
