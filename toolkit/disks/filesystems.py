"""Which block devices hold a filesystem: the mount table, overlay layers, btrfs.

:class:`FilesystemView` follows a filesystem's device number to the block device(s) it
lives on: its own number when it is a block device's, else (btrfs, overlayfs, network or
FUSE filesystems: an anonymous number) the mount's source device (from
/proc/self/mountinfo), a btrfs filesystem's other devices, and for overlayfs the layer
that holds a given file, or all its layers.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat

from toolkit.disks.sysfs import MAX_DEPTH, SysfsView, Unresolvable, parse_devno


class FilesystemView(SysfsView):
    """:class:`SysfsView` with the mount table: what a filesystem lives on."""

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
            out.append((fields[2], unescape(fields[4]), rest[0], unescape(rest[1]),
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
            for layer in overlay_layers(options):
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
        for layer in overlay_layers(options):
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
                        dev = self.read(os.path.join(self.sys, "class", "block", other, "dev"))
                        if dev and other != name:
                            out.append((parse_devno(dev), f"its btrfs filesystem spans {other}"))
        return out


def unescape(text: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def overlay_layers(options: str) -> list[str]:
    """An overlay's layer directories from its super options, the upper one first."""
    upper: list[str] = []
    lower: list[str] = []
    for opt in re.split(r"(?<!\\),", options):
        key, _, value = opt.partition("=")
        if key == "upperdir":
            upper.append(unescape(value).replace("\\,", ","))
        elif key in ("lowerdir", "lowerdir+", "datadir+"):
            lower += [unescape(v).replace("\\:", ":").replace("\\,", ",")
                      for v in re.split(r"(?<!\\):", value) if v]
    return upper + lower
