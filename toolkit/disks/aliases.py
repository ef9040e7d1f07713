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
import fcntl
import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")  # struct loop_info64 (<linux/loop.h>)
MAX_DEPTH = 32  # loops over loops over files...: deeper is refused, not followed


class Unresolvable(Exception):
    """The path cannot be followed to what holds its bytes (then nothing may be written
    onto or from it on the strength of a resolution)."""


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


def _devno(text: str) -> int:
    major, minor = text.strip().split(":")
    return os.makedev(int(major), int(minor))


def _dev_key(rdev: int) -> str:
    return f"dev:{os.major(rdev)}:{os.minor(rdev)}"


class Resolver:
    """Resolution against a system's sysfs, /dev and mount table (roots for tests).

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
        return _devno(text)

    def node(self, rdev: int) -> str:
        """The kernel's node of ``rdev`` (/dev/NAME), or ``MAJ:MIN`` when not in sysfs."""
        name = self.kernel_name(rdev)
        return os.path.join(self.dev, name) if name else f"{os.major(rdev)}:{os.minor(rdev)}"

    # --- sysfs --------------------------------------------------------------------------
    def _read(self, path: str) -> str | None:
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
        return int(self._read(os.path.join(sysdir, "size")) or 0) * 512

    def disk_names(self, sysdir: str) -> frozenset[str]:
        name = os.path.basename(sysdir)
        names = set(self.names_of(name))
        for attr, kind in (("wwid", "wwn"), ("device/wwid", "wwn"), ("serial", "serial"),
                           ("device/serial", "serial")):
            value = self._read(os.path.join(sysdir, attr))
            if value:
                names.add(f"{kind}:{value}")
        return frozenset(names)

    def loop_backing(self, name: str, sysdir: str) -> tuple[str, int, int, int] | None:
        """``(backing path, offset, lo_device, lo_inode or lo_rdevice)`` of a loop device
        (None: not one, or unbound). A backing device has lo_rdevice set; the identity
        comes from the loop driver when /dev/NAME is this device, else from sysfs."""
        backing = self._read(os.path.join(sysdir, "loop", "backing_file"))
        if backing is None:
            return None
        offset = int(self._read(os.path.join(sysdir, "loop", "offset")) or 0)
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

    # --- mounts -----------------------------------------------------------------------------
    def _mounts(self) -> list[tuple[str, str, str, str, str]]:
        """``(MAJ:MIN, mount point, fstype, source, super options)`` of each mount."""
        try:
            with open(self.mountinfo) as f:
                lines = f.read().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 2:
                continue
            out.append((fields[2], _unescape(fields[4]), rest[0], _unescape(rest[1]),
                        rest[2] if len(rest) > 2 else ""))
        return out

    def _mount_of(self, st_dev: int) -> tuple[str, str, str, str, str] | None:
        want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
        return next((m for m in self._mounts() if m[0] == want), None)

    def fs_devices(self, st_dev: int, path: str | None = None, st_ino: int | None = None,
                   depth: int = 0) -> list[tuple[int, str]]:
        """The block devices a filesystem with device number ``st_dev`` lives on, each
        with how it was found. A block device number is its own; otherwise (btrfs,
        overlayfs, a network or FUSE filesystem: an anonymous number) the mount's
        source device and, for btrfs, its other devices; for overlayfs, the layer that
        holds the file ``path`` (inode ``st_ino``), or all its layers. A number that is
        neither a block device nor in the mount table (an overlay's per-layer number
        whose layer cannot be found) raises :class:`Unresolvable`."""
        if depth > MAX_DEPTH:
            raise Unresolvable("a chain of more than 32 devices and files: not followed")
        if self.sysdir(st_dev):
            return [(st_dev, "")]
        mount = self._mount_of(st_dev)
        if mount is None and path is not None:
            # an overlay gives a lower file a per-layer number of its own: its directory
            # has the overlay's
            with contextlib.suppress(OSError):
                parent = self._mount_of(os.stat(os.path.dirname(os.path.realpath(path)))
                                        .st_dev)
                if parent is not None and parent[2] == "overlay":
                    return self._overlay_layer(parent, path, st_ino, depth)
        if mount is None:
            what = path or "a file"
            raise Unresolvable(f"cannot tell which disk holds {what} (its filesystem "
                               f"{os.major(st_dev)}:{os.minor(st_dev)} is not in the mount "
                               "table)")
        _num, _point, fstype, source, options = mount
        if fstype == "overlay":
            if path is not None and st_ino is not None:
                return self._overlay_layer(mount, path, st_ino, depth)
            out: list[tuple[int, str]] = []
            for layer in _layers(options):
                try:
                    lst = os.stat(layer)
                except OSError as e:
                    raise Unresolvable(f"the overlay layer {layer} cannot be found "
                                       f"({e.strerror})") from None
                for dev, _how in self.fs_devices(lst.st_dev, depth=depth + 1):
                    out.append((dev, f"its overlay layer {layer} lives on that device"))
            return out
        out = []
        with contextlib.suppress(OSError):
            st = os.stat(source)
            if stat.S_ISBLK(st.st_mode):
                out.append((st.st_rdev, f"its {fstype} filesystem is mounted from {source}"))
                out += self._btrfs_siblings(st.st_rdev, fstype)
        return out

    def _overlay_layer(self, mount: tuple[str, str, str, str, str], path: str,
                       st_ino: int | None, depth: int) -> list[tuple[int, str]]:
        """The devices of the overlay layer that holds ``path``: the topmost layer with
        the same relative path and inode. None found (a layer's path gone or replaced,
        e.g. the lower mount lazily unmounted): :class:`Unresolvable`."""
        point, options = mount[1], mount[4]
        rel = os.path.relpath(os.path.realpath(path), point)
        for layer in _layers(options):
            cand = os.path.join(layer, rel)
            try:
                cst = os.lstat(cand)
            except OSError:
                continue
            if stat.S_ISCHR(cst.st_mode) and cst.st_rdev == 0:
                break  # a whiteout: no lower layer shows through
            if stat.S_ISREG(cst.st_mode) and (
                    st_ino is None or (cst.st_ino ^ st_ino) & ((1 << 48) - 1) == 0):
                found = self.fs_devices(cst.st_dev, cand, cst.st_ino, depth + 1)
                return [(dev, f"its overlay layer {layer} lives on that device"
                         + (f"; {how}" if how else "")) for dev, how in found]
            break
        raise Unresolvable(f"cannot tell which disk holds {path} (it is in the overlay "
                           f"mounted at {point}, and none of its layers, as the mount "
                           "table names them, holds it now)")

    def _btrfs_siblings(self, rdev: int, fstype: str) -> list[tuple[int, str]]:
        name = self.kernel_name(rdev)
        base = os.path.join(self.sys, "fs", "btrfs")
        if fstype != "btrfs" or not name or not os.path.isdir(base):
            return []
        out = []
        for fsid in os.listdir(base):
            devices = os.path.join(base, fsid, "devices")
            with contextlib.suppress(OSError):
                names = os.listdir(devices)
                if name in names:
                    for other in names:
                        dev = self._read(os.path.join(self.sys, "class", "block", other, "dev"))
                        if dev and other != name:
                            out.append((_devno(dev), f"its btrfs filesystem spans {other}"))
        return out

    # --- footprints ---------------------------------------------------------------------------
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
        fp = Footprint(label or _dev_key(rdev), rdev=rdev)
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
        partition = self._read(os.path.join(sysdir, "partition"))
        out.append(Piece(_dev_key(rdev), start, end, node,
                         frozenset() if partition else self.disk_names(sysdir), inside, trail))
        if partition:
            parent = os.path.dirname(sysdir)
            pdev = self._read(os.path.join(parent, "dev"))
            pstart = int(self._read(os.path.join(sysdir, "start")) or 0) * 512
            if pdev:
                pnode = os.path.join(self.dev, os.path.basename(parent))
                said = (f"{node} is partition {partition} of {pnode} (bytes {pstart}-"
                        f"{pstart + size})")
                self._device(_devno(pdev), pstart + start, pstart + end, inside,
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
                sdev = self._read(os.path.join(sdir, "dev"))
                if sdev:
                    self._device(_devno(sdev), 0, None, inside,
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
            node = os.path.join(self.dev, name) if name else _dev_key(dev)
            said = f"{path} is a file on {node}" + (f" ({how})" if how else "")
            self._device(dev, 0, None, inside or path, (*trail, said), out, depth + 1)


def _unescape(text: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _layers(options: str) -> list[str]:
    """An overlay's layer directories from its super options, the upper one first."""
    upper: list[str] = []
    lower: list[str] = []
    for opt in re.split(r"(?<!\\),", options):
        key, _, value = opt.partition("=")
        if key == "upperdir":
            upper.append(_unescape(value).replace("\\,", ","))
        elif key in ("lowerdir", "lowerdir+", "datadir+"):
            lower += [_unescape(v).replace("\\:", ":").replace("\\,", ",")
                      for v in re.split(r"(?<!\\):", value) if v]
    return upper + lower


def footprint(path: str | None = None, *, fd: int | None = None,
              names_of: Callable[[str], frozenset[str]] | None = None) -> Footprint:
    """:meth:`Resolver.footprint` on this system."""
    return Resolver(names_of=names_of).footprint(path, fd=fd)
