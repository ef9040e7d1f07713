"""Verification: read a target back, compare two disks, or check a recorded hash.

Verification, honestly: on an uninterrupted copy without read errors the
source is hashed while it is read (whole-disk hash plus one BLAKE3 digest per
region); the target is then read back with O_DIRECT and hashed the same way
(:func:`verify_against`), and the first region whose digests differ is named.
When the copy was resumed or met read errors, the source hash of this run
does not cover the whole disk, so the verification reads source and target
again, side by side, and compares them chunk by chunk
(:func:`compare_devices`; unreadable source ranges count as the zeros written
in their place).
"""

from __future__ import annotations

import os
import queue
import threading
import time

from toolkit.blockio import blockdev
from toolkit.blockio.reading import (
    DEFAULT_CHUNK,
    REGION_DIGEST,
    KiB,
    Reader,
    RegionHasher,
    buffer_pool,
    close_pool,
    new_hasher,
    region_size_for,
)
from toolkit.copy.plan import resolve
from toolkit.copy.report import write_result_report
from toolkit.copy.result import CopyResult, SourceDigest, VerifyOutcome, conclude
from toolkit.disks.inventory import Disk, list_disks
from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter


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
                   chunk_size: int = DEFAULT_CHUNK, buffers: int = 4) -> VerifyOutcome:
    """Read ``digest.size`` bytes of ``fd`` with O_DIRECT and compare with ``digest``.

    ``progress``: a callback or a :class:`Reporter`. The first region whose
    digest differs is named in ``first_difference``.
    """
    reporter = progress if isinstance(progress, Reporter) else Reporter(progress, 0.25)
    cancel = cancel or threading.Event()
    t0 = time.monotonic()
    out = VerifyOutcome(match=False, method="read back target", source_hash=digest.hexdigest)
    hasher = RegionHasher(digest.algorithm, digest.size, digest.region_size)
    free, q, stop = buffer_pool(buffers, chunk_size), queue.Queue(buffers + 1), threading.Event()
    reader = Reader(fd, [(0, digest.size)], chunk_size, free, q, stop)
    reader.start()
    reporter.start("verify", digest.size)
    checked = 0  # regions compared so far
    try:
        while True:
            if cancel.is_set():
                stop.set()
            kind, pos, n, payload = q.get()
            if kind == "end":
                break
            if kind == "bad":
                out.error = f"cannot read the target: {payload}"
                continue
            hasher.update(pos, payload.view[:n])
            free.put(payload)
            full = hasher.pos // digest.region_size if hasher.pos < digest.size else \
                len(digest.regions) // REGION_DIGEST
            compare_regions(out, hasher.regions, digest, checked, full)
            checked = full
            reporter.update(pos + n)
    finally:
        stop.set()
        reader.join()
        close_pool(free)
    if cancel.is_set() and hasher.pos < digest.size:
        out.error = out.error or "cancelled"
    final = hasher.digest()
    if final and not out.error:
        out.target_hash = final.hexdigest
        out.match = out.differing_regions == 0 and final.hexdigest == digest.hexdigest
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
                    chunk_size: int = DEFAULT_CHUNK, buffers: int = 3) -> VerifyOutcome:
    """Read source and target side by side (two reader threads) and compare them.

    ``holes``: unreadable source ranges, compared as zeros (what the copy wrote).
    """
    t0 = time.monotonic()
    out = VerifyOutcome(match=False, method="compared with source")
    stream = new_hasher(algorithm)
    stop = threading.Event()
    pools = [buffer_pool(buffers, chunk_size), buffer_pool(buffers, chunk_size)]
    queues = [queue.Queue(buffers + 1), queue.Queue(buffers + 1)]
    readers = [Reader(src_fd, [(0, size)], chunk_size, pools[0], queues[0], stop,
                       holes=holes),
               Reader(dst_fd, [(0, size)], chunk_size, pools[1], queues[1], stop)]
    for r in readers:
        r.start()
    reporter.start("verify", size)
    pos = 0
    try:
        while True:
            if cancel.is_set():
                stop.set()
            a, b = queues[0].get(), queues[1].get()
            if a[0] == "end" or b[0] == "end":
                for q, item in zip(queues, (a, b), strict=True):
                    while item[0] != "end":  # drain the other reader
                        if item[0] == "data":
                            pools[queues.index(q)].put(item[3])
                        item = q.get()
                break
            if a[0] == "bad" or b[0] == "bad":
                which = "source" if a[0] == "bad" else "target"
                out.error = f"cannot read the {which}: {(a if a[0] == 'bad' else b)[3]}"
                stop.set()
                for pool, item in zip(pools, (a, b), strict=True):
                    if item[0] == "data":
                        pool.put(item[3])
                continue
            _, pos, n, abuf = a
            bbuf = b[3]
            stream.update(abuf.view[:n])
            if abuf.mem[:n] != bbuf.mem[:n]:
                out.differing_regions += 1
                if out.first_difference is None:
                    out.first_difference = {"start": pos, "end": pos + n,
                                            "offset": pos + _first_diff(abuf, bbuf, n)}
            pools[0].put(abuf)
            pools[1].put(bbuf)
            pos += n
            reporter.update(pos)
    finally:
        stop.set()
        for r in readers:
            r.join()
        for p in pools:
            close_pool(p)
    if pos < size and not out.error:
        out.error = "cancelled" if cancel.is_set() else "the readers stopped early"
    if not out.error:
        out.source_hash = stream.hexdigest()
        out.match = out.differing_regions == 0
        if out.match:
            out.target_hash = out.source_hash  # byte for byte the same
    out.seconds = time.monotonic() - t0
    reporter.update(pos, force=True)
    return out


