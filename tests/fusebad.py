"""A FUSE file system serving one file, ``disk.img``, whose reads fail with EIO
in given byte ranges: a source disk with bad sectors, once a loop device is
put over it (``losetup -r /dev/loopN MOUNT/disk.img``).

    python tests/fusebad.py BACKING_FILE MOUNTPOINT START:LENGTH [START:LENGTH ...]
    python tests/fusebad.py --lost-writes BACKING_FILE MOUNTPOINT START:LENGTH ...
    python tests/fusebad.py --eio-writes BACKING_FILE MOUNTPOINT START:LENGTH ...

With ``--lost-writes`` the file is writable, reads never fail, and writes to
the given ranges are acknowledged but dropped: a target disk that lies (a
firmware or cache fault), which only reading back can catch. With
``--eio-writes`` writes touching the ranges fail with EIO: a failing target.

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
    def __init__(self, backing: str, bad: list[tuple[int, int]], lost: str | None = None):
        self.lost = lost  # None (read-only), "--lost-writes" or "--eio-writes"
        self.fd = os.open(backing, os.O_RDWR if lost else os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.bad = bad
        self.mutex = threading.Lock()
        self.failed_reads = 0

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/" + NAME:
            mode = 0o644 if self.lost else 0o444
            return {"st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", NAME]

    def open(self, path, flags):
        if path != "/" + NAME:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        end = offset + size
        if not self.lost and any(s < end and offset < s + n for s, n in self.bad):
            with self.mutex:
                self.failed_reads += 1
            raise FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        if not self.lost:
            raise FuseOSError(errno.EROFS)
        if self.lost == "--eio-writes":
            if any(s < offset + len(data) and offset < s + n for s, n in self.bad):
                raise FuseOSError(errno.EIO)
            os.pwrite(self.fd, data, offset)
            return len(data)
        kept = bytearray(data)  # what lands: the old bytes stay in the lost ranges
        for s, n in self.bad:
            lo, hi = max(s, offset), min(s + n, offset + len(data))
            if lo < hi:
                kept[lo - offset:hi - offset] = os.pread(self.fd, hi - lo, lo)
        os.pwrite(self.fd, bytes(kept), offset)
        return len(data)

    def truncate(self, path, length, fh=None):
        raise FuseOSError(errno.EPERM)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        os.fsync(self.fd)
        return 0


def parse_ranges(args: list[str]) -> list[tuple[int, int]]:
    out = []
    for a in args:
        start, length = a.split(":")
        out.append((int(start, 0), int(length, 0)))
    return out


def main(argv: list[str]) -> None:
    lost = argv[0] if argv[0] in ("--lost-writes", "--eio-writes") else None
    backing, mountpoint, *ranges = argv[1:] if lost else argv
    FUSE(BadSectorFile(backing, parse_ranges(ranges), lost), mountpoint, foreground=True,
         nothreads=False, ro=not lost, direct_io=True, fsname="fusebad")


if __name__ == "__main__":
    main(sys.argv[1:])
