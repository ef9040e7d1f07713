"""Files replaced whole: after a crash or a power cut, the old version or the new one,
never a mix or a truncated file.

:func:`write_atomic` writes a temporary file beside the target, ``fsync`` s it, renames it
over the target (``rename(2)`` is atomic within a filesystem) and ``fsync`` s the
directory, so that the rename itself is on the disk when the call returns. The mapfile
(:meth:`toolkit.blockio.mapfile.Mapfile.save`) and the reports
(:func:`toolkit.jobs.report.write_report`) are written this way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

TMP_SUFFIX = ".tmp"  # what a temporary file's name ends with (readers skip these)


def fsync_dir(directory: str) -> None:
    """``fsync`` the directory ``directory`` (its entries: a rename, a new file). A
    filesystem that cannot (EINVAL) loses nothing more than it would anyway."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` (text is written as UTF-8): temporary file, fsync,
    rename, fsync of the directory. On failure the temporary file is removed and
    ``path`` is untouched."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):  # a device node, a symlink, a FIFO: never
            raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
                          "not a regular file: refused, nothing written", path)
    # a new file of our own, never an existing one (O_EXCL) nor a link's target
    # (O_NOFOLLOW): a name planted beside the file cannot redirect the write
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".",
                               suffix=TMP_SUFFIX)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)
