"""Helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
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


def bench_parser(doc: str, default_size: str) -> argparse.ArgumentParser:
    """The options every loop-device benchmark takes: --size, --repeat, --dir, --direct-io."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=parse_size(default_size))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where the images go")
    ap.add_argument("--direct-io", action="store_true",
                    help="loop devices with --direct-io=on: the disk under --dir is the limit, "
                         "not the page cache")
    return ap
