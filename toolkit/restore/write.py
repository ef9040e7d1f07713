"""Writing an image onto the target disk, first MiB last.

The order, after coreos-installer, so that a restore that fails or is
interrupted at any point never leaves a disk that looks valid (a partition
table over half an image would be mounted, booted or copied by somebody):

1. :meth:`Target.wipe_ends` zeros the target's first MiB (the old MBR/GPT)
   and last MiB (the old backup GPT), then fsyncs;
2. the image's first MiB is held in memory; everything after it is written
   with O_DIRECT (:func:`write_stream`, or qemu-img for container formats);
3. fsync, then the image's checksum (when given) and the read-back
   verification (O_DIRECT, :class:`ReadBack`, reading behind the writer
   what it has fdatasync'ed, hashed like the image: its hash and BLAKE3
   region digests, the held-back first MiB standing in for the zeros still
   on the target);
4. only then :meth:`Target.write_head` writes the first MiB, fsyncs and reads
   it back.

On any failure after step 1, :meth:`Target.wipe_ends` runs again (also over
the image's own end, where its backup GPT landed), so what is left has no
partition table that any tool would trust.
"""

from __future__ import annotations

import os
import threading

from toolkit.blockio import blockdev, readback
from toolkit.blockio.hashing import (
    HashStage,
    RegionHasher,
    SourceDigest,
    finish_digest,
    region_size_for,
)
from toolkit.blockio.pipeline import DATA, DEFAULT_CHUNK, ZERO, Feed, Pipeline
from toolkit.blockio.readback import SYNC_EVERY
from toolkit.blockio.verify import VerifyOutcome
from toolkit.jobs.progress import Reporter
from toolkit.restore.target import HEAD, Failed, MiB, Target

__all__ = ["HEAD", "SYNC_EVERY", "Failed", "MiB", "ReadBack", "Target", "write_stream"]


def _fill(reader, buf: blockdev.AlignedBuffer, chunk: int) -> int:
    n, into = 0, getattr(reader, "readinto", None)
    while n < chunk:
        if into is not None:
            got = into(buf.view[n:chunk])
        else:
            data = reader.read(chunk - n)
            got = len(data)
            buf.view[n:n + got] = data
        if not got:
            break
        n += got
    return n


def _image_reader(reader, chunk: int):
    """The pipeline's reader of the image after its head: fills the buffers from
    ``reader`` (decompressing into them when it has ``readinto``), in order."""
    def read(feed: Feed) -> None:
        pos = HEAD
        try:
            while not feed.stopped:
                buf = feed.buffer()
                n = _fill(reader, buf, chunk)
                if not n:
                    feed.give_back(buf)
                    return
                feed.put(DATA, pos, n, buf)
                pos += n
                if n < chunk:
                    return
        except Failed:
            raise
        except Exception as e:
            raise Failed(f"reading the image failed at image byte {pos}: {e}") from e
    return read


class _ImageHash(HashStage):
    """The hash stage of a restore, whose failure names the image byte."""

    def __call__(self, item):
        try:
            return super().__call__(item)
        except Exception as e:
            raise Failed(f"hashing the image failed at image byte {item[1]}: {e!r}") from e


