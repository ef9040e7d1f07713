"""One file inside an NTFS partition of the restored disk.

- :func:`find`: its path, matched case-insensitively at each level as Windows does
  (``ntfsls``, which matches exactly), with the names as the volume stores them;
- :func:`read_out`: its bytes, read with ``ntfscat`` without mounting anything (a read:
  no claim on the partition, allowed while the write gate holds the disk);
- :func:`rewrite`: new contents written into the file in place (its MFT record, security
  descriptor and attributes stay), through an ``ntfs-3g`` mount of the partition,
  read-write. Mounting it for writing is a write to the target: ntfs-3g claims the
  partition exclusively, which the kernel refuses while the whole disk is claimed, so the
  write gate lends it (:meth:`toolkit.disks.gate.WriteHold.lend`, as for ntfsresize in
  :mod:`toolkit.restore.fit`); it is unmounted in every case, then the file is read back
  with ``ntfscat`` and compared. Without the gate's hold nothing is written.

ntfs-3g mounts a volume that Windows left hibernated or with Fast Startup (its metadata
still in Windows' cache) only read-only: :class:`NtfsError` says so, the volume is not
touched (no ``remove_hiberfile``: that would throw away a session).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence

from toolkit.errors import Refused
from toolkit.system import mount, tools


class NtfsError(RuntimeError):
    """The file could not be found, read or rewritten; the message says what and why."""


def _listing(node: str, directory: str) -> list[str] | None:
    p = tools.run(["ntfsls", "-f", "-p", directory or "/", node], check=False, timeout=120)
    if p.returncode:
        return None
    return [n for n in p.stdout.splitlines() if n not in ("", ".", "..")]


def find(node: str, parts: Sequence[str]) -> str | None:
    """``/Windows/System32/config/SYSTEM`` as stored on ``node`` for the names ``parts``
    (any case), or None when one of them is missing."""
    path = ""
    for part in parts:
        names = _listing(node, path)
        if names is None:
            return None
        found = next((n for n in names if n.casefold() == part.casefold()), None)
        if found is None:
            return None
        path += "/" + found
    return path


def read_out(node: str, path: str) -> bytes:
    """The bytes of ``path`` on the NTFS partition ``node``."""
    p = tools.run(["ntfscat", "-f", node, path], check=False, text=False, timeout=600)
    if p.returncode:
        last = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise NtfsError(f"ntfscat cannot read {path} on {node}: {last[0]} "
                        f"(exit {p.returncode})")
    return p.stdout


@contextlib.contextmanager
def _lent(node: str, hold):
    if hold is None:
        raise NtfsError(f"{node} is written only while the write gate holds its disk")
    try:
        with hold.lend(node) as path:
            yield path
    except Refused as e:
        raise NtfsError(f"the write gate does not lend {node}: {e}") from None


def _write_in_place(mnt: str, path: str, data: bytes, was_sha256: str) -> None:
    """Write ``data`` into the file ``path`` of the volume mounted on ``mnt``: a regular
    file of that mount (no link out of it: O_NOFOLLOW, the real path, fstat), still the
    one whose SHA-256 is ``was_sha256``."""
    file = os.path.join(mnt, path.lstrip("/"))
    if not os.path.realpath(file).startswith(os.path.realpath(mnt) + os.sep):
        raise NtfsError(f"{path} leads out of the volume (a link): nothing written")
    fd = os.open(file, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != os.stat(mnt).st_dev:
            raise NtfsError(f"{path} is not a regular file of the volume: nothing written")
        h, pos = hashlib.sha256(), 0
        while chunk := os.pread(fd, 1 << 20, pos):
            h.update(chunk)
            pos += len(chunk)
        if h.hexdigest() != was_sha256:
            raise NtfsError(f"{path} through the mount is not the file that was read: "
                            "nothing written")
        view, pos = memoryview(data), 0
        while pos < len(data):
            pos += os.pwrite(fd, view[pos:pos + (1 << 20)], pos)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def rewrite(node: str, path: str, data: bytes, *, was_sha256: str, hold) -> None:
    """Replace the contents of ``path`` on ``node`` with ``data``, in place, through a
    read-write ntfs-3g mount the gate lends; refused when the file is no longer the one
    whose SHA-256 is ``was_sha256``; the file read back after unmounting must be ``data``."""
    mnt = tempfile.mkdtemp(prefix="rtk-ntfs-")
    try:
        with _lent(node, hold) as dev:
            try:
                mount.mount(dev, mnt, fstype="ntfs-3g")
            except tools.ToolError as e:
                raise NtfsError(f"ntfs-3g does not mount {node} for writing ({e}): Windows "
                                "may have been hibernated or left with Fast Startup on; "
                                "nothing written") from None
            try:
                if os.statvfs(mnt).f_flag & os.ST_RDONLY:  # ntfs-3g's fallback, not a failure
                    raise NtfsError(f"ntfs-3g mounts {node} only read-only: Windows was "
                                    "hibernated or left with Fast Startup on (shut it down "
                                    "fully before taking the image); nothing written")
                _write_in_place(mnt, path, data, was_sha256)
            finally:
                try:
                    mount.umount(mnt)
                except tools.ToolError as e:
                    raise NtfsError(f"{node} is still mounted on {mnt} ({e}): unmount it "
                                    "before using the disk") from None
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mnt)  # never recursive: a mount point still mounted keeps its files
    if read_out(node, path) != data:
        raise NtfsError(f"{path} on {node} read back after writing differs from what was "
                        "written")
