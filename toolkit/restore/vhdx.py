"""A VHDX whose log was never replayed: its Hyper-V host stopped (a crash, a power cut:
the disaster itself) before it wrote the logged metadata back into the file. The file
is not damaged, but qemu-img opens it read-only only once the log is replayed
("... opened read-only, but contains a log that needs to be replayed").

- :func:`needs_replay`: qemu-img's own answer (``qemu-img info`` refuses with that).
- :func:`disk_size`: the virtual disk size and logical sector size from the file's
  metadata region (VHDX format specification 2.x: headers at 64 and 128 KiB, CRC-32C,
  the region table at 192 KiB), as the file stands: known before the replay.
- :func:`replay_copy`: a sparse copy of the file into a temporary directory, its log
  replayed there (``qemu-img check -r all``): the user's file is not touched.
  :func:`space_needed` is what the copy takes (the file's allocated bytes and a margin).
- :func:`replay_in_place`: the log replayed in the file itself, as Hyper-V would at its
  next start; only when the person asked for it (``--replay-vhdx-log-in-place``, the
  plan's ``"vhdx_log": "in-place"``, the menu's question), never on its own.
- :func:`plan_note`: what the plan says about it, or the refusal when a copy does not fit
  (:class:`NoRoomToReplay`, which the menu turns into its question).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import uuid

from toolkit.errors import Refused
from toolkit.restore import qemu
from toolkit.system import tools
from toolkit.units import human_size

LOG_MESSAGE = "contains a log that needs to be replayed"
MARGIN = 64 << 20  # left free in the temporary directory after the copy
CHUNK = 8 << 20
_SIZE_ITEM = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8").bytes_le
_SECTOR_ITEM = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f").bytes_le
_METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e").bytes_le


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _valid(block: bytes, signature: bytes) -> bool:
    """A header or region table: its signature, and its CRC-32C over the 4 KiB (64 KiB for
    a region table's) with the checksum field zeroed."""
    if len(block) < 8 or block[:4] != signature:
        return False
    return crc32c(block[:4] + b"\0\0\0\0" + block[8:]) == struct.unpack_from("<I", block, 4)[0]


class NoRoomToReplay(Refused):
    """The VHDX's log must be replayed and a copy does not fit: ``location``, ``needed``,
    ``free``, ``tmpdir``. The menu asks whether to replay it in the file itself."""

    def __init__(self, message: str, location: str, needed: int, free: int, tmpdir: str):
        super().__init__(message)
        self.location, self.needed, self.free, self.tmpdir = location, needed, free, tmpdir


def needs_replay(path: str) -> bool:
    """Whether qemu-img refuses to open ``path`` read-only for its log."""
    p = tools.run([qemu.QEMU_IMG, "info", "--output=json", "-f", "vhdx", path], check=False,
                  timeout=60)
    return p.returncode != 0 and LOG_MESSAGE in p.stderr + p.stdout


def header(path: str) -> dict | None:
    """The current header (valid, with the higher sequence number): ``sequence``,
    ``log_guid`` (all zeros: no log to replay), ``log_length``, ``log_offset``."""
    best = None
    with open(path, "rb") as f:
        for at in (64 << 10, 128 << 10):
            h = os.pread(f.fileno(), 4096, at)
            if not _valid(h, b"head"):
                continue
            seq, = struct.unpack_from("<Q", h, 8)
            if best is None or seq > best["sequence"]:
                length, offset = struct.unpack_from("<IQ", h, 68)
                best = {"sequence": seq, "log_guid": str(uuid.UUID(bytes_le=h[48:64])),
                        "log_length": length, "log_offset": offset}
    return best


def disk_size(path: str) -> tuple[int | None, int | None]:
    """(virtual disk size, logical sector size) from the metadata region; (None, None)
    when the file does not say (a damaged region table: qemu-img says why later)."""
    with open(path, "rb") as f:
        fd = f.fileno()
        for at in (192 << 10, 256 << 10):
            table = os.pread(fd, 64 << 10, at)
            if not _valid(table, b"regi"):
                continue
            count, = struct.unpack_from("<I", table, 8)
            for i in range(min(count, 2047)):
                guid, offset, length = struct.unpack_from("<16sQI", table, 16 + 32 * i)
                if guid == _METADATA_REGION:
                    return _metadata(fd, offset, length)
    return None, None


def _metadata(fd: int, offset: int, length: int) -> tuple[int | None, int | None]:
    region = os.pread(fd, min(length, 1 << 20), offset)
    if region[:8] != b"metadata":
        return None, None
    count, = struct.unpack_from("<H", region, 10)
    found: dict[bytes, int] = {}
    for i in range(min(count, 2047)):
        item, at, size = struct.unpack_from("<16sII", region, 32 + 32 * i)
        if item in (_SIZE_ITEM, _SECTOR_ITEM) and size in (4, 8):
            found[item] = int.from_bytes(region[at:at + size], "little")
    return found.get(_SIZE_ITEM), found.get(_SECTOR_ITEM)


def space_needed(path: str) -> int:
    """What a copy of ``path`` takes (its allocated bytes, holes stay holes) plus
    :data:`MARGIN`."""
    return os.stat(path).st_blocks * 512 + MARGIN


def state(path: str) -> str:
    """The state in words, for messages."""
    return (f"{path} is a VHDX whose log was never replayed: its Hyper-V host stopped (a "
            "crash, a power cut) before writing the logged changes back into the file. The "
            "image is not damaged; qemu-img reads it once the log is replayed")


def plan_note(path: str, in_place: bool, tmpdir: str) -> str:
    """The plan's warning; raises :class:`NoRoomToReplay` when a copy is asked for and
    does not fit in ``tmpdir``."""
    if in_place:
        if not os.access(path, os.W_OK) or os.statvfs(path).f_flag & os.ST_RDONLY:
            raise Refused(f"{state(path)}. It cannot be replayed in {path} itself: the file "
                          "is read-only or lies on a read-only filesystem (media opened in "
                          "the menu are mounted read-only until you agree to the replay); "
                          "replay it on a copy instead (--tmpdir DIR with room); nothing was "
                          "written")
        return (f"{state(path)}: it is replayed in {path} itself before anything is "
                "written, as asked (the file changes, as Hyper-V would change it)")
    need = space_needed(path)
    free = shutil.disk_usage(tmpdir).free
    if need > free:
        raise NoRoomToReplay(
            f"{state(path)}. Replaying it on a copy needs {need} bytes ({human_size(need)}) "
            f"in {tmpdir}, which has {free} bytes ({human_size(free)}) free: give a "
            "temporary directory with room (--tmpdir DIR), or let the restore replay the log "
            f"in {path} itself (--replay-vhdx-log-in-place; the file changes, as Hyper-V "
            "would change it: keep a copy of it if it is the only one); nothing was written",
            path, need, free, tmpdir)
    return (f"{state(path)}: it is replayed on a copy in {tmpdir} (needs {human_size(need)}, "
            f"{human_size(free)} free) before anything is written; {path} is not changed")


def question(e: NoRoomToReplay) -> str:
    """The menu's question when a copy does not fit: replay the log in the file itself?"""
    return (f"{state(e.location)}.\n\nReplaying it on a copy needs {human_size(e.needed)} in "
            f"{e.tmpdir}, which has {human_size(e.free)} free.\n\nReplay the log in "
            f"{e.location} itself? The file changes, as Hyper-V would change it at its next "
            "start (its medium is made writable for that): keep a copy of it if it is the "
            "only one. Nothing is written to any disk before the restore is confirmed.")


def replay(path: str) -> None:
    """Replay the log of ``path`` (``qemu-img check -r all``), then check it opens."""
    tools.run([qemu.QEMU_IMG, "check", "-r", "all", "-f", "vhdx", path], error=qemu.QemuError,
              timeout=3600)
    if needs_replay(path):
        raise qemu.QemuError([qemu.QEMU_IMG, "check", "-r", "all", path], 1,
                             f"the log of {path} is still not replayed after qemu-img check -r "
                             "all")


def _segments(fd: int, size: int):
    """The data segments ``(start, end)`` of a file (holes skipped)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


def sparse_copy(src: str, dst: str, reporter=None, cancel=None) -> None:
    """Copy ``src`` to the new file ``dst``, holes kept as holes (``reporter``: progress in
    bytes of the file, phase "replay"; ``cancel``: an Event that stops it, OSError)."""
    # dst: a new name in our own temporary directory; never an existing file or a link
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(src, "rb") as fi, open(fd, "wb") as fo:
        size = os.fstat(fi.fileno()).st_size
        if reporter:
            reporter.start("replay", size)
        for start, end in _segments(fi.fileno(), size):
            pos = start
            while pos < end:
                if cancel is not None and cancel.is_set():
                    raise InterruptedError("cancelled")
                n = min(CHUNK, end - pos)
                data = os.pread(fi.fileno(), n, pos)
                if not data:
                    break
                os.pwrite(fo.fileno(), data, pos)
                pos += len(data)
                if reporter:
                    reporter.update(pos)
        fo.truncate(size)
        os.fsync(fo.fileno())
    if reporter:
        reporter.update(size, force=True)


def replay_copy(src: str, directory: str, reporter=None, cancel=None) -> str:
    """A copy of ``src`` in ``directory``, its log replayed; its path."""
    dst = os.path.join(directory, "replayed.vhdx")
    try:
        sparse_copy(src, dst, reporter, cancel)
        replay(dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dst)
        raise
    return dst


def replay_in_place(path: str) -> None:
    replay(path)
