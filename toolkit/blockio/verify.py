"""Verification: read a target back, compare two disks, or hash one.

A copy reads its target back behind the writer, piece by piece against the source's
piece digests (:mod:`toolkit.blockio.readback`), and compares what that did not cover
(what an earlier run copied, before a resume) source and target side by side
(:func:`compare_devices`, over given ranges; unreadable source ranges count as the
zeros written in their place; the first differing byte is named, and
:func:`first_difference_in` finds it in a piece the read-back found different).
:func:`verify_against` reads a target back against region digests recorded before;
:func:`hash_device` checks a recorded hash.

A verification that cannot finish (a read error, a failure in the pipeline:
a bug, memory) says so in :attr:`VerifyOutcome.error`: it is never a mismatch.

A failed read is first put to the caller's ``on_error(pos, n, error)`` hook (one per
disk read; :class:`~toolkit.blockio.reader.DeviceReader`'s): the copy and ``rtk verify``
pass one that waits out a storage outage (:mod:`toolkit.disks.transport`, a layer this
one does not import) and returns the descriptor to read the same chunk again from; what
the hook raises (the outage outlasted its limit, or the job was cancelled meanwhile)
ends the verification with the hook's own words in :attr:`VerifyOutcome.error`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.blockio import blockdev
from toolkit.blockio.hashing import REGION_DIGEST, RegionHasher, SourceDigest, new_hasher
from toolkit.blockio.pipeline import BAD, DEFAULT_CHUNK, KiB, Pipeline
from toolkit.blockio.ranges import total
from toolkit.blockio.reader import DeviceReader
from toolkit.jobs.progress import Reporter


@dataclass
class VerifyOutcome:
    match: bool
    method: str  # "read back target" | "compared with source" | "hash"
    source_hash: str | None = None
    target_hash: str | None = None
    first_difference: dict | None = None  # {"start", "end"} and "offset" when known
    differing_regions: int = 0
    error: str | None = None
    seconds: float = 0.0
    # what it covered, and how (a copy: :mod:`toolkit.copy.behind`): the bytes read back
    # behind the writer (of them, before the writer finished), the bytes compared with
    # the source afterwards, and in words ("the whole disk: 49.87 GB", a domain's summary)
    read_back_bytes: int = 0
    read_while_writing: int = 0
    compared_bytes: int = 0
    covered: str | None = None


def _failure(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


class Stopped(Exception):
    """What an ``on_error`` hook raised (an outage that lasted too long): the verification
    stops, and says so in the hook's words, not as a mismatch or a crash."""


OnError = Callable[[int, int, OSError], int | None]


def asking(on_error: OnError | None) -> OnError | None:
    """``on_error``, whose exceptions come to the consumer as :class:`Stopped`."""
    if on_error is None:
        return None

    def ask(pos: int, n: int, error: OSError) -> int | None:
        try:
            return on_error(pos, n, error)
        except Exception as e:  # noqa: BLE001 - the hook's reason to stop, in words
            raise Stopped(str(e) or type(e).__name__) from e
    return ask


def compare_regions(out: VerifyOutcome, regions, digest: SourceDigest, first: int,
                    last: int) -> None:
    """Compare region digests ``first`` to ``last - 1`` of ``regions`` with ``digest``'s:
    count those that differ, and name the first in ``out.first_difference``."""
    for i in range(first, last):
        sl = slice(i * REGION_DIGEST, (i + 1) * REGION_DIGEST)
        if regions[sl] != digest.regions[sl]:
            out.differing_regions += 1
            if out.first_difference is None:
                start = i * digest.region_size
                out.first_difference = {"start": start,
                                        "end": min(digest.size, start + digest.region_size)}


def verify_against(fd: int, digest: SourceDigest, *, progress=None, cancel=None,
                   chunk_size: int = DEFAULT_CHUNK, buffers: int = 4,
                   on_error: OnError | None = None) -> VerifyOutcome:
    """Read ``digest.size`` bytes of ``fd`` with O_DIRECT and compare with ``digest``.

    ``progress``: a callback or a :class:`Reporter`. The first region whose
    digest differs is named in ``first_difference``. ``on_error``: asked about every
    failed read (the module's docstring).
    """
    reporter = progress if isinstance(progress, Reporter) else Reporter(progress, 0.25)
    cancel = cancel or threading.Event()
    t0 = time.monotonic()
    out = VerifyOutcome(match=False, method="read back target", source_hash=digest.hexdigest)
    hasher = RegionHasher(digest.algorithm, digest.size, digest.region_size)
    checked = 0  # regions compared so far
    try:
        with Pipeline(DeviceReader(fd, [(0, digest.size)], chunk_size,
                                   on_error=asking(on_error)), chunk=chunk_size,
                      buffers=buffers, cancel=cancel) as pipe:
            reporter.start("verify", digest.size)
            for kind, pos, n, payload in pipe:
                if kind == BAD:
                    out.error = f"cannot read the target: {payload}"
                    continue
                hasher.update(pos, payload.view[:n])
                full = hasher.pos // digest.region_size if hasher.pos < digest.size else \
                    len(digest.regions) // REGION_DIGEST
                compare_regions(out, hasher.regions, digest, checked, full)
                checked = full
                reporter.update(pos + n)
    except Stopped as e:  # an outage past its limit: no verdict on the bytes
        out.error = str(e)
    except Exception as e:  # noqa: BLE001 - the verification did not finish: a failure
        out.error = _failure(e)
    if cancel.is_set() and hasher.pos < digest.size:
        out.error = out.error or "cancelled"
    final = hasher.digest()
    if final and not out.error:
        out.target_hash = final.hexdigest
        out.match = out.differing_regions == 0 and final.hexdigest == digest.hexdigest
    elif not out.error:
        out.error = "the target was not read in full"
    out.seconds = time.monotonic() - t0
    reporter.update(hasher.pos, force=True)
    return out


