"""``rtk verify``: compare two disks (:func:`verify_disks`) or one with a recorded hash
(:func:`verify_hash`), resolved through the inventory, with a report like a copy's.
The reading and comparing is :mod:`toolkit.blockio.verify`'s.

A read that fails while the disk's path is down (an iSCSI session lost:
:mod:`toolkit.disks.transport`) is an outage, not a difference: the verification pauses
(progress phase "waiting", "SOURCE path to 10.0.2.2 lost, waiting 0:42 (gives up at
10:00)"), reads the same chunk again once the path is back (from the disk reopened, read
only, when it came back under another name), and after ``outage_limit`` seconds stops:
failed, exit 1, never a mismatch.
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
from toolkit.disks import transport
from toolkit.disks.endpoint import Endpoint, resolve
from toolkit.disks.inventory import Disk, list_disks
from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter


class _Paths:
    """The disks of one verification, each read through a guard of its path: a failed read
    while the path is down waits for it (:class:`transport.Guard`), then the same chunk is
    read again. ``fds``: the descriptors (one replaced when its disk came back under
    another name)."""

    def __init__(self, reporter: Reporter, cancel: threading.Event, limit: float,
                 sys_root: str):
        self.reporter, self.cancel, self.limit, self.sys_root = reporter, cancel, limit, sys_root
        self.fds: list[int] = []
        self.guards: list[transport.Guard] = []
        self.warnings: list[str] = []

    def open(self, role: str, end: Endpoint):
        """Open ``end`` (read only); its descriptor and the reader's ``on_error`` hook."""
        i = len(self.fds)
        self.fds.append(blockdev.open_device(end.path))
        guard = transport.Guard(transport.Lun.of(role, end.node, self.sys_root), self.limit,
                                report=self.reporter.waiting, cancel=self.cancel)
        self.guards.append(guard)

        def on_error(pos: int, n: int, error: OSError) -> int | None:
            if not guard.outage(error):
                return None  # the path is up: a read error, reported as such
            old = guard.lun.name
            if guard.wait(pos) != old:  # raises transport.Outage past the limit
                self._reopen(i, role, guard, end, old)
            return self.fds[i]
        return self.fds[i], on_error

    def _reopen(self, i: int, role: str, guard: transport.Guard, end: Endpoint,
                old: str) -> None:
        node = guard.node()

        def lost(why: str) -> transport.Outage:
            return transport.Outage(f"the {role} came back as {node} (it was /dev/{old}), "
                                    f"but {why}: it is not read any more", guard.lun, 0)
        try:
            fd = blockdev.open_device(node)
        except OSError as e:
            raise lost(f"it cannot be opened ({e.strerror})") from None
        if blockdev.device_size(fd) != end.size:
            size = blockdev.device_size(fd)
            os.close(fd)
            raise lost(f"its size is {size} bytes, not {end.size}")
        was, self.fds[i] = self.fds[i], fd
        os.close(was)
        self.warnings.append(f"the {role} came back under another name after a re-login: "
                             f"{node} (it was /dev/{old}); the same LUN and size")

    def gave_up(self) -> bool:
        return any(not ev.resumed and not self.cancel.is_set()
                   for g in self.guards for ev in g.events)

    def events(self) -> list[str]:
        return self.warnings + [ev.text() for g in self.guards for ev in g.events]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _outage_result(result: CopyResult, paths: _Paths) -> None:
    """The report's warnings (each outage), and what to do after one that lasted."""
    result.warnings += paths.events()
    if result.status == "failed" and paths.gave_up():
        result.message += ("; nothing was found to differ: run the verification again once "
                           "the path is back")


