"""Real loop devices for host tests.

The host kernel here parses no partition tables (no CONFIG_EFI_PARTITION), so
``losetup -P`` gives no partitions; ``partx -a`` reads the table in user space
(libblkid) and adds the partitions through the BLKPG ioctl, which works on any
kernel.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def loop_device(image: Path, sector_size: int = 512, partitions: bool = True):
    dev = run("losetup", "-f", "--show", "-b", str(sector_size), str(image)).strip()
    # a SOURCE-role test sets BLKROSET, which outlives the loop device's detach
    run("blockdev", "--setrw", dev)
    try:
        if partitions:
            subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        yield dev
    finally:
        subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


def make_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path
