"""Real loop devices for host tests.

The host kernel here parses no partition tables (no CONFIG_EFI_PARTITION), so
``losetup -P`` gives no partitions; ``partx -a`` reads the table in user space
(libblkid) and adds the partitions through the BLKPG ioctl, which works on any
kernel.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

FUSEBAD = Path(__file__).resolve().parent / "fusebad.py"


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
        # and reset at the detach too: the next user (mount -o loop) is not a test's
        subprocess.run(["blockdev", "--setrw", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], check=False)


def make_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def marked_image(path: Path, size: int, marker: bytes) -> Path:
    """A sparse image of ``size`` bytes with ``marker`` at its start and 1 MiB before its
    end: what a refused or failed write must leave in place."""
    make_image(path, size)
    with open(path, "r+b") as f:
        f.write(marker)
        f.seek(size - (1 << 20))
        f.write(marker)
    return path


@contextlib.contextmanager
def fuse_disk(backing: Path, mountpoint: Path, ranges, *, writes: str | None = None):
    """Serve ``backing`` as ``MOUNTPOINT/disk.img`` through ``fusebad.py``: reads in
    ``ranges`` fail with EIO; or, ``writes="lost"``, writes there are dropped, or
    ``writes="eio"``, they fail. Yields the file's path, unmounts at the end."""
    mountpoint.mkdir(exist_ok=True)
    args = [sys.executable, str(FUSEBAD), *([f"--{writes}-writes"] if writes else []),
            str(backing), str(mountpoint), *(f"{s}:{n}" for s, n in ranges)]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if (mountpoint / "disk.img").exists():
                break
            time.sleep(0.05)
        else:
            server.kill()
            raise RuntimeError("FUSE server did not come up: " + server.stdout.read1().decode())
        yield mountpoint / "disk.img"
    finally:
        # a loop device over the file may still be letting go (autoclear): retry, then
        # detach lazily, so that no FUSE mount outlives the test
        for _ in range(20):
            if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
