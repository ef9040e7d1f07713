"""Helpers shared by the benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

MiB = 1 << 20


def parse_size(text: str) -> int:
    """``512M``, ``1G``, ``4GiB``, ``1048576`` -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.upper().rstrip("B").removesuffix("I")
    return int(float(t[:-1]) * units[t[-1]]) if t[-1] in units else int(t)


def losetup(path: Path, direct_io: bool = False) -> str:
    """A loop device over ``path``, writable: a read-only flag set on a device (an iSCSI
    SOURCE role, BLKROSET) outlives the loop device's detach and is reused with its number.
    ``direct_io``: the loop device reads and writes its file with O_DIRECT (the disk
    under the file, not the page cache, is then the limit)."""
    dev = subprocess.run(["losetup", "-f", "--show", *(["--direct-io=on"] if direct_io else []),
                          str(path)], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["blockdev", "--setrw", dev], check=True)
    return dev
