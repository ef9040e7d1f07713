"""A FUSE file system serving one file, ``disk.img``, whose reads fail with EIO
in given byte ranges: a source disk with bad sectors, once a loop device is
put over it (``losetup -r /dev/loopN MOUNT/disk.img``).

    python tests/fusebad.py BACKING_FILE MOUNTPOINT START:LENGTH [START:LENGTH ...]

Runs in the foreground until the mount point is unmounted. Mounted with
``direct_io``, so every read the loop device makes reaches this process with
its own offset and length (no page cache rounding to pages): a read touching
a bad range fails as a whole, like a disk command would, and a one-sector read
next to it succeeds. Uses fusepy (libfuse2).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading

from fuse import FUSE, FuseOSError, Operations

NAME = "disk.img"


class BadSectorFile(Operations):
    def __init__(self, backing: str, bad: list[tuple[int, int]]):
        self.fd = os.open(backing, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.bad = bad
        self.mutex = threading.Lock()
        self.failed_reads = 0

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/" + NAME:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", NAME]

    def open(self, path, flags):
        if path != "/" + NAME:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        end = offset + size
        if any(s < end and offset < s + n for s, n in self.bad):
            with self.mutex:
                self.failed_reads += 1
            raise FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)


def parse_ranges(args: list[str]) -> list[tuple[int, int]]:
    out = []
    for a in args:
        start, length = a.split(":")
        out.append((int(start, 0), int(length, 0)))
    return out


def main(argv: list[str]) -> None:
    backing, mountpoint, *ranges = argv
    FUSE(BadSectorFile(backing, parse_ranges(ranges)), mountpoint, foreground=True,
         nothreads=False, ro=True, direct_io=True, fsname="fusebad")


if __name__ == "__main__":
    main(sys.argv[1:])
