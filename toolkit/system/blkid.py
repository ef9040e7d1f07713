"""``blkid -p``: what a device holds (filesystem type, label, UUID, partition table),
from libblkid's own probe of the device, not from a cache or udev."""

from __future__ import annotations

import re

from toolkit.system import tools

BLKID = "blkid"


def parse_export(text: str) -> dict[str, dict[str, str]]:
    """``blkid -o export`` output -> device path -> its tags. Sample::

        DEVNAME=/dev/loop0p2
        LABEL=Vol1
        TYPE=ntfs
    """
    out: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "DEVNAME" in current:
                out[current.pop("DEVNAME")] = current
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = re.sub(r"\\(.)", r"\1", value)  # export shell-escapes: "EFI\ system"
    return out


def probe(path: str, timeout: float = 30, *, offset: int | None = None,
          size: int | None = None) -> dict[str, str]:
    """The tags of ``path`` (TYPE, LABEL, UUID, PTTYPE...): empty when blkid finds
    nothing (exit 2) or cannot read it. ``offset``, ``size`` (bytes): probe only that
    part of it (a partition the kernel does not list). Raises ToolError when blkid is
    not installed or does not answer within ``timeout``."""
    part = [*(["-O", str(offset)] if offset is not None else []),
            *(["-S", str(size)] if size is not None else [])]
    p = tools.run([BLKID, "-p", "-o", "export", *part, path], check=False, timeout=timeout)
    if p.returncode != 0:
        return {}
    found = parse_export(p.stdout if "DEVNAME=" in p.stdout else f"DEVNAME={path}\n{p.stdout}")
    return next(iter(found.values()), {})
