"""Small files of an unmounted ext2/3/4 or XFS filesystem (``/etc/fstab``,
``/etc/crypttab``, ``/etc/os-release``), read without mounting it: ``debugfs`` on ext,
``xfs_db -r`` on XFS (read-only, no log replay).

A symbolic link is followed inside the filesystem (``/etc/fstab -> fstab.real``, an
absolute target is the image's own root), up to :data:`LINK_HOPS` links. What is there
but is not read raises :class:`Unreadable`, saying why: a file over :data:`FILE_MAX` (a
3 GiB sparse os-release is no configuration: read whole it would fill the live system's
memory), something other than a regular file, a link that cannot be followed. A file that
is not there is None: the caller tells "no fstab" from "an fstab not read".
"""

from __future__ import annotations

import posixpath
import re

from toolkit.system import tools

EXT = ("ext2", "ext3", "ext4")
FILE_MAX = 1024 * 1024  # fstab, crypttab and os-release are small
LINK_HOPS = 8  # symlinks followed before giving up (as a loop)
ABSENT, REGULAR, SYMLINK, OTHER = "absent", "regular", "symlink", "other"


class Unreadable(ValueError):
    """A file of the image that is there but is not read; the message says which and why."""


def _out(*cmd: str) -> str | None:
    """A tool's output; None when it fails, is missing or does not answer (logged)."""
    try:
        p = tools.run(cmd, check=False, timeout=120)
    except tools.ToolError:
        return None
    return p.stdout if p.returncode == 0 else None


def _ext_stat(node: str, path: str) -> tuple[str, int, str | None]:
    """(kind, size, a symlink's target) of ``path`` by ``debugfs stat``; a long target,
    kept in a block, is that block (``debugfs cat``)."""
    out = _out("debugfs", "-R", f"stat {path}", node) or ""
    kind = re.search(r"\bType: (\w+)", out)
    size = re.search(r"\bSize: (\d+)", out)
    if "Inode:" not in out or kind is None or size is None:
        return ABSENT, 0, None
    if kind.group(1) == "regular":
        return REGULAR, int(size.group(1)), None
    if kind.group(1) != "symlink":
        return OTHER, int(size.group(1)), None
    fast = re.search(r'^Fast link dest: "(.*)"$', out, re.M)
    target = fast.group(1) if fast else (
        _out("debugfs", "-R", f"cat {path}", node) if int(size.group(1)) <= 4096 else None)
    return SYMLINK, int(size.group(1)), target or None


def _xfs_stat(node: str, path: str) -> tuple[str, int, str | None]:
    """(kind, size, a symlink's target) of ``path`` by ``xfs_db``; a target kept in the
    inode (``local``: up to a few hundred bytes) is read, one kept in blocks is not."""
    out = _out("xfs_db", "-r", "-c", f"path {path}", "-c", "print core.mode core.size "
               "core.format", node) or ""
    f = dict(ln.split(" = ", 1) for ln in out.splitlines() if " = " in ln)
    if "core.mode" not in f or not f.get("core.size", "").isdigit():
        return ABSENT, 0, None
    mode, size = f["core.mode"], int(f["core.size"])
    if mode.startswith("010"):
        return REGULAR, size, None
    if not mode.startswith("012"):
        return OTHER, size, None
    if not f.get("core.format", "").startswith("1 "):  # "1 (local)"
        return SYMLINK, size, None
    for field in ("u3.symlink", "u.symlink"):  # v5, v4 inodes
        got = _out("xfs_db", "-r", "-c", f"path {path}", "-c", f"print {field}", node) or ""
        m = re.fullmatch(rf'{re.escape(field)} = "(.*)"\n?', got)
        if m:
            return SYMLINK, size, m.group(1)
    return SYMLINK, size, None


def _ext_cat(node: str, path: str, size: int) -> str | None:
    return _out("debugfs", "-R", f"cat {path}", node)


def xfs_file(node: str, path: str, size: int | None = None) -> str | None:
    """The regular file ``path`` of the XFS filesystem on ``node`` (no link followed):
    each of its blocks printed whole (``type data``), cut to the file's size."""
    out = _out("xfs_db", "-r", "-c", "sb 0", "-c", "print blocksize", "-c", f"path {path}",
               "-c", "print core.mode core.size", node)
    lines = (out or "").splitlines()
    if len(lines) < 3 or not lines[1].startswith("core.mode = 010"):  # a regular file
        return None
    try:
        block, size = (int(ln.split("=", 1)[1]) for ln in (lines[0], lines[2]))
        if size > FILE_MAX:
            raise Unreadable(f"{path} has {size} bytes, more than {FILE_MAX}: not read")
        cmds = [a for n in range(-(-size // block))
                for a in ("-c", f"dblock {n}", "-c", "type data", "-c", "print")]
        out = _out("xfs_db", "-r", "-c", f"path {path}", *cmds, node) if cmds else ""
        data = bytes.fromhex("".join(ln.split(":", 1)[1] for ln in (out or "").splitlines()
                                     if ":" in ln))
    except Unreadable:
        raise
    except ValueError:
        return None
    if len(data) < size:
        return None
    return data[:size].decode(errors="replace")


def read_file(node: str, fstype: str | None, path: str) -> str | None:
    """The text of ``path`` in the unmounted ext or XFS filesystem on ``node``, links
    followed inside it; None when it is not there (or the filesystem is another);
    :class:`Unreadable` when it is there but not read."""
    if fstype != "xfs" and fstype not in EXT:
        return None
    stat, cat = (_xfs_stat, xfs_file) if fstype == "xfs" else (_ext_stat, _ext_cat)
    asked = path
    for _ in range(LINK_HOPS + 1):
        kind, size, target = stat(node, path)
        if kind == ABSENT:
            return None
        if kind == OTHER:
            raise Unreadable(f"{asked} is not a regular file in the image: not read")
        if kind == REGULAR:
            if size > FILE_MAX:
                raise Unreadable(f"{asked} has {size} bytes, more than {FILE_MAX}: not read")
            return cat(node, path, size)
        if target is None:
            raise Unreadable(f"{asked} is a symbolic link whose target is not read here: "
                             "not read")
        path = posixpath.normpath("/" + posixpath.join(posixpath.dirname(path),
                                                         target).lstrip("/"))
    raise Unreadable(f"{asked}: more than {LINK_HOPS} symbolic links (a loop?): not read")


def exists(node: str, fstype: str | None, path: str) -> bool:
    """Whether ``path`` is in the unmounted ext or XFS filesystem on ``node`` (the last
    component not followed if it is a symlink)."""
    if fstype == "xfs":
        out = _out("xfs_db", "-r", "-c", f"path {path}", "-c", "print core.mode", node)
        return bool(out and out.startswith("core.mode"))
    out = _out("debugfs", "-R", f"stat {path}", node) if fstype in EXT else None
    return bool(out and "Inode:" in out)
