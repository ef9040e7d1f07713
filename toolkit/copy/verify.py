"""``rtk verify``: compare two disks (:func:`verify_disks`) or one with a recorded hash
(:func:`verify_hash`), resolved through the inventory, with a report like a copy's.
The reading and comparing is :mod:`toolkit.blockio.verify`'s.
"""

from __future__ import annotations

import os
import threading
import time

from toolkit.blockio import blockdev
from toolkit.blockio.hashing import SourceDigest, new_hasher, region_size_for
from toolkit.blockio.pipeline import DEFAULT_CHUNK
from toolkit.blockio.verify import compare_devices, hash_device
from toolkit.copy.report import write_result_report
from toolkit.copy.result import CopyResult, conclude
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import Disk, list_disks
from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter


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
        v = hash_device(fd, digest, Reporter(progress, 0.25), cancel, chunk_size)
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
