"""A multicast stream held whole before anything is written: the spool (docs/fleet.md).

A ``udpcast://`` stream is read once. When there is room, :func:`receive` takes it whole
into a file first (the spool), hashing it on the way; udp-receiver then never waits for
the disk, so the slowest disk of a fleet no longer paces the sender. The SHA-256 (and
the URL's ``size=``) is compared once the stream has all arrived, before the target is
written at all: a wrong image leaves the disk untouched, byte for byte. The restore then
writes the spool as it writes a local file (its first MiB checked, first MiB last,
verified), and removes it.

Where (:func:`candidates`): ``--tmpdir`` when given, else the temporary directory
(``$TMPDIR``, /tmp: RAM on the live system), then the RTK-DATA partition when it is
mounted (:func:`toolkit.system.paths.data_mount`). The room there (:func:`room`): the
free space less :data:`DISK_MARGIN`; in a RAM-backed directory (tmpfs, the live
system's overlay: :mod:`toolkit.system.state_location` tells) also no more than
MemAvailable less a tenth of the RAM, at least 1 GiB (:data:`RAM_MARGIN_MIN`): a spool
never fills the RAM; on FAT at most 4 GiB - 1 (its largest file).

How large the stream may be (:func:`bound`): the URL's ``size=`` (the image file's size,
exact) when given, else the largest stream that can hold an image that fits the target:
the target's size plus 1/256 plus 1 MiB, zstd's worst case for data that does not
compress (``ZSTD_compressBound``: size + size/256); gzip's (about 1/3000 with its stored
blocks) and xz's (about 1/20000 with its uncompressed chunks) are smaller, and a plain
image is at most the target's size.

:func:`decide` (when the restore is planned) and ``spool=``: ``auto`` holds the stream
when that bound fits in a candidate's room; ``always`` holds it in the one with the most
room even when the bound does not fit; ``never`` (or ``auto`` without room) writes it
onto the disk as it arrives, first MiB last: a wrong image overwrites the disk but leaves
no valid partition table. :func:`note` says which, in the plan's warnings. A spool that
outgrows its room, or a stream larger than the bound, stops the receive: nothing written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from toolkit.errors import Refused
from toolkit.restore import multicast, stream
from toolkit.restore.checks import ChecksumMismatch, mismatch_message
from toolkit.restore.source import CHUNK, is_multicast, os_reason
from toolkit.restore.target import Failed
from toolkit.system import paths, state_location
from toolkit.units import human_size

MiB, GiB = 1 << 20, 1 << 30
DISK_MARGIN = 64 * MiB  # left free on the spool's filesystem (as an HTTP spool leaves)
RAM_MARGIN_MIN = GiB  # left of MemAvailable in RAM at least, or a tenth of the RAM
FAT_MAX_FILE = 4 * GiB - 1
CHECK_EVERY = 64 * MiB  # the room is looked at again after this much


@dataclass
class Decision:
    """Whether a multicast stream is held first (``hold``), where (``directory``, RAM or
    not), the room it may take there, the most it may be (``bound``, from ``size=`` or the
    target); ``received``, ``seconds``: once it was held. In the report as ``image.spool``."""

    mode: str  # the URL's spool=: auto, always, never
    hold: bool
    directory: str | None
    ram: bool
    room: int | None
    bound: int
    bound_from: str  # "size=" (the URL's) or "target"
    received: int | None = None
    seconds: float | None = None


def bound(target_size: int, size: int | None = None) -> tuple[int, str]:
    """``(the most bytes the stream may have, "size=" or "target")``."""
    if size is not None:
        return size, "size="
    return target_size + target_size // 256 + MiB, "target"


def candidates(tmpdir: str | None) -> list[str]:
    """Where a spool may go, in order: ``tmpdir`` alone when given, else the temporary
    directory, then the RTK-DATA partition when it is mounted."""
    if tmpdir:
        return [tmpdir]
    found = [tempfile.gettempdir()]
    data = paths.data_mount()
    if os.path.ismount(data):
        found.append(data)
    return found


def _meminfo(text: str | None = None) -> dict[str, int]:
    """/proc/meminfo in bytes (``MemTotal``, ``MemAvailable``...)."""
    if text is None:
        with open("/proc/meminfo") as f:
            text = f.read()
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def room(directory: str, *, meminfo: str | None = None,
         mountinfo: str | None = None) -> tuple[int, bool]:
    """``(bytes a spool may take in directory, whether it is RAM-backed)``."""
    try:
        free = shutil.disk_usage(directory).free
        loc = state_location.location(directory, mountinfo=mountinfo)
    except OSError:
        return 0, False
    ram = not loc.persistent
    if not loc.writable:
        return 0, ram
    most = free - DISK_MARGIN
    if ram:
        mem = _meminfo(meminfo)
        margin = max(RAM_MARGIN_MIN, mem.get("MemTotal", 0) // 10)
        most = min(most, mem.get("MemAvailable", 0) - margin)
    if loc.fstype in ("vfat", "msdos"):
        most = min(most, FAT_MAX_FILE)
    return max(most, 0), ram


def decide(location: str, target_size: int, tmpdir: str | None = None, **probe) -> Decision:
    """Whether the stream of ``location`` is held first, for a target of ``target_size``
    bytes (``probe``: :func:`room`'s ``meminfo``, ``mountinfo``, for tests)."""
    spec = multicast.parse(location)
    why = multicast.missing_interface(spec)
    if why:
        raise Refused(why)
    most, source = bound(target_size, spec.size)
    if spec.spool == "never":
        return Decision("never", False, None, False, None, most, source)
    rooms = [(d, *room(d, **probe)) for d in candidates(tmpdir)]
    best = max(rooms, key=lambda r: r[1])
    fit = next((r for r in rooms if r[1] >= most), None)
    if fit is None and spec.spool == "always":
        fit = best
    where, space, ram = fit or best
    return Decision(spec.spool, fit is not None, where, ram, space, most, source)


def _where(d: Decision) -> str:
    return f"{d.directory} ({'RAM' if d.ram else 'disk'}, room for {human_size(d.room or 0)})"


def _most(d: Decision) -> str:
    if d.bound_from == "size=":
        return f"{d.bound} bytes, its size="
    return f"up to {human_size(d.bound)}, the target's size plus 1/256 and 1 MiB"


OVERWRITES = "a wrong image overwrites the disk but leaves no valid partition table"


def note(d: Decision, sha256: bool = True) -> str:
    """What the plan (the confirmation, the report's warnings) says of the decision;
    ``sha256``: a SHA-256 is given (the command line may have none)."""
    over = OVERWRITES if sha256 else "with no checksum given, a wrong image is written whole"
    if d.mode == "never":
        return (f"spool=never: the multicast stream is written onto the disk as it arrives, "
                f"its first MiB last: {over}")
    if not d.hold:
        return (f"no room to hold the stream: {over} (it is written onto the disk as "
                f"it arrives, its first MiB last; it may be {_most(d)}, and the most room to "
                f"hold it is {human_size(d.room or 0)} in {d.directory}, "
                f"{'RAM' if d.ram else 'disk'}; docs/fleet.md)")
    held = (f"the multicast stream is held in {_where(d)} and checked there "
            f"({'SHA-256, ' if sha256 else ''}format, size) before anything is written"
            + (": a wrong image leaves the disk untouched" if sha256 else
               ": with no checksum given, any image of that format and size is written"))
    if d.room is not None and d.room < d.bound:
        return (f"spool=always: {held}; it may be {_most(d)}: if it outgrows that room, "
                "the receive stops and nothing is written")
    return held


def size_unknown(compression: str | None) -> str:
    """The warning for a multicast image whose first MiB (no GPT) and, when not held
    first or compressed, length do not tell its size before writing."""
    why = (f"{compression}-compressed, without a GPT" if compression else
           "without a GPT, and not held first")
    return (f"the multicast image's size is not known before writing ({why}): a too large "
            "image fails while writing, and the target is then left without a partition "
            "table")


def receive(plan, reporter, cancel):
    """Hold ``plan``'s multicast stream in its spool and check it, before anything is
    written: a :class:`~toolkit.restore.checksum.Checked` with the spool (kept in
    ``plan.checked``, which the restore removes), or None (not multicast, not held).
    Raises :class:`ChecksumMismatch`, :class:`Failed` (status "mismatch": not the
    ``size=``; "cancelled"; "failed": the room ran out), :class:`Refused` (larger than
    any image the target holds) or :class:`~toolkit.restore.multicast.MulticastError`
    (no sender, the stream lost): every one with nothing written."""
    img = plan.image
    if not is_multicast(img.location):
        return None
    d = img.spool = img.spool or decide(img.location, plan.target.size, plan.options.tmpdir)
    if not d.hold:
        return None
    from toolkit.restore.checksum import Checked  # (checksum imports plan, which imports us)
    try:
        tmp = tempfile.TemporaryDirectory(prefix="rtk-stream-", dir=d.directory)
    except OSError as e:
        raise Failed(f"cannot make the spool for the multicast stream in {d.directory}: "
                     f"{os_reason(e)}; nothing was written") from None
    path = os.path.join(tmp.name, "stream")
    try:
        got = _take(plan, d, path, reporter, cancel)
        _compare(plan, d, got)
    except BaseException:
        tmp.cleanup()
        raise
    img.file_size = d.received  # the file as sent: a plain image's size (checked next)
    plan.checked = Checked(got, path, seconds=d.seconds or 0.0, tmp=tmp)
    return plan.checked


def _compare(plan, d: Decision, got: str) -> None:
    img, spec = plan.image, multicast.parse(plan.image.location)
    held = f"nothing was written (the stream was held in {d.directory}, and is deleted)"
    if img.expected_sha256 and got != img.expected_sha256:
        raise ChecksumMismatch(mismatch_message(img.location, got, img.expected_sha256,
                                                img.sha256_from) + "; " + held, got)
    # a matching SHA-256 is the planned image whatever size= says (a size= typed wrong)
    if spec.size is not None and d.received != spec.size and not img.expected_sha256:
        raise Failed(f"{img.location}: the stream has {d.received} bytes, its size= says "
                     f"{spec.size}: not the planned image; {held}", "mismatch")


def _take(plan, d: Decision, path: str, reporter, cancel) -> str:
    """Receive the stream into ``path``; its SHA-256. The room is looked at again every
    :data:`CHECK_EVERY` bytes; ``d.received`` and ``d.seconds`` are set."""
    from toolkit.restore.checksum import open_image
    t0, done = time.monotonic(), 0
    left = room(d.directory)[0]  # now: the plan was made a while ago
    src = open_image(plan)  # udp-receiver
    raw = stream.Input(src, background=True)
    out, ended = None, False
    try:
        # a new name in our own TemporaryDirectory: never an existing file or a link
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        out = open(fd, "wb")  # noqa: SIM115 - closed below
        data = raw.read(CHUNK)  # waits for the sender: MulticastError, nothing written
        reporter.start("receive", d.bound if d.bound_from == "size=" else 0)  # 0: unknown
        while data:
            if cancel.is_set():
                raise Failed(f"cancelled at byte {done} of the multicast stream, while it was "
                             f"held in {d.directory}: nothing was written", "cancelled")
            out.write(data)
            done += len(data)
            _limits(plan, d, done, left)
            if done % CHECK_EVERY < len(data) and room(d.directory)[0] <= 0:
                raise _outgrown(d, done)
            reporter.update(done)
            data = raw.read(CHUNK)
        ended = True
        reporter.update(done, force=True)
    except multicast.MulticastError as e:  # the stream lost
        if done == 0:  # no sender, a late join: its message says nothing was written
            raise
        raise multicast.MulticastError(f"{e}; nothing was written (the stream was held in "
                                       f"{d.directory})") from None
    except Failed as e:
        if e.status != "cancelled" or "nothing was written" in str(e):
            raise
        raise Failed(f"{e}, while it was held in {d.directory}: nothing was written",
                     "cancelled") from None  # (the menu's Esc stopped udp-receiver)
    except OSError as e:  # the spool's own writes: full, too large a file
        raise Failed(f"the spool in {d.directory} could not take the multicast stream at "
                     f"byte {done}: {os_reason(e)}; nothing was written") from None
    finally:
        if not ended:
            src.stop()  # udp-receiver ends: the reading thread sees the end of its pipe
        raw.close()
        if out is not None:
            out.close()
        src.close()
    d.received, d.seconds = done, round(time.monotonic() - t0, 3)
    return raw.sha256.hexdigest()


def _limits(plan, d: Decision, done: int, left: int) -> None:
    if done > d.bound and d.bound_from == "size=":
        raise Failed(f"{plan.image.location}: the stream is already {done} bytes, more than "
                     f"its size= ({d.bound}): not the planned image; nothing was written",
                     "mismatch")
    if done > d.bound:
        raise Refused(f"{plan.image.location}: the stream is already {done} bytes, more than "
                      f"any image that fits the target could be ({d.bound} bytes, its size "
                      f"{plan.target.size} plus 1/256 and 1 MiB); nothing was written")
    if done > left:
        raise _outgrown(d, done)


def _outgrown(d: Decision, done: int) -> Failed:
    return Failed(f"the multicast stream outgrew the room to hold it in {d.directory} at byte "
                  f"{done} (a margin stays free, docs/fleet.md): the receive stopped; nothing "
                  "was written", "failed")