def _first_diff(a: blockdev.AlignedBuffer, b: blockdev.AlignedBuffer, n: int) -> int:
    step = 64 * KiB
    for off in range(0, n, step):
        m = min(step, n - off)
        if a.mem[off:off + m] != b.mem[off:off + m]:
            x, y = a.mem[off:off + m], b.mem[off:off + m]
            return off + next(i for i in range(m) if x[i] != y[i])
    return n


def compare_devices(src_fd: int, dst_fd: int, size: int, algorithm: str, *, holes=(),
                    reporter: Reporter, cancel: threading.Event,
                    chunk_size: int = DEFAULT_CHUNK, buffers: int = 3,
                    src_error: OnError | None = None,
                    dst_error: OnError | None = None,
                    ranges: list[tuple[int, int]] | None = None, base: int = 0
                    ) -> VerifyOutcome:
    """Read source and target side by side (a pipeline each) and compare them.

    ``ranges``: what to compare (sorted, disjoint; default all ``size`` bytes), the hash
    being of those bytes in order; ``base``: bytes verified before (the progress counts
    from there). ``holes``: unreadable source ranges, compared as zeros (what the copy
    wrote). ``src_error``, ``dst_error``: asked about every failed read of that disk (the
    module's docstring).
    """
    t0 = time.monotonic()
    ranges = [(0, size)] if ranges is None else ranges
    want = total(ranges)
    out = VerifyOutcome(match=False, method="compared with source")
    stream = new_hasher(algorithm)
    done = 0
    try:
        with Pipeline(DeviceReader(src_fd, ranges, chunk_size, holes=holes,
                                   on_error=asking(src_error)),
                      chunk=chunk_size, buffers=buffers, cancel=cancel) as src, \
                Pipeline(DeviceReader(dst_fd, ranges, chunk_size,
                                      on_error=asking(dst_error)), chunk=chunk_size,
                         buffers=buffers, cancel=cancel) as dst:
            reporter.start("verify", base + want, base)
            for a, b in zip(src, dst, strict=False):  # the first to end ends it
                if a[0] == BAD or b[0] == BAD:
                    which, item = ("source", a) if a[0] == BAD else ("target", b)
                    out.error = f"cannot read the {which}: {item[3]}"
                    break
                _, pos, n, abuf = a
                bbuf = b[3]
                stream.update(abuf.view[:n])
                if abuf.mem[:n] != bbuf.mem[:n]:
                    out.differing_regions += 1
                    if out.first_difference is None:
                        out.first_difference = {"start": pos, "end": pos + n,
                                                "offset": pos + _first_diff(abuf, bbuf, n)}
                done += n
                reporter.update(base + done)
    except Stopped as e:  # an outage past its limit: no verdict on the bytes
        out.error = str(e)
    except Exception as e:  # noqa: BLE001 - the verification did not finish: a failure
        out.error = _failure(e)
    if done < want and not out.error:
        out.error = "cancelled" if cancel.is_set() else "the readers stopped early"
    if not out.error:
        out.source_hash = stream.hexdigest()
        out.match = out.differing_regions == 0
        if out.match:
            out.target_hash = out.source_hash  # byte for byte the same
    out.compared_bytes = done
    out.seconds = time.monotonic() - t0
    reporter.update(base + done, force=True)
    return out


def first_difference_in(src_fd: int, dst_fd: int, pos: int, n: int) -> int | None:
    """The position of the first byte that differs between the ``n`` bytes at ``pos`` of
    two devices (read again, O_DIRECT), None when they are equal now or cannot be read."""
    a, b = blockdev.AlignedBuffer(n), blockdev.AlignedBuffer(n)
    try:
        blockdev.read_exact(src_fd, a.view[:n], pos)
        blockdev.read_exact(dst_fd, b.view[:n], pos)
        off = _first_diff(a, b, n)
        return pos + off if off < n else None
    except OSError:
        return None
    finally:
        a.close()
        b.close()


def hash_device(fd: int, digest: SourceDigest, reporter: Reporter, cancel: threading.Event,
                chunk_size: int = DEFAULT_CHUNK, on_error: OnError | None = None
                ) -> VerifyOutcome:
    """Hash the first ``digest.size`` bytes of ``fd`` (``digest.algorithm``) and compare
    with ``digest.hexdigest`` (its region digests are not used). ``on_error``: asked
    about every failed read (the module's docstring)."""
    out = VerifyOutcome(match=False, method="hash", source_hash=digest.hexdigest)
    t0 = time.monotonic()
    stream = new_hasher(digest.algorithm)
    pos = 0
    try:
        with Pipeline(DeviceReader(fd, [(0, digest.size)], chunk_size,
                                   on_error=asking(on_error)), chunk=chunk_size,
                      buffers=4, cancel=cancel) as pipe:
            reporter.start("verify", digest.size)
            for kind, p, n, payload in pipe:
                if kind == BAD:
                    out.error = f"cannot read {payload}"
                    continue
                stream.update(payload.view[:n])
                pos = p + n
                reporter.update(pos)
    except Stopped as e:  # an outage past its limit: no verdict on the bytes
        out.error = str(e)
    except Exception as e:  # noqa: BLE001 - the verification did not finish: a failure
        out.error = _failure(e)
    if pos < digest.size and not out.error:
        out.error = "cancelled" if cancel.is_set() else "the reader stopped early"
    if not out.error:
        out.target_hash = stream.hexdigest()
        out.match = out.target_hash == digest.hexdigest
    out.seconds = time.monotonic() - t0
    return out