def verify_disks(source: str, target: str, *, algorithm: str = "blake3",
                 progress=None, cancel: threading.Event | None = None,
                 disks: list[Disk] | None = None, chunk_size: int = DEFAULT_CHUNK,
                 write_report: bool = True, report_dir: str | None = None,
                 outage_limit: float = transport.DEFAULT_LIMIT,
                 sys_root: str = "/sys") -> CopyResult:
    """Compare the first ``size(source)`` bytes of ``target`` with ``source``; a storage
    outage is waited out up to ``outage_limit`` seconds (the module's docstring)."""
    disks = list_disks() if disks is None else disks
    src, dst = resolve(source, disks), resolve(target, disks)
    if dst.size < src.size:
        raise Refused(f"the target is smaller than the source: target {dst.node} has "
                      f"{dst.size} bytes, source {src.node} has {src.size} bytes")
    cancel, started, reporter, paths = _start(algorithm, progress, cancel, outage_limit,
                                              sys_root)
    try:
        src_fd, src_error = paths.open("SOURCE", src)
        dst_fd, dst_error = paths.open("TARGET", dst)
        v = compare_devices(src_fd, dst_fd, src.size, algorithm, reporter=reporter,
                            cancel=cancel, chunk_size=chunk_size, src_error=src_error,
                            dst_error=dst_error)
    finally:
        paths.close()
    result = CopyResult(operation="verify", status="ok", message="", source=src.describe(),
                        target=dst.describe(), size=src.size, started=started,
                        finished=time.time(), algorithm=algorithm, verify=v)
    conclude(result, cancel)
    _outage_result(result, paths)
    if write_report:
        result.report = write_result_report(result, report_dir)
    return result


def _start(algorithm: str, progress, cancel: threading.Event | None, outage_limit: float,
           sys_root: str) -> tuple[threading.Event, float, Reporter, _Paths]:
    """What both verifications begin with: the algorithm checked, the cancel event, the
    start time, the progress reporter and the paths' outage guards."""
    new_hasher(algorithm)
    cancel = cancel or threading.Event()
    reporter = Reporter(progress, 0.25)
    return cancel, time.time(), reporter, _Paths(reporter, cancel, outage_limit, sys_root)


def verify_hash(path: str, expected: str, *, algorithm: str = "blake3",
                size: int | None = None, progress=None,
                cancel: threading.Event | None = None, disks: list[Disk] | None = None,
                chunk_size: int = DEFAULT_CHUNK, write_report: bool = True,
                report_dir: str | None = None, outage_limit: float = transport.DEFAULT_LIMIT,
                sys_root: str = "/sys") -> CopyResult:
    """Hash the first ``size`` bytes (default: all) of ``path`` and compare with ``expected``;
    a storage outage is waited out up to ``outage_limit`` seconds (the module's
    docstring)."""
    disks = list_disks() if disks is None else disks
    end = resolve(path, disks)
    size = end.size if size is None else size
    if size > end.size:
        raise Refused(f"{end.node} has {end.size} bytes, fewer than the {size} to verify")
    if size % end.sector_size:
        raise Refused(f"the size to verify, {size} bytes, is not a multiple of {end.node}'s "
                      f"{end.sector_size}-byte sectors")
    expected = expected.strip().lower()
    cancel, started, reporter, paths = _start(algorithm, progress, cancel, outage_limit,
                                              sys_root)
    try:
        fd, on_error = paths.open("SOURCE", end)
        digest = SourceDigest(algorithm, expected, size, region_size_for(size, chunk_size),
                              b"")
        v = hash_device(fd, digest, reporter, cancel, chunk_size, on_error=on_error)
    finally:
        paths.close()
    result = CopyResult(operation="verify", status="ok", message="", source=end.describe(),
                        target=None, size=size, started=started, finished=time.time(),
                        algorithm=algorithm, verify=v)
    conclude(result, cancel)
    _outage_result(result, paths)
    if result.status == "mismatch":
        result.message = (f"VERIFICATION FAILED: {algorithm} of the first {size} bytes of "
                          f"{end.node} is {v.target_hash}, expected {expected}")
    if write_report:
        result.report = write_result_report(result, report_dir)
    return result
