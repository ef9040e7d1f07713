"""Every physical thing a path stands for: the write gate's resolution.

:func:`footprint` follows a path (or an open descriptor) down to what holds its bytes,
from the kernel's own records (sysfs, the loop driver, /proc/self/mountinfo), never
from names alone:

- a symlink to what it leads to, a device node by its major:minor (a second ``mknod``
  node of a disk is that disk);
- a partition to the byte range of its whole disk (``start``, ``size`` in sysfs);
- a loop device to its backing file or device (LOOP_GET_STATUS64: device and inode,
  as losetup does; sysfs ``loop/offset``) at its offset, recursively (a loop over a
  partition of a loop over a file...);
- a device-mapper or RAID device to every device under it (``slaves/``, all of each);
- a regular file to itself (device and inode: a hard link or another name is the same
  file) and to the filesystem's device(s) it lives on (``st_dev`` to
  ``/sys/dev/block/MAJ:MIN``; for btrfs, overlayfs and other filesystems without a
  block device number, the mount's source device and layers), recursively;
- a whole disk also to its serial and WWN (the same LUN under another path).

The result is a list of :class:`Piece`: byte ranges of devices and files, each with the
words that say how the path reaches it. :func:`collision` says whether writing one
footprint destroys what another one reads. A file's blocks lie somewhere in its
filesystem's device: a piece reached through a file is ``inside`` (the whole device's
range, but only the file's blocks in it), and two ``inside`` pieces never collide (a
filesystem keeps two files apart); a raw range meets anything on the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.disks.filesystems import FilesystemView, overlay_layers, unescape
from toolkit.disks.sysfs import (
    LOOP_GET_STATUS64,
    MAX_DEPTH,
    SysfsView,
    Unresolvable,
    dev_key,
    parse_devno,
)

__all__ = ["LOOP_GET_STATUS64", "MAX_DEPTH", "Collision", "FilesystemView", "Footprint",
           "Piece", "Resolver", "SysfsView", "Unresolvable", "collision", "dev_key",
           "footprint", "overlay_layers", "parse_devno", "unescape"]


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of one device or file that an end reads or writes.

    ``key``: ``dev:MAJ:MIN`` or ``file:DEV:INO``; ``names``: what else names the same
    medium (``serial:X``, ``wwn:Y`` of a whole disk); ``what``: the device node or the
    file's path; ``inside``: set (the file's path) when only a file's blocks somewhere
    in this range are meant; ``trail``: how the end reaches it, in plain words."""

    key: str
    start: int
    end: int
    what: str
    names: frozenset[str] = frozenset()
    inside: str | None = None
    trail: tuple[str, ...] = ()

    def same_object(self, other: Piece) -> bool:
        return self.key == other.key or bool(self.names & other.names)

    def bytes_text(self) -> str:
        return f"bytes {self.start}-{self.end}"


@dataclass
class Footprint:
    """What one path stands for: ``pieces``, the first being the path's own device or
    file. ``rdev`` for a block device, ``inode`` ``(st_dev, st_ino)`` for a file."""

    given: str
    pieces: list[Piece] = field(default_factory=list)
    rdev: int | None = None
    inode: tuple[int, int] | None = None

    @property
    def node(self) -> str:
        return self.pieces[0].what if self.pieces else self.given

    def keys(self) -> set[tuple[str, int, int, str | None]]:
        return {(p.key, p.start, p.end, p.inside) for p in self.pieces}


@dataclass
class Collision:
    """Writing ``target`` (its piece ``ours``) reaches what the input reads (``theirs``)."""

    ours: Piece
    theirs: Piece

    def words(self) -> str:
        """How both ends reach the same bytes, in plain words."""
        a, b = self.theirs, self.ours
        said = list(dict.fromkeys([*a.trail, *b.trail]))
        same = ("the same disk by its " + ", ".join(sorted(n.split(":")[0] for n in
                                                          a.names & b.names))
                if a.key != b.key else a.what)
        where = a.bytes_text() if (a.start, a.end) == (b.start, b.end) else (
            f"{a.bytes_text()} and {b.bytes_text()}")
        tail = f"both reach {same} ({where})"
        inside = a.inside or b.inside
        if inside:
            tail += f", where the file {inside} lies"
        return "; ".join([*said, tail])


def collision(target: Footprint, source: Footprint, *, raw_only: bool = False
              ) -> Collision | None:
    """The first place where writing ``target`` reaches bytes that ``source`` stands
    for (None: they are apart). A raw range meets any range of the same object that it
    overlaps; two ``inside`` ranges (two files' blocks in one filesystem) never meet.
    ``raw_only``: only the target's raw ranges count (``source`` is a device in use: a
    file on its filesystem may be written, its bytes may not)."""
    for theirs in source.pieces:
        for ours in target.pieces:
            if not ours.same_object(theirs):
                continue
            if ours.inside is not None and (raw_only or theirs.inside is not None):
                continue
            if ours.start < theirs.end and theirs.start < ours.end:
                return Collision(ours, theirs)
    return None