def verify_disks(source: str, target: str, *, algorithm: str = "blake3",
                 progress=None, cancel: threading.Event | None = None,
                 disks: list[Disk] | None = None, chunk_size: int = DEFAULT_CHUNK,
                 write_report: bool = True, report_dir: str | None = None) -> CopyResult:
    """Compare the first ``size(source)`` bytes of ``target`` with ``source``."""
    disks = list_disks() if disks is None else disks
    src, dst = resolve(source, disks), resolve(target, disks)
    if dst.size < src.size:
        raise Refused(f"the target is smaller than the source: target {dst.node} has "
                      f"{dst.size} bytes, source {src.node} has {src.size} bytes")
    new_hasher(algorithm)
    cancel = cancel or threading.Event()
    started = time.time()
    fds = [blockdev.open_device(src.path), blockdev.open_device(dst.path)]
    try:
        v = compare_devices(fds[0], fds[1], src.size, algorithm,
                            reporter=Reporter(progress, 0.25), cancel=cancel,
                            chunk_size=chunk_size)
    finally:
        for fd in fds:
            os.close(fd)
    result = CopyResult(operation="verify", status="ok", message="", source=src.describe(),
                        target=dst.describe(), size=src.size, started=started,
                        finished=time.time(), algorithm=algorithm, verify=v)
    conclude(result, cancel)
    if write_report:
        result.report = write_result_report(result, report_dir)
    return result


def verify_hash(path: str, expected: str, *, algorithm: str = "blake3",
                size: int | None = None, progress=None,
                cancel: threading.Event | None = None, disks: list[Disk] | None = None,
                chunk_size: int = DEFAULT_CHUNK, write_report: bool = True,
                report_dir: str | None = None) -> CopyResult:
    """Hash the first ``size`` bytes (default: all) of ``path`` and compare with ``expected``."""
    disks = list_disks() if disks is None else disks
    end = resolve(path, disks)
    size = end.size if size is None else size
    if size > end.size:
        raise Refused(f"{end.node} has {end.size} bytes, fewer than the {size} to verify")
    if size % end.sector_size:
        raise Refused(f"the size to verify, {size} bytes, is not a multiple of {end.node}'s "
                      f"{end.sector_size}-byte sectors")
    expected = expected.strip().lower()
    new_hasher(algorithm)
    cancel = cancel or threading.Event()
    started = time.time()
    fd = blockdev.open_device(end.path)
    try:
        digest = SourceDigest(algorithm, expected, size, region_size_for(size, chunk_size),
                              b"")
        v = _hash_only(fd, digest, Reporter(progress, 0.25), cancel, chunk_size)
    finally:
        os.close(fd)
    result = CopyResult(operation="verify", status="ok", message="", source=end.describe(),
                        target=None, size=size, started=started, finished=time.time(),
                        algorithm=algorithm, verify=v)
    conclude(result, cancel)
    if result.status == "mismatch":
        result.message = (f"VERIFICATION FAILED: {algorithm} of the first {size} bytes of "
                          f"{end.node} is {v.target_hash}, expected {expected}")
    if write_report:
        result.report = write_result_report(result, report_dir)
    return result


def _hash_only(fd: int, digest: SourceDigest, reporter: Reporter, cancel: threading.Event,
               chunk_size: int) -> VerifyOutcome:
    out = VerifyOutcome(match=False, method="hash", source_hash=digest.hexdigest)
    t0 = time.monotonic()
    stream = new_hasher(digest.algorithm)
    free, q, stop = buffer_pool(4, chunk_size), queue.Queue(5), threading.Event()
    reader = Reader(fd, [(0, digest.size)], chunk_size, free, q, stop)
    reader.start()
    reporter.start("verify", digest.size)
    pos = 0
    try:
        while True:
            if cancel.is_set():
                stop.set()
            kind, p, n, payload = q.get()
            if kind == "end":
                break
            if kind == "bad":
                out.error = f"cannot read {payload}"
                continue
            stream.update(payload.view[:n])
            free.put(payload)
            pos = p + n
            reporter.update(pos)
    finally:
        stop.set()
        reader.join()
        close_pool(free)
    if pos < digest.size and not out.error:
        out.error = "cancelled" if cancel.is_set() else "the reader stopped early"
    if not out.error:
        out.target_hash = stream.hexdigest()
        out.match = out.target_hash == digest.hexdigest
    out.seconds = time.monotonic() - t0
    return out
