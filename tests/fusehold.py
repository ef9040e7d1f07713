"""A FUSE file system serving one file, ``disk.img``, whose writes wait while a flag file
exists: a target disk that takes no write at all for a while (the slowest disk of a
fleet), once a loop device is put over it (``losetup /dev/loopN MOUNT/disk.img``).

    python tests/fusehold.py BACKING_FILE MOUNTPOINT FLAG_FILE

Reads are served at once. Runs in the foreground until the mount point is unmounted.
Mounted with ``direct_io``, so every write of the loop device reaches this process (no
page cache in between to absorb it). Uses fusepy (libfuse2), as tests/fusebad.py does.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from fuse import FUSE, FuseOSError, Operations

NAME = "disk.img"


class HeldWrites(Operations):
    def __init__(self, backing: str, flag: str):
        self.fd = os.open(backing, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.flag = flag

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/" + NAME:
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", NAME]

    def open(self, path, flags):
        if path != "/" + NAME:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        return os.pread(self.fd, size, offset)

    def write(self, path, data, offset, fh):
        while os.path.exists(self.flag):
            time.sleep(0.05)
        os.pwrite(self.fd, data, offset)
        return len(data)

    def truncate(self, path, length, fh=None):
        raise FuseOSError(errno.EPERM)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        os.fsync(self.fd)
        return 0


def main(argv: list[str]) -> None:
    backing, mountpoint, flag = argv
    FUSE(HeldWrites(backing, flag), mountpoint, foreground=True, nothreads=False,
         direct_io=True, fsname="fusehold")


if __name__ == "__main__":
    main(sys.argv[1:])