class Resolver(FilesystemView):
    """Resolution against a system's sysfs, /dev and mount table (roots for tests).

    ``names_of(kernel_name)``: more names of a whole disk (the inventory's serial and
    WWN from udev), besides those sysfs gives. Sysfs and loop devices:
    :class:`~toolkit.disks.sysfs.SysfsView`; filesystems, mounts, overlay layers:
    :class:`~toolkit.disks.filesystems.FilesystemView`."""

    def footprint(self, path: str | None = None, *, fd: int | None = None,
                  label: str | None = None) -> Footprint:
        """What ``path`` (or the open ``fd``) stands for. Raises :class:`Unresolvable`
        (or OSError for a path that does not exist)."""
        st = os.fstat(fd) if fd is not None else os.stat(path)
        given = label or path or f"descriptor {fd}"
        fp = Footprint(given)
        if stat.S_ISBLK(st.st_mode):
            fp.rdev = st.st_rdev
            trail = []
            name = self.kernel_name(st.st_rdev)
            node = os.path.join(self.dev, name) if name else given
            if path is not None:
                real = os.path.realpath(path)
                if real != path and os.path.islink(path):
                    trail.append(f"{path} is a link to {real}")
                if real != node:
                    trail.append(f"{real} is a device node of {node} "
                                 f"({os.major(st.st_rdev)}:{os.minor(st.st_rdev)})")
            self._device(st.st_rdev, 0, None, None, tuple(trail), fp.pieces, 0)
        elif stat.S_ISREG(st.st_mode):
            fp.inode = (st.st_dev, st.st_ino)
            trail = []
            if path is not None and os.path.islink(path):
                trail.append(f"{path} is a link to {os.path.realpath(path)}")
            self._file(st.st_dev, st.st_ino, 0, st.st_size, path or given, tuple(trail),
                       None, fp.pieces, 0)
        else:
            raise Unresolvable(f"{given} is neither a block device nor a regular file")
        return fp

    def device_footprint(self, rdev: int, label: str | None = None) -> Footprint:
        """What the block device ``rdev`` stands for (no path involved)."""
        fp = Footprint(label or dev_key(rdev), rdev=rdev)
        self._device(rdev, 0, None, None, (), fp.pieces, 0)
        return fp

    def _device(self, rdev: int, start: int, end: int | None, inside: str | None,
                trail: tuple[str, ...], out: list[Piece], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Unresolvable("a chain of more than 32 devices and files: not followed")
        sysdir = self.sysdir(rdev)
        if sysdir is None:
            raise Unresolvable(f"the device {os.major(rdev)}:{os.minor(rdev)} is not in "
                               "sysfs (a stale device node?)")
        name = os.path.basename(sysdir)
        node = os.path.join(self.dev, name)
        size = self.size(sysdir)
        end = size if end is None else end
        partition = self.read(os.path.join(sysdir, "partition"))
        out.append(Piece(dev_key(rdev), start, end, node,
                         frozenset() if partition else self.disk_names(sysdir), inside, trail))
        if partition:
            parent = os.path.dirname(sysdir)
            pdev = self.read(os.path.join(parent, "dev"))
            pstart = int(self.read(os.path.join(sysdir, "start")) or 0) * 512
            if pdev:
                pnode = os.path.join(self.dev, os.path.basename(parent))
                said = (f"{node} is partition {partition} of {pnode} (bytes {pstart}-"
                        f"{pstart + size})")
                self._device(parse_devno(pdev), pstart + start, pstart + end, inside,
                             (*trail, said), out, depth + 1)
        backing = self.loop_backing(name, sysdir) if os.path.isdir(
            os.path.join(sysdir, "loop")) else None
        if backing is not None:
            path, offset, lo_dev, ident = backing
            at = f" at byte {offset}" if offset else ""
            if lo_dev == -1:  # over a block device
                bnode = self.kernel_name(ident)
                what = os.path.join(self.dev, bnode) if bnode else path
                self._device(ident, offset + start, offset + end, inside,
                             (*trail, f"{node} is a loop device over {what}{at}"), out,
                             depth + 1)
            else:
                self._file(lo_dev, ident, offset + start, offset + end, path,
                           (*trail, f"{node} is a loop device over the file {path}{at}"),
                           inside, out, depth + 1)
        with contextlib.suppress(OSError):
            for slave in sorted(os.listdir(os.path.join(sysdir, "slaves"))):
                sdir = os.path.join(self.sys, "class", "block", slave)
                sdev = self.read(os.path.join(sdir, "dev"))
                if sdev:
                    self._device(parse_devno(sdev), 0, None, inside,
                                 (*trail, f"{node} is built on {os.path.join(self.dev, slave)}"),
                                 out, depth + 1)

    def _file(self, st_dev: int, st_ino: int, start: int, end: int, path: str,
              trail: tuple[str, ...], inside: str | None, out: list[Piece], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Unresolvable("a chain of more than 32 devices and files: not followed")
        key = f"file:{os.major(st_dev)}:{os.minor(st_dev)}:{st_ino}"
        out.append(Piece(key, start, end, f"the file {path}", frozenset(), inside, trail))
        for dev, how in self.fs_devices(st_dev, None if path.startswith("descriptor ")
                                        else path, st_ino, depth):
            name = self.kernel_name(dev)
            node = os.path.join(self.dev, name) if name else dev_key(dev)
            said = f"{path} is a file on {node}" + (f" ({how})" if how else "")
            self._device(dev, 0, None, inside or path, (*trail, said), out, depth + 1)


def footprint(path: str | None = None, *, fd: int | None = None,
              names_of: Callable[[str], frozenset[str]] | None = None) -> Footprint:
    """:meth:`Resolver.footprint` on this system."""
    return Resolver(names_of=names_of).footprint(path, fd=fd)
