"""partclone's allocation map of one filesystem: which of its bytes are in use.

``partclone.TOOL -D -s DEVICE -o FILE -L LOG`` reads the filesystem's own allocation
structures (NTFS ``$Bitmap``, the ext2/3/4 block bitmaps, the XFS free-space btrees, the
FAT) and writes a GNU ddrescue *domain* mapfile: the blocks in use as ``+``, the free ones
as ``?``, from the filesystem's first byte to the end of its last block (which may stop
short of the device's end: NTFS keeps its backup boot sector after it). partclone opens
DEVICE read-only; it is run here on a read-only loop device anyway
(:mod:`toolkit.system.loopdev`), with FILE and LOG in a temporary directory, and never
with ``-I`` (which would skip its refusal of a dirty NTFS).

Only the filesystems in :data:`TOOLS` are mapped: the ones whose maps the tests here prove
(tests/test_usedblocks_host.py). partclone knows more (btrfs, exFAT, HFS+, f2fs...);
those are copied in full until a test proves their maps.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

from toolkit.system import tools

# blkid TYPE -> the partclone program that maps it
TOOLS = {
    "ntfs": "partclone.ntfs",
    "ext2": "partclone.extfs", "ext3": "partclone.extfs", "ext4": "partclone.extfs",
    "xfs": "partclone.xfs",
    "vfat": "partclone.fat",
}
TIMEOUT = 3600  # a bitmap of a few TB is read in minutes at worst

_LINE = re.compile(r"^\s*(0x[0-9a-fA-F]+|\d+)\s+(0x[0-9a-fA-F]+|\d+)\s+(\S)\s*$")
_STATUS = re.compile(r"^\s*(0x[0-9a-fA-F]+|\d+)\s+\S\s*(\d+)?\s*$")
# partclone's own words around the reason, and its progress lines
_NOISE = re.compile(r"^(Partclone v|Starting to map|Partclone fail|Error exit|memory needed|"
                    r"bitmap \d|Calculating bitmap|Elapsed|Total Time|Syncing|File system:|"
                    r"Device size|Space in use|Free Space|Block size|Total block|current block)")


class MapError(ValueError):
    """partclone's domain mapfile is not what this module can trust."""


@dataclass(frozen=True)
class FsMap:
    """The map of one filesystem: ``[0, extent)`` vouched for, ``used`` inside it."""

    extent: int
    used: tuple[tuple[int, int], ...]  # (pos, length), sorted, disjoint, inside the extent

    def free(self) -> list[tuple[int, int]]:
        """The free ranges inside the extent (what the tool vouches is not in use)."""
        out, at = [], 0
        for pos, length in self.used:
            if pos > at:
                out.append((at, pos - at))
            at = pos + length
        if at < self.extent:
            out.append((at, self.extent - at))
        return out


def parse_domain(text: str) -> FsMap:
    """A domain mapfile -> :class:`FsMap`. Strict: the blocks must start at 0 and follow
    each other; ``+`` is in use, ``?`` free, any other status counts as in use. Raises
    :class:`MapError` for anything else (a truncated or garbled file)."""
    blocks: list[tuple[int, int, str]] = []
    status_seen = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            if not status_seen and _STATUS.match(line):
                status_seen = True  # the current-position line
                continue
            raise MapError(f"unexpected line in the domain mapfile: {line[:60]!r}")
        pos, size = int(m.group(1), 0), int(m.group(2), 0)
        if size <= 0:
            raise MapError(f"a block of size {size} in the domain mapfile")
        blocks.append((pos, size, m.group(3)))
    if not status_seen or not blocks:
        raise MapError("the domain mapfile is empty or has no status line")
    used: list[tuple[int, int]] = []
    at = 0
    for pos, size, status in blocks:
        if pos != at:
            raise MapError(f"the domain mapfile's blocks do not follow each other at {pos:#x}")
        if status != "?":
            if used and used[-1][0] + used[-1][1] == pos:
                used[-1] = (used[-1][0], used[-1][1] + size)
            else:
                used.append((pos, size))
        at = pos + size
    return FsMap(at, tuple(used))


def reason(log: str, device: str, shown: str) -> str:
    """What partclone said went wrong, from its log: the lines that are neither its
    banner nor its progress, the source file prefix (``ntfsclone-ng.c: ``) dropped and
    ``device`` (the loop device it ran on) shown as ``shown``."""
    lines = []
    for raw in log.splitlines():
        line = raw.strip().replace("\r", "")
        if not line or _NOISE.match(line):
            continue
        lines.append(re.sub(r"^[\w-]+\.c: ", "", line))
    text = " ".join(lines).replace(device, shown)
    return re.sub(r"\s+", " ", text).strip()[:300]


def allocation_map(fstype: str, device: str, *, shown: str | None = None) -> FsMap:
    """The map of the ``fstype`` filesystem on ``device`` (to be read-only). Raises
    ToolError (its message: the tool and its reason, e.g. ``partclone.ntfs: NTFS Volume
    '/dev/sdb2' is scheduled for a check...``), ToolNotInstalled, or :class:`MapError`."""
    tool = TOOLS[fstype]
    shown = shown or device
    with tempfile.TemporaryDirectory(prefix="rtk-partclone-") as tmp:
        out, log = os.path.join(tmp, "domain.map"), os.path.join(tmp, "partclone.log")
        # -q -f 0: its progress thread (which, quiet, prints nothing) otherwise sleeps
        # -f seconds (2 by default) between looks at the end: up to 2 s on any size
        argv = [tool, "-D", "-s", device, "-o", out, "-L", log, "-q", "-f", "0"]
        p = tools.run(argv, check=False, timeout=TIMEOUT)
        text = _read(log)
        if p.returncode != 0 or not os.path.exists(out):
            why = (reason(text, device, shown) or reason(p.stderr, device, shown)
                   or _tail(text or p.stderr or p.stdout, device, shown, p.returncode))
            # its words, never the path of its log: that is gone with ``tmp``
            raise tools.ToolError(argv, p.returncode, p.stderr, message=f"{tool}: {why}")
        return parse_domain(_read(out))


def _tail(text: str, device: str, shown: str, code: int) -> str:
    """The last lines of partclone's log (or output), when :func:`reason` found no words
    of its own: ``failed (exit 1); its log ends: ...``."""
    lines = [x.strip() for x in text.replace("\r", "\n").splitlines()
             if x.strip() and "please check" not in x][-3:]  # not the log's path
    said = re.sub(r"\s+", " ", " / ".join(lines).replace(device, shown))[:300]
    return f"failed (exit {code}); " + (f"its log ends: {said}" if said else "it said nothing")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
