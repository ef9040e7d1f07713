"""Low-level block device access: O_DIRECT opens, aligned buffers, ioctls.

O_DIRECT needs the buffer address, the length and the offset aligned to the
device's logical sector size. :class:`AlignedBuffer` is an anonymous mmap,
page aligned, so good for any sector size up to the page size (4096 bytes on
the machines this runs on). Device sizes are always a multiple of the
logical sector size, so a short last chunk still has an aligned length.

Nothing here decides whether a write is safe, nor opens a device for writing: that is
the write gate's (:func:`toolkit.disks.gate.open_target`), the only code that does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct

# <linux/fs.h>
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKFLSBUF = 0x1261
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F


class DeviceBusy(OSError):
    """The device is opened exclusively elsewhere (mounted, swap, RAID, LVM, another copy)."""


def open_device(path: str, *, direct: bool = True, exclusive: bool = False) -> int:
    """Open a block device for reading and return the file descriptor (for writing:
    :func:`toolkit.disks.gate.open_target`, which decides first).

    ``exclusive`` adds O_EXCL, which on a block device fails with EBUSY when the
    device (or a partition of it) is mounted or held: raised as
    :class:`DeviceBusy`.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC
    if direct:
        flags |= os.O_DIRECT
    if exclusive:
        flags |= os.O_EXCL
    try:
        return os.open(path, flags)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise DeviceBusy(e.errno, f"{path} is busy (mounted, in use as swap, held by "
                             "RAID/LVM, or opened exclusively by another program)") from e
        raise


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def device_size(fd: int) -> int:
    """Size in bytes, from the device itself (BLKGETSIZE64)."""
    st = os.fstat(fd)
    if not stat.S_ISBLK(st.st_mode):
        return st.st_size
    buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    return struct.unpack("Q", buf)[0]


def logical_sector_size(fd: int) -> int:
    """Logical sector size in bytes (BLKSSZGET); 512 for a regular file."""
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        return 512
    buf = fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4)
    return struct.unpack("i", buf)[0]


def flush_buffers(fd: int) -> None:
    """Drop the device's page cache (BLKFLSBUF), so buffered readers see what is on it."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        fcntl.ioctl(fd, BLKFLSBUF, 0)


def zero_out(fd: int, offset: int, length: int) -> None:
    """Have the device write zeros over a range (BLKZEROOUT); sector aligned."""
    fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _libc_fallocate():
    try:
        f = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    return f


_FALLOCATE = _libc_fallocate()


def punch_zeros(fd: int, offset: int, length: int) -> None:
    """Free a range of a block device so that it reads back zeros: fallocate(PUNCH_HOLE |
    KEEP_SIZE), which the kernel turns into a write-zeroes request that may deallocate
    and never falls back to writing zeros itself (``blkdev_fallocate``,
    ``BLKDEV_ZERO_NOFALLBACK``): it succeeds only once the range reads back zeros, and
    fails with EOPNOTSUPP where the device cannot do that. (BLKDISCARD promises nothing
    about what is read afterwards.) Sector aligned."""
    if _FALLOCATE is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    if _FALLOCATE(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), f"offset {offset}")


def _libc_memcmp():
    # dlopen(NULL): the process's own symbols, libc's among them (no ldconfig lookup,
    # which ctypes.util.find_library runs as a subprocess at every start-up)
    try:
        f = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError):
        return None
    f.restype, f.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    return f


_MEMCMP = _libc_memcmp()


class AlignedBuffer:
    """A page-aligned buffer for O_DIRECT I/O (an anonymous mmap).

    ``view`` is a memoryview over the whole buffer; slice it for shorter I/O.
    """

    def __init__(self, size: int):
        self.size = size
        self.mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self.mem)
        # the mapping's address, for memcmp (the temporary export ends at once)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.mem)) if _MEMCMP else 0

    def is_zero(self, length: int, zeros: bytes) -> bool:
        """Whether the first ``length`` bytes are all zero (``zeros`` is at least that long).

        libc's memcmp against ``zeros``, in place. Without it, an mmap slice (a bytes
        copy) compared with ``==``: a copy and a memcmp, slower, still much faster than
        memoryview compares or ``any()`` (figures in docs/benchmarks.md).
        """
        if length > len(zeros):
            raise ValueError("zeros is shorter than length")
        if _MEMCMP:
            return _MEMCMP(self.address, zeros, length) == 0
        return self.mem[:length] == (zeros if length == len(zeros) else zeros[:length])

    def zero(self, start: int, length: int) -> None:
        self.view[start:start + length] = bytes(length)

    def close(self) -> None:
        """Unmap now, or, while a slice of it is still referenced (by the traceback of
        a failed read or write, say), when that goes: never mask the real error."""
        self.view.release()
        with contextlib.suppress(BufferError):
            self.mem.close()


def read_exact(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``offset``; a short read is retried, a premature end is EIO.

    Raises :class:`OSError` (usually EIO) with the failing position in ``filename``.
    """
    done = 0
    length = len(view)
    while done < length:
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError as e:
            raise OSError(e.errno, e.strerror, f"offset {offset + done}") from None
        if n == 0:
            raise OSError(errno.EIO, "unexpected end of device", f"offset {offset + done}")
        done += n


def write_exact(fd: int, view: memoryview, offset: int) -> None:
    """Write all of ``view`` at ``offset`` (retrying short writes)."""
    done = 0
    length = len(view)
    while done < length:
        n = os.pwrite(fd, view[done:], offset + done)
        if n == 0:
            raise OSError(errno.EIO, "device accepted no data", f"offset {offset + done}")
        done += n
