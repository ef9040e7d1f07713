"""Is a filesystem's on-disk allocation map settled, so that its free blocks may be skipped?

A journaled filesystem that was mounted (or not cleanly unmounted) when this copy of it
was taken, a snapshot of a live volume, keeps in its journal changes that its allocation
map on disk does not show yet: blocks already allocated, and written, whose bitmap update
is still only in the journal. Replaying the journal on the target would then point files
at blocks that were never copied. So such a filesystem is copied in full:

- NTFS: the volume's dirty flag (``ntfsinfo -m``), and the ``$LogFile`` restart area
  (``ntfscat -i 2``): clean when it has no client in use or its ``RESTART_VOLUME_IS_CLEAN``
  flag is set, or when the journal is empty (all 0xFF, as ntfs-3g and mkntfs leave it);
  anything else, or anything not understood, is not clean (ntfs-3g's own rule,
  ``ntfs_is_logfile_clean``);
- ext2/3/4: the superblock: ``needs_recovery``, errors recorded, or not cleanly unmounted;
- XFS: ``xfs_logprint -t``'s ``state: <CLEAN>`` (head equals tail);
- FAT has no journal: its FAT is the map and is copied whole.

:func:`unsettled` says why not (None: settled). Every tool here runs on a read-only loop
device (the caller's), and output is read only as far as needed.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile

from toolkit.system import tools

EXT_CLEAN, EXT_ERRORS = 0x0001, 0x0002
EXT_RECOVER = 0x0004  # incompat: the journal must be replayed
RESTART_CLEAN = 0x0002
NO_CLIENT = 0xFFFF
LOGFILE_HEAD = 64 * 1024  # the restart pages are in the first two system pages


def unsettled(fstype: str, device: str) -> str | None:
    """Why the ``fstype`` filesystem on ``device`` must be copied in full (its journal
    holds changes, it is dirty, or its state cannot be read); None when settled."""
    try:
        if fstype == "ntfs":
            return ntfs_dirty(device) or logfile_state(head(["ntfscat", "-i", "2", device],
                                                             LOGFILE_HEAD))
        if fstype in ("ext2", "ext3", "ext4"):
            return ext_state(_read(device, 1024, 1024), fstype)
        if fstype == "xfs":
            return xfs_log_state(head(["xfs_logprint", "-t", device], 16384, until=b"state:")
                                 .decode(errors="replace"))
        return None
    except (OSError, ValueError) as e:
        return f"its state cannot be read ({e})"


def ntfs_dirty(device: str) -> str | None:
    p = tools.run(["ntfsinfo", "-m", device], check=False, timeout=300)
    m = re.search(r"Volume Flags:\s*0x([0-9a-fA-F]+)", p.stdout)
    dirty = "NTFS volume marked dirty (scheduled for a check, or not shut down cleanly)"
    if p.returncode != 0 and "scheduled for check" in p.stderr:
        return dirty  # ntfsinfo refuses a dirty volume
    if p.returncode != 0 or m is None:
        lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
        return f"NTFS volume information unreadable ({(lines or ['no output'])[-1][:120]})"
    return dirty if int(m.group(1), 16) & 0x0001 else None


def logfile_state(data: bytes) -> str | None:
    """The NTFS journal's first pages -> None when clean, else why not."""
    unclean = ("NTFS journal ($LogFile) not clean: the volume was in use, or not shut "
               "down cleanly, when this copy of it was taken")
    if len(data) >= 8192 and data[:8192] == b"\xff" * 8192:
        return None  # emptied (ntfs-3g, mkntfs): clean before it was emptied
    areas = []
    page = 0
    for _ in range(2):
        area = _restart_area(data, page)
        if area is None:
            break
        areas.append(area)
        page = area[2]  # the second restart page follows the first
    if not areas:
        return "NTFS journal ($LogFile) not recognised"
    _lsn, clean, _size = max(areas)
    return None if clean else unclean


def _restart_area(data: bytes, pos: int) -> tuple[int, bool, int] | None:
    """(current LSN, clean, system page size) of the restart page at ``pos``, or None."""
    if len(data) < pos + 512 or data[pos:pos + 4] not in (b"RSTR", b"CHKD"):
        return None
    page_size, _log_page, ra_ofs = struct.unpack_from("<IIH", data, pos + 16)
    if page_size < 512 or page_size & (page_size - 1) or ra_ofs % 8 or ra_ofs + 16 > 508:
        return None
    lsn, _clients, _free, in_use, flags = struct.unpack_from("<qHHHH", data, pos + ra_ofs)
    return lsn, in_use == NO_CLIENT or bool(flags & RESTART_CLEAN), pos + page_size


def ext_state(sb: bytes, fstype: str = "ext4") -> str | None:
    """The ext2/3/4 superblock (1024 bytes from byte 1024) -> None when clean."""
    if len(sb) < 0x64 or struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        return f"no {fstype} superblock where one belongs"
    state = struct.unpack_from("<H", sb, 0x3A)[0]
    incompat = struct.unpack_from("<I", sb, 0x60)[0]
    if incompat & EXT_RECOVER:
        return (f"{fstype} journal needs recovery: the filesystem was mounted, or not "
                "unmounted cleanly, when this copy of it was taken")
    if state & EXT_ERRORS:
        return f"{fstype} has errors recorded (run e2fsck on it)"
    if not state & EXT_CLEAN:
        return f"{fstype} not cleanly unmounted"
    return None


def xfs_log_state(text: str) -> str | None:
    """``xfs_logprint -t``'s header -> None when its log is clean."""
    m = re.search(r"state:\s*<(\w+)>", text)
    if m is None:
        last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
        return f"XFS log state unreadable ({last[:120] or 'xfs_logprint said nothing'})"
    if m.group(1) != "CLEAN":
        return ("XFS log not clean: the filesystem was mounted, or not unmounted "
                "cleanly, when this copy of it was taken")
    return None


def _read(device: str, offset: int, size: int) -> bytes:
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def head(argv: list[str], size: int, until: bytes | None = None) -> bytes:
    """The first ``size`` bytes ``argv`` writes to stdout (or up to the line holding
    ``until``); the program is stopped there. Raises ToolError when it fails first."""
    with tempfile.TemporaryFile() as errf:
        p = tools.popen(argv, stdout=subprocess.PIPE, stderr=errf)
        out = b""
        try:
            while len(out) < size:
                chunk = (p.stdout.read1(size - len(out)) if until is None
                         else p.stdout.readline())
                if not chunk:
                    break
                out += chunk
                if until is not None and until in chunk:
                    break
        finally:
            if p.poll() is None:
                p.kill()
            p.stdout.close()
            status = p.wait()
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    if not out and status != 0:
        raise tools.failure(argv, status, err)
    return out
