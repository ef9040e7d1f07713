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

import re

from toolkit.system import tools

EXT = ("ext2", "ext3", "ext4")
FILE_MAX = 1024 * 1024  # fstab, crypttab and os-release are small
LINK_HOPS = 8  # symlinks followed before giving up (as a loop)
ABSENT, REGULAR, DIRECTORY, SYMLINK, OTHER = "absent", "regular", "directory", "symlink", \
    "other"
_NOT_FOUND = ("File not found by ext2_lookup", "No such file or directory",
              "Not a directory")


class Unreadable(ValueError):
    """A file of the image that is there but is not read; the message says which and why."""


def _run(*cmd: str) -> str:
    """A tool's output (stdout, then stderr: debugfs and xfs_db say what failed in either);
    Unreadable when the tool is missing or does not answer."""
    try:
        p = tools.run(cmd, check=False, timeout=120)
    except tools.ToolError as e:
        raise Unreadable(f"{cmd[0]} cannot look into the image ({e})") from None
    return p.stdout + "\n" + p.stderr


def tool_output(*cmd: str, env=None) -> str | None:
    """A tool's output; None when it fails, is missing or does not answer (logged)."""
    try:
        p = tools.run(cmd, check=False, env=env, timeout=120)
    except tools.ToolError:
        return None
    return p.stdout if p.returncode == 0 else None


def _quoted(path: str) -> str:
    """``path`` as one debugfs argument: in double quotes, a quote doubled."""
    return '"' + path.replace('"', '""') + '"'


def _fail(out: str, path: str, tool: str) -> tuple[str, int, None]:
    """ABSENT when the tool says there is no such file; otherwise Unreadable."""
    if any(s in out for s in _NOT_FOUND):
        return ABSENT, 0, None
    last = next((ln for ln in reversed(out.splitlines()) if ln.strip()), "no answer")
    raise Unreadable(f"{path}: {tool} cannot read it ({last.strip()})")


def _ext_stat(node: str, path: str) -> tuple[str, int, str | None]:
    """(kind, size, a symlink's target) of ``path`` by ``debugfs stat`` (the name in
    double quotes, a quote doubled, as debugfs reads it); a long target, kept in a block,
    is that block (``debugfs cat``)."""
    if "\n" in path:
        raise Unreadable(f"{path!r}: a name with a line break cannot be given to debugfs")
    quoted = _quoted(path)
    out = _run("debugfs", "-R", f"stat {quoted}", node)
    kind = re.search(r"\bType: (\w+)", out)
    size = re.search(r"\bSize: (\d+)", out)
    if "Inode:" not in out or kind is None or size is None:
        return _fail(out, path, "debugfs")
    n = int(size.group(1))
    if kind.group(1) in ("regular", "directory"):
        return (REGULAR if kind.group(1) == "regular" else DIRECTORY), n, None
    if kind.group(1) != "symlink":
        return OTHER, n, None
    fast = re.search(r'^Fast link dest: "(.*)"$', out, re.M)
    if fast:
        return SYMLINK, n, fast.group(1)
    if n > 4096:
        return SYMLINK, n, None
    p = tools.run(["debugfs", "-R", f"cat {quoted}", node], check=False, timeout=120)
    return SYMLINK, n, (p.stdout if p.returncode == 0 and len(p.stdout) == n else None)


def _xfs_stat(node: str, path: str) -> tuple[str, int, str | None]:
    """(kind, size, a symlink's target) of ``path`` by ``xfs_db`` (which splits its
    commands at spaces: a name with one is not given to it); a target kept in the inode
    (``local``: up to a few hundred bytes) is read, one kept in blocks is not."""
    if re.search(r"\s", path):
        raise Unreadable(f"{path!r}: a name with a space cannot be given to xfs_db")
    out = _run("xfs_db", "-r", "-c", f"path {path}", "-c", "print core.mode core.size "
               "core.format", node)
    f = dict(ln.split(" = ", 1) for ln in out.splitlines() if " = " in ln)
    if "core.mode" not in f or not f.get("core.size", "").isdigit():
        return _fail(out, path, "xfs_db")
    mode, size = f["core.mode"], int(f["core.size"])
    if mode.startswith(("010", "040")):
        return (REGULAR if mode.startswith("010") else DIRECTORY), size, None
    if not mode.startswith("012"):
        return OTHER, size, None
    if not f.get("core.format", "").startswith("1 "):  # "1 (local)"
        return SYMLINK, size, None
    for field in ("u3.symlink", "u.symlink"):  # v5, v4 inodes
        got = _run("xfs_db", "-r", "-c", f"path {path}", "-c", f"print {field}", node)
        m = re.search(rf'^{re.escape(field)} = "(.*)"$', got, re.M)
        if m and len(m.group(1).encode()) == size:
            return SYMLINK, size, m.group(1)
    return SYMLINK, size, None