def write_stream(reader, target: Target, *, head: bytes, algorithm: str, reporter: Reporter,
                 cancel: threading.Event, progress_of=None, total: int = 0,
                 chunk: int = DEFAULT_CHUNK, read_back: bool = False
                 ) -> tuple[int, SourceDigest, ReadBack | None]:
    """Write the image after its first MiB (``head``, already read) at byte 1 MiB onwards.

    Four stages, each a thread: the download (:class:`toolkit.restore.stream.Input`
    in the background), the decompression (the pipeline's reader), the hashes and
    the zero check (its :class:`~toolkit.blockio.hashing.HashStage`), and the writes
    (here; :mod:`toolkit.blockio.pipeline`). An all-zero chunk is not written but
    zeroed by the device (BLKZEROOUT: the same result, read back by the
    verification; a SAN does it without the data crossing the network, a thin LUN
    keeps it allocated).

    Returns ``(image_size, digest, read_back)``: the image's length; its digest
    (the hash, ``algorithm``, of every byte including the head, and BLAKE3
    region digests); and with ``read_back`` a running :class:`ReadBack`, which
    has been reading the target back behind the writer (the writer fdatasyncs
    every :data:`SYNC_EVERY` bytes, and hands it what is on the disk):
    :meth:`ReadBack.finish` completes the verification. ``progress_of(pos)``
    maps the image position to the progress count (default: the position itself).
    """
    region = region_size_for(target.size, chunk)
    digest = RegionHasher(algorithm, target.size, region)
    digest.update(0, memoryview(head))
    target.watch(reporter, cancel)
    back = ReadBack(target, algorithm, region, head, chunk) if read_back else None
    end, unsynced = len(head), 0  # a head under 1 MiB is the whole image
    try:
        with Pipeline(_image_reader(reader, chunk), chunk=chunk, buffers=4,
                      stage=_ImageHash(digest, zeros=bytes(chunk)), cancel=cancel,
                      names=("rtk-restore-read", "rtk-hasher")) as pipe:
            if back:
                back.start()
            reporter.start("write", total)
            for kind, pos, n, buf in pipe:
                if cancel.is_set():
                    raise Failed("cancelled", "cancelled")
                try:
                    error = _write(target, buf, pos, n, zero=kind == ZERO)
                    if error is not None:
                        raise error
                    end, unsynced = pos + n, unsynced + n
                    if back and unsynced >= SYNC_EVERY:
                        target.retry(os.fdatasync, end)
                        back.advance(end)
                        unsynced = 0
                    reporter.update(progress_of(end) if progress_of else end)
                except OSError as e:  # the target failed: stop (the pipeline drains)
                    raise Failed(f"write error on the target {target.path} at byte "
                                 f"{pos}: {e.strerror or e}") from None
        if cancel.is_set():
            raise Failed("cancelled", "cancelled")
        target.retry(os.fsync, end)
    except BaseException:
        if back:
            back.stop()
        raise
    return end, finish_digest(digest, end), back


def _write(target: Target, buf: blockdev.AlignedBuffer, pos: int, n: int, *, zero: bool
           ) -> Failed | None:
    if pos + n > target.size:
        return Failed(f"the image is larger than the target: more than {pos + n} bytes, "
                      f"the target {target.path} has {target.size}")
    if n % target.sector:
        return Failed(f"the image ends at byte {pos + n}, not on a {target.sector}-byte sector "
                      "boundary: truncated, or not a disk image")
    if zero and target.zeroout:
        try:
            target.retry(lambda fd: blockdev.zero_out(fd, pos, n), pos)  # outages waited out
            target.zeroed += n
            return None
        except OSError:
            target.zeroout = False  # not offered by this device: write the zeros
    target.retry(lambda fd: blockdev.write_exact(fd, buf.view[:n], pos), pos)
    return None


class ReadBack(readback.RegionReadBack):
    """The verification, overlapped with writing (:class:`toolkit.blockio.readback.RegionReadBack`,
    whose reading the copy's read-back shares): the target read back (O_DIRECT)
    behind the writer, each part once the writer has fdatasync'ed it, hashed as the image
    was hashed, the held-back head standing in for the target's first MiB (still zeros;
    written last, and read back then). Where the writer waits for a download or the
    decompression, the reading costs nothing; :meth:`finish` reads the rest and
    compares. :meth:`stop` on every way out. Failures are :class:`Failed`.
    """

    def __init__(self, target: Target, algorithm: str, region_size: int, head: bytes,
                 chunk: int):
        super().__init__(target.fd, target.size, algorithm, region_size, head, chunk,
                         on_error=getattr(target, "read_failed", None))

    def finish(self, digest: SourceDigest, reporter: Reporter, cancel: threading.Event
               ) -> VerifyOutcome:
        """Read what is left (up to ``digest.size``, all of it flushed now) and compare.
        A failure of the reading or hashing (a bug, memory) raises :class:`Failed`."""
        try:
            return super().finish(digest, reporter, cancel)
        except readback.Cancelled:
            raise Failed("cancelled", "cancelled") from None
        except Failed:
            raise
        except Exception as e:
            raise Failed(f"reading the target back failed: {e!r}") from e