def _ext_cat(node: str, path: str, size: int) -> str | None:
    quoted = _quoted(path)
    p = tools.run(["debugfs", "-R", f"cat {quoted}", node], check=False, timeout=120)
    return p.stdout if p.returncode == 0 else None


def xfs_file(node: str, path: str, size: int | None = None) -> str | None:
    """The regular file ``path`` of the XFS filesystem on ``node`` (no link followed):
    each of its blocks printed whole (``type data``), cut to the file's size."""
    out = tool_output("xfs_db", "-r", "-c", "sb 0", "-c", "print blocksize", "-c", f"path {path}",
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
        out = tool_output("xfs_db", "-r", "-c", f"path {path}", *cmds, node) if cmds else ""
        data = bytes.fromhex("".join(ln.split(":", 1)[1] for ln in (out or "").splitlines()
                                     if ":" in ln))
    except Unreadable:
        raise
    except ValueError:
        return None
    if len(data) < size:
        return None
    return data[:size].decode(errors="replace")


def _resolve(stat, asked: str) -> tuple[str, int] | None:
    """The path and size of the regular file ``asked`` names, its links followed one
    component at a time as the kernel does (``..`` from where a link really is); None
    when there is no such file."""
    queue = [c for c in asked.split("/") if c]
    at, hops = "", 0
    while queue:
        part = queue.pop(0)
        if part in (".", ".."):
            at = at.rsplit("/", 1)[0] if part == ".." else at
            continue
        path = f"{at}/{part}"
        kind, size, target = stat(path)
        if kind == ABSENT:
            return None
        if kind == SYMLINK:
            hops += 1
            if hops > LINK_HOPS:
                raise Unreadable(f"{asked}: more than {LINK_HOPS} symbolic links (a loop?): "
                                 "not read")
            if target is None:
                raise Unreadable(f"{asked}: {path} is a symbolic link whose target is not "
                                 "read here: not read")
            if target.startswith("/"):  # the image's own root
                at = ""
            queue = [c for c in target.split("/") if c] + queue
            continue
        if queue and kind != DIRECTORY:
            return None  # a file where a directory should be: no such path
        if not queue:
            if kind != REGULAR:
                raise Unreadable(f"{asked} is not a regular file in the image: not read")
            return path, size
        at = path
    raise Unreadable(f"{asked} is not a regular file in the image: not read")  # "/"


def read_file(node: str, fstype: str | None, path: str) -> str | None:
    """The text of ``path`` in the unmounted ext or XFS filesystem on ``node``, links
    followed inside it; None when it is not there (or the filesystem is another);
    :class:`Unreadable` when it is there but not read."""
    if fstype != "xfs" and fstype not in EXT:
        return None
    stat, cat = (_xfs_stat, xfs_file) if fstype == "xfs" else (_ext_stat, _ext_cat)
    found = _resolve(lambda p: stat(node, p), path)
    if found is None:
        return None
    real, size = found
    if size > FILE_MAX:
        raise Unreadable(f"{path} has {size} bytes, more than {FILE_MAX}: not read")
    return cat(node, real, size)


def exists(node: str, fstype: str | None, path: str) -> bool:
    """Whether ``path`` is in the unmounted ext or XFS filesystem on ``node`` (the last
    component not followed if it is a symlink)."""
    if fstype == "xfs":
        out = tool_output("xfs_db", "-r", "-c", f"path {path}", "-c", "print core.mode", node)
        return bool(out and out.startswith("core.mode"))
    quoted = _quoted(path)
    out = tool_output("debugfs", "-R", f"stat {quoted}", node) if fstype in EXT else None
    return bool(out and "Inode:" in out)
