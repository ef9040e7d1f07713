"""Disk Copy: a verified, resumable block copy of a disk or partition onto another.

The steps, each usable on its own (the menu and ``rtk copy`` call the same):

* :func:`plan_copy` resolves both paths to devices (sizes and sector sizes from
  the devices' ioctls) and refuses unsafe pairs with :class:`Refused`, whose
  message names both figures: target smaller, different logical sector sizes,
  target is the source (by any path, serial, WWN, loop backing file) or
  overlaps it, target mounted/swap/held/boot medium/read-only, or an iSCSI
  disk attached as SOURCE. :func:`check_pair` is the pure part.
* :func:`copy` copies with O_DIRECT on both sides through a bounded pipeline
  (reader thread -> hasher thread -> writer), keeps a GNU ddrescue mapfile so
  that running it again resumes, reads around bad sectors (ddrescue style:
  skip, come back, narrow down to the sector), then verifies by reading the
  target back, and writes a report (:mod:`toolkit.report`).
* :func:`verify_disks` compares two disks without copying;
  :func:`verify_hash` compares one against a recorded hash.

Progress goes to a callback as :class:`Progress` events, from the worker
thread; ``cancel`` (a :class:`threading.Event`) stops cleanly with a
consistent mapfile.

Exit codes of ``rtk copy`` / ``rtk verify`` (:attr:`CopyResult.exit_code`):
0 ok, 3 ok but some source ranges were unreadable, 4 verification mismatch,
5 refused (nothing written), 1 failed or interrupted (2 is argparse's usage
error).

Verification, honestly: on an uninterrupted copy without read errors the
source is hashed while it is read (whole-disk hash plus one BLAKE3 digest per
region); the target is then read back with O_DIRECT and hashed the same way,
and the first region whose digests differ is named. When the copy was resumed
or met read errors, the source hash of this run does not cover the whole
disk, so the verification reads source and target again, side by side, and
compares them chunk by chunk (unreadable source ranges count as the zeros
written in their place).
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import blake3

from toolkit import blockdev, report
from toolkit.disks import Disk, Partition, list_disks
from toolkit.mapfile import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, Mapfile
from toolkit.units import human_duration, human_rate, human_size

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE, EXIT_MISMATCH, EXIT_REFUSED = 0, 1, 3, 4, 5

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_CHUNK = 8 * MiB
CLUSTER = 64 * KiB  # the read size when narrowing down a failed chunk
ALGORITHMS = ("blake3", "sha256")
REGION_DIGEST = 16  # bytes of BLAKE3 per region
MAX_REGIONS = 1 << 20  # so region digests stay under 16 MiB whatever the disk size


class Refused(Exception):
    """The copy (or verification) must not start; ``problems`` says why, each fully."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def new_hasher(algorithm: str):
    if algorithm == "blake3":
        return blake3.blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown hash algorithm {algorithm!r} (use one of {', '.join(ALGORITHMS)})")


# --- the two ends ---------------------------------------------------------------


@dataclass
class Endpoint:
    """A whole disk or a partition, as the copy sees it."""

    path: str  # as given
    node: str  # /dev/NAME
    size: int  # bytes, from BLKGETSIZE64
    sector_size: int  # logical, from BLKSSZGET
    disk: Disk  # the whole disk (the parent of a partition)
    partition: Partition | None = None
    start: int = 0  # byte offset on the whole disk
    keys: frozenset[str] = frozenset()  # what names the physical medium
    rdev: int | None = None

    @property
    def is_partition(self) -> bool:
        return self.partition is not None

    @property
    def identity(self) -> str | None:
        return self.disk.identity

    def describe(self) -> dict:
        """The identity of this end, for reports and logs."""
        d = self.disk
        info = {
            "path": self.path, "node": self.node,
            "kind": "partition" if self.partition else "disk",
            "size": self.size, "logical_sector_size": self.sector_size,
            "model": d.model, "vendor": d.vendor, "serial": d.serial, "wwn": d.wwn,
            "transport": d.transport, "iscsi": None, "backing_file": d.backing_file,
        }
        if d.iscsi:
            info["iscsi"] = {"target": d.iscsi.target, "portal": d.iscsi.portal,
                             "lun": d.iscsi.lun}
        if self.partition:
            info["partition"] = {"disk": d.path, "number": self.partition.number,
                                 "start": self.start}
        return info

    def label(self) -> str:
        """One line for messages: ``/dev/sdb (ST4000NM, serial Z1Z2, 4.0 TB)``."""
        bits = [self.disk.model or self.disk.transport]
        if self.identity:
            bits.append(f"serial {self.identity}")
        elif self.disk.backing_file:
            bits.append(f"file {self.disk.backing_file}")
        bits.append(human_size(self.size))
        return f"{self.node} ({', '.join(bits)})"


def physical_keys(disk: Disk, whole_rdev: int | None = None) -> frozenset[str]:
    """Names of the physical medium under ``disk``: two ends sharing one are the same disk.

    The kernel name, the serial and WWN (the same LUN through another path),
    the device number, and for a loop device its backing file (two loop
    devices over one file are one disk).
    """
    keys = {f"name:{disk.name}"}
    if disk.serial:
        keys.add(f"serial:{disk.serial}")
    if disk.wwn:
        keys.add(f"wwn:{disk.wwn}")
    if whole_rdev is not None:
        keys.add(f"rdev:{os.major(whole_rdev)}:{os.minor(whole_rdev)}")
    if disk.backing_file:
        bf = disk.backing_file.removesuffix(" (deleted)")
        keys.add(f"file:{os.path.realpath(bf)}")
        try:
            st = os.stat(bf)
            keys.add(f"inode:{st.st_dev}:{st.st_ino}")
        except OSError:
            pass
    return frozenset(keys)


def endpoint_from_disk(disk: Disk, partition: Partition | None = None, *,
                       path: str | None = None, size: int | None = None,
                       sector_size: int | None = None, rdev: int | None = None,
                       whole_rdev: int | None = None) -> Endpoint:
    """An :class:`Endpoint` from inventory objects (sizes default to the inventory's)."""
    node = partition.path if partition else disk.path
    return Endpoint(
        path=path or node, node=node,
        size=size if size is not None else (partition.size if partition else disk.size),
        sector_size=sector_size or disk.logical_sector_size,
        disk=disk, partition=partition, start=partition.start if partition else 0,
        keys=physical_keys(disk, whole_rdev), rdev=rdev,
    )


def check_pair(src: Endpoint, dst: Endpoint,
               source_role: Iterable[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Why copying ``src`` onto ``dst`` must be refused, and what to warn about.

    ``source_role``: paths or identities of disks the iSCSI manager attached
    as SOURCE (backup snapshots), never to be written.
    """
    problems: list[str] = []
    warnings: list[str] = []
    if src.rdev is not None and src.rdev == dst.rdev or src.node == dst.node:
        problems.append(f"the target is the source: {dst.path} and {src.path} are the same "
                        f"device ({dst.node})")
    elif src.keys & dst.keys and _overlap(src, dst):
        problems.append(_overlap_message(src, dst))
    if dst.size < src.size:
        problems.append(f"the target is smaller than the source: target {dst.node} has "
                        f"{dst.size} bytes ({human_size(dst.size)}), source {src.node} has "
                        f"{src.size} bytes ({human_size(src.size)})")
    if src.sector_size != dst.sector_size:
        problems.append(f"the logical sector sizes differ: source {src.node} has "
                        f"{src.sector_size}-byte sectors, target {dst.node} has "
                        f"{dst.sector_size}-byte sectors (a partition table and file "
                        "systems would not fit the target)")
    roles = set(source_role)
    if roles:
        names = {dst.path, dst.node, dst.disk.path, dst.disk.name, dst.disk.serial,
                 dst.disk.wwn, *dst.disk.by_id, *dst.disk.by_path} - {None}
        if dst.disk.iscsi:
            names.add(f"{dst.disk.iscsi.target}:{dst.disk.iscsi.lun}")
        if names & roles:
            problems.append(f"the target {dst.label()} is an iSCSI disk attached as SOURCE "
                            "(a backup snapshot): it is never written")
    problems += [f"the target {dst.node} is in use: {r}" for r in _in_use(dst)]
    if dst.disk.read_only:
        problems.append(f"the target {dst.node} is read-only")
    mounted = _in_use(src, boot=False)
    if mounted:
        warnings.append(f"the source {src.node} is in use ({'; '.join(mounted)}): data "
                        "changing during the copy may make it inconsistent")
    return problems, warnings


def _in_use(e: Endpoint, boot: bool = True) -> list[str]:
    if e.partition is None:
        return e.disk.in_use if boot else [r for r in e.disk.in_use if "boot medium" not in r]
    p = e.partition
    reasons = [f"mounted at {m}" for m in p.mountpoints]
    if p.swap:
        reasons.append("in use as swap")
    if p.holders:
        reasons.append("held by " + ", ".join(p.holders))
    if boot and e.disk.boot_medium:
        reasons.insert(0, f"partition of {e.disk.path}, the boot medium of this live system")
    return reasons


def _overlap(a: Endpoint, b: Endpoint) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size


def _overlap_message(src: Endpoint, dst: Endpoint) -> str:
    same = ", ".join(sorted(k.split(":", 1)[0] for k in src.keys & dst.keys))
    if dst.is_partition and not src.is_partition:
        return (f"the target {dst.node} is a partition of the source {src.label()} "
                f"(same {same})")
    if src.is_partition and not dst.is_partition:
        return (f"the target {dst.label()} holds the source partition {src.node} "
                f"(same {same})")
    if not src.is_partition and not dst.is_partition:
        return (f"the target {dst.label()} is the same disk as the source {src.label()} by "
                f"another path (same {same})")
    return (f"the target {dst.node} (bytes {dst.start}-{dst.start + dst.size}) overlaps the "
            f"source {src.node} (bytes {src.start}-{src.start + src.size}) on the same disk "
            f"(same {same})")


def resolve(path: str, disks: list[Disk]) -> Endpoint:
    """The device at ``path`` (any link or node to it), with sizes from its ioctls."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise Refused(f"{path}: {e.strerror}") from None
    if not blockdev.is_block_device(path):
        raise Refused(f"{path} is not a block device (for an image file, use losetup)")
    name = _sysfs_name(st.st_rdev) or os.path.basename(os.path.realpath(path))
    for d in disks:
        parts = [p for p in d.partitions if p.name == name]
        if d.name == name or parts:
            break
    else:
        raise Refused(f"{path} ({name}) is not in the disk inventory")
    fd = blockdev.open_device(path, direct=False)
    try:
        size, sector = blockdev.device_size(fd), blockdev.logical_sector_size(fd)
    finally:
        os.close(fd)
    try:
        whole_rdev = os.stat(d.path).st_rdev
    except OSError:
        whole_rdev = None
    return endpoint_from_disk(d, parts[0] if parts else None, path=path, size=size,
                              sector_size=sector, rdev=st.st_rdev, whole_rdev=whole_rdev)


def _sysfs_name(rdev: int) -> str | None:
    try:
        link = os.readlink(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    except OSError:
        return None
    return os.path.basename(link)


@dataclass
class CopyPlan:
    source: Endpoint
    target: Endpoint
    warnings: list[str] = field(default_factory=list)


def plan_copy(source: str, target: str, *, source_role: Iterable[str] = frozenset(),
              disks: list[Disk] | None = None) -> CopyPlan:
    """Resolve and check a copy; raises :class:`Refused` with every problem found."""
    disks = list_disks() if disks is None else disks
    src, dst = resolve(source, disks), resolve(target, disks)
    problems, warnings = check_pair(src, dst, source_role)
    if problems:
        raise Refused(problems)
    return CopyPlan(src, dst, warnings)


def endpoint_key(e: Endpoint) -> str:
    """A file-name-safe name of one end that survives a reboot, for the default mapfile."""
    d = e.disk
    if d.identity:
        key = d.identity
    elif d.backing_file:
        key = "loop-" + os.path.realpath(d.backing_file.removesuffix(" (deleted)")).strip("/")
    else:
        key = f"{d.model or d.transport}-{d.size}-{d.name}"
    if e.partition:
        key += f"-part{e.partition.number}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:120]


def default_mapfile(plan: CopyPlan) -> str:
    """Under the report directory, named after both ends, so the same pair resumes."""
    return os.path.join(report.log_dir(),
                        f"copy-{endpoint_key(plan.source)}--{endpoint_key(plan.target)}.map")


# --- progress -------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """One progress event. ``phase``: "copy", "trim", "scrape" (narrowing down read
    errors) or "verify". Rates in bytes/s; ``eta`` in seconds or None."""

    phase: str
    done: int
    total: int
    rate: float
    average_rate: float
    eta: float | None
    read_errors: int = 0
    unreadable_bytes: int = 0

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        """``copy  42.0%  1.2 GB of 3.0 GB  850.0 MB/s (avg 830.0 MB/s)  ETA 0:02``."""
        eta = human_duration(self.eta) if self.eta is not None else "?"
        s = (f"{self.phase:<6} {100 * self.fraction:5.1f}%  {human_size(self.done)} of "
             f"{human_size(self.total)}  {human_rate(self.rate)} (avg "
             f"{human_rate(self.average_rate)})  ETA {eta}")
        if self.read_errors:
            s += f"  read errors {self.read_errors}, unreadable {human_size(self.unreadable_bytes)}"
        return s


class RateMeter:
    """Current rate (over the last ``window`` seconds), average rate and ETA.

    ``done`` counts from ``start_done`` (bytes already done by an earlier run do
    not make this run look fast).
    """

    def __init__(self, total: int, start_done: int = 0, now: float = 0.0, window: float = 3.0):
        self.total, self.window = total, window
        self.start_done, self.start_time = start_done, now
        self.done, self.now = start_done, now
        self.samples: deque[tuple[float, int]] = deque([(now, start_done)])

    def update(self, done: int, now: float) -> None:
        self.done, self.now = done, now
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    @property
    def rate(self) -> float:
        t0, d0 = self.samples[0]
        return (self.done - d0) / (self.now - t0) if self.now > t0 else 0.0

    @property
    def average_rate(self) -> float:
        dt = self.now - self.start_time
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    @property
    def eta(self) -> float | None:
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        rate = self.rate or self.average_rate
        return remaining / rate if rate > 0 else None


class _Reporter:
    """Throttles progress events to one per ``interval`` seconds (and phase ends)."""

    def __init__(self, callback: Callable[[Progress], None] | None, interval: float):
        self.callback, self.interval = callback, interval
        self.phase, self.meter, self.last = "", RateMeter(0), 0.0
        self.read_errors = self.unreadable = 0

    def start(self, phase: str, total: int, done: int = 0) -> None:
        self.phase = phase
        self.meter = RateMeter(total, done, time.monotonic())
        self.last = 0.0
        self.update(done, force=True)

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.meter.update(done, now)
        self.last = now
        if self.callback:
            m = self.meter
            self.callback(Progress(self.phase, done, m.total, m.rate, m.average_rate, m.eta,
                                   self.read_errors, self.unreadable))


# --- results ------------------------------------------------------------------------


@dataclass
class SourceDigest:
    """The hash of ``size`` bytes as read, and one BLAKE3 digest per region."""

    algorithm: str
    hexdigest: str
    size: int
    region_size: int
    regions: bytes


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


@dataclass
class CopyResult:
    """What :func:`copy` (or a verification) did. ``status``: "ok", "unreadable"
    (ok but some ranges unreadable), "mismatch", "failed", "cancelled"."""

    operation: str
    status: str
    message: str
    source: dict
    target: dict | None
    size: int
    started: float
    finished: float
    algorithm: str
    resumed: bool = False
    mapfile: str | None = None
    copied_bytes: int = 0  # read from the source and handled in this run
    written_bytes: int = 0
    skipped_zero_bytes: int = 0
    write_calls: int = 0
    read_errors: int = 0
    copy_seconds: float = 0.0
    unreadable: list[tuple[int, int]] = field(default_factory=list)
    verify: VerifyOutcome | None = None
    source_digest: SourceDigest | None = None
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    report: report.ReportPaths | None = None

    @property
    def exit_code(self) -> int:
        return {"ok": EXIT_OK, "unreadable": EXIT_UNREADABLE,
                "mismatch": EXIT_MISMATCH}.get(self.status, EXIT_FAILED)

    @property
    def unreadable_bytes(self) -> int:
        return sum(s for _p, s in self.unreadable)


# --- reading and hashing ----------------------------------------------------------


class _RegionHasher:
    """The whole-stream hash plus one short BLAKE3 digest per region, fed in order."""

    def __init__(self, algorithm: str, size: int, region_size: int):
        self.algorithm, self.size, self.region_size = algorithm, size, region_size
        self.stream = new_hasher(algorithm)
        self.region = blake3.blake3()
        self.regions = bytearray(REGION_DIGEST * -(-size // region_size)) if size else b""
        self.pos = 0

    def update(self, pos: int, view: memoryview) -> bool:
        """Add the bytes at ``pos``; False (and nothing added) unless ``pos`` continues."""
        if pos != self.pos:
            return False
        self.stream.update(view)
        off = 0
        while off < len(view):
            boundary = (self.pos // self.region_size + 1) * self.region_size
            take = min(len(view) - off, boundary - self.pos)
            self.region.update(view[off:off + take])
            off += take
            self.pos += take
            if self.pos == boundary or self.pos == self.size:
                i = (self.pos - 1) // self.region_size
                self.regions[i * REGION_DIGEST:(i + 1) * REGION_DIGEST] = \
                    self.region.digest(length=REGION_DIGEST)
                self.region = blake3.blake3()
        return True

    def digest(self) -> SourceDigest | None:
        if self.pos != self.size:
            return None
        return SourceDigest(self.algorithm, self.stream.hexdigest(), self.size,
                            self.region_size, bytes(self.regions))


def region_size_for(size: int, chunk: int) -> int:
    """A multiple of ``chunk`` giving at most :data:`MAX_REGIONS` regions."""
    chunks = -(-size // chunk) if size else 1
    return chunk * -(-chunks // MAX_REGIONS)


def _chunks(ranges: Iterable[tuple[int, int]], chunk: int):
    for pos, size in ranges:
        end = pos + size
        while pos < end:
            n = min(chunk, end - pos)
            yield pos, n
            pos += n


class _Throttle:
    def __init__(self, max_rate: float | None, stop: threading.Event):
        self.max_rate, self.stop = max_rate, stop
        self.t0, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        if not self.max_rate:
            return
        self.bytes += n
        delay = self.t0 + self.bytes / self.max_rate - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


def _read_holes(fd: int, buf: blockdev.AlignedBuffer, pos: int, n: int,
                holes: list[tuple[int, int]]) -> None:
    """Read ``n`` bytes at ``pos``, zeros instead of reading inside ``holes``."""
    cur = pos
    for hp, hs in holes:
        if hp + hs <= cur or hp >= pos + n:
            continue
        if hp > cur:
            blockdev.read_exact(fd, buf.view[cur - pos:hp - pos], cur)
            cur = hp
        hend = min(hp + hs, pos + n)
        buf.zero(cur - pos, hend - cur)
        cur = hend
    if cur < pos + n:
        blockdev.read_exact(fd, buf.view[cur - pos:n], cur)


class _Reader(threading.Thread):
    """Reads chunks into free buffers and queues ``(kind, pos, n, payload)`` items:
    ("data", pos, n, buffer), ("bad", pos, n, error text), then ("end", ...).

    With ``skip_errors`` a failed chunk is reported and the reader skips ahead
    (ddrescue style, the skipped part is left for a later pass); otherwise it stops.
    """

    def __init__(self, fd: int, ranges: Iterable[tuple[int, int]], chunk: int,
                 free: queue.Queue, out: queue.Queue, stop: threading.Event, *,
                 skip_errors: bool = False, max_skip: int = 0, holes=(),
                 max_rate: float | None = None):
        super().__init__(daemon=True, name="rtk-reader")
        self.fd, self.ranges, self.chunk = fd, ranges, chunk
        self.free, self.out, self.stop = free, out, stop
        self.skip_errors, self.max_skip = skip_errors, max_skip
        self.holes = sorted(holes)
        self.throttle = _Throttle(max_rate, stop)
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            skip = 0
            for area_pos, area_size in self.ranges:
                pos, end = area_pos, area_pos + area_size
                while pos < end and not self.stop.is_set():
                    n = min(self.chunk, end - pos)
                    buf = self.free.get()
                    try:
                        if self.holes:
                            _read_holes(self.fd, buf, pos, n, self.holes)
                        else:
                            blockdev.read_exact(self.fd, buf.view[:n], pos)
                    except OSError as e:
                        self.free.put(buf)
                        self.out.put(("bad", pos, n, f"{os.strerror(e.errno or errno.EIO)} "
                                                     f"at {e.filename or pos}"))
                        if not self.skip_errors:
                            return
                        pos += n
                        if self.max_skip:
                            skip = min(max(self.chunk, 2 * skip), self.max_skip)
                            pos = min(end, pos + skip)
                        continue
                    skip = 0
                    self.out.put(("data", pos, n, buf))
                    pos += n
                    self.throttle.add(n)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.crash = e
        finally:
            self.out.put(("end", 0, 0, None))


class _Hasher(threading.Thread):
    """Between reader and writer: feeds data items to a :class:`_RegionHasher`."""

    def __init__(self, hasher: _RegionHasher, inq: queue.Queue, out: queue.Queue):
        super().__init__(daemon=True, name="rtk-hasher")
        self.hasher, self.inq, self.out = hasher, inq, out
        self.valid = True

    def run(self) -> None:
        while True:
            item = self.inq.get()
            kind, pos, n, buf = item
            if kind == "data" and self.valid:
                self.valid = self.hasher.update(pos, buf.view[:n])
            elif kind == "bad":
                self.valid = False
            self.out.put(item)
            if kind == "end":
                return


def _buffers(count: int, size: int) -> queue.Queue:
    q: queue.Queue = queue.Queue()
    for _ in range(count):
        q.put(blockdev.AlignedBuffer(size))
    return q


def _close_buffers(q: queue.Queue) -> None:
    while not q.empty():
        q.get_nowait().close()


# --- the copy -------------------------------------------------------------------------


@dataclass
class CopyOptions:
    verify: bool = True
    algorithm: str = "blake3"
    mapfile: str | None = None  # default: default_mapfile(plan)
    skip_zeros: bool = False  # only when the target is known to read back zeros
    chunk_size: int = DEFAULT_CHUNK
    buffers: int = 4
    max_rate: float | None = None  # bytes/s, to be gentle with a source (and for tests)
    mapfile_interval: float = 5.0  # seconds between mapfile saves
    sync_bytes: int = 1 * GiB  # fdatasync the target at least this often
    progress_interval: float = 0.25
    write_report: bool = True
    report_dir: str | None = None


class _Copier:
    """One run of a copy: owns the file descriptors, the mapfile and the counters."""

    def __init__(self, plan: CopyPlan, opts: CopyOptions, progress, cancel):
        self.plan, self.opts = plan, opts
        self.cancel = cancel or threading.Event()
        self.reporter = _Reporter(progress, opts.progress_interval)
        self.size = plan.source.size
        self.sector = plan.source.sector_size
        self.mapfile_path = opts.mapfile or default_mapfile(plan)
        self.written = self.skipped = self.write_calls = self.copied = 0
        self.read_errors = 0
        self.failure: str | None = None
        self.last_save = time.monotonic()
        self.unsynced = 0
        self.zeros = bytes(opts.chunk_size)
        self.src_fd = self.dst_fd = -1
        self.map: Mapfile

    # mapfile --------------------------------------------------------------------------
    def load_map(self) -> bool:
        """Open or create the mapfile; True when an earlier run had done something."""
        src_key, dst_key = endpoint_key(self.plan.source), endpoint_key(self.plan.target)
        if os.path.exists(self.mapfile_path):
            m = Mapfile.load(self.mapfile_path)
            if m.size != self.size:
                raise Refused(f"the mapfile {self.mapfile_path} covers {m.size} bytes but the "
                              f"source has {self.size} bytes: it belongs to another copy")
            for k, want in (("source", src_key), ("target", dst_key)):
                if m.meta.get(k, want) != want:
                    raise Refused(f"the mapfile {self.mapfile_path} belongs to another copy: "
                                  f"its {k} is {m.meta[k]}, this {k} is {want}")
            self.map = m
            resumed = m.bytes_with(NON_TRIED) != self.size
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.mapfile_path)), exist_ok=True)
            self.map = Mapfile(self.size)
            resumed = False
        self.map.meta.update(source=src_key, target=dst_key)
        self.map.meta["started"] = report.iso_time(time.time())
        self.save_map()
        return resumed

    def save_map(self, sync: bool = True) -> None:
        if sync and self.dst_fd >= 0:
            os.fdatasync(self.dst_fd)  # what the map calls finished must be on the target
        self.unsynced = 0
        self.last_save = time.monotonic()
        self.map.save(self.mapfile_path, [
            "Mapfile. Created by rtk (Recovery Toolkit) copy, in GNU ddrescue's format",
            f"Source: {self.plan.source.label()}",
            f"Target: {self.plan.target.label()}",
            f"Current time: {report.iso_time(time.time())}",
        ])

    def maybe_save(self, pos: int) -> None:
        if (self.unsynced >= self.opts.sync_bytes
                or time.monotonic() - self.last_save >= self.opts.mapfile_interval):
            self.map.current_pos = pos
            self.save_map()

    def done_bytes(self) -> int:
        return self.size - self.map.bytes_with(NON_TRIED, NON_TRIMMED, NON_SCRAPED)

    # writing ----------------------------------------------------------------------------
    def write(self, buf: blockdev.AlignedBuffer, pos: int, n: int) -> None:
        if self.opts.skip_zeros and buf.is_zero(n, self.zeros):
            self.skipped += n
            return
        blockdev.write_exact(self.dst_fd, buf.view[:n], pos)
        self.written += n
        self.write_calls += 1
        self.unsynced += n

    # pass 1: the pipeline -------------------------------------------------------------
    def copy_pass(self, hasher: _RegionHasher | None, skipping: bool) -> bool:
        """Copy every non-tried area; False when a hash could not follow the stream."""
        opts = self.opts
        free = _buffers(opts.buffers, opts.chunk_size)
        stop = threading.Event()
        read_q: queue.Queue = queue.Queue(opts.buffers + 1)
        write_q: queue.Queue = queue.Queue(opts.buffers + 1) if hasher else read_q
        max_skip = max(opts.chunk_size, min(GiB, self.size // 100)) if skipping else 0
        reader = _Reader(self.src_fd, list(self.map.ranges(NON_TRIED)), opts.chunk_size,
                         free, read_q, stop, skip_errors=True, max_skip=max_skip,
                         max_rate=opts.max_rate)
        hash_thread = _Hasher(hasher, read_q, write_q) if hasher else None
        self.map.phase, self.map.current_pass = "?", 1 if skipping else 2
        reader.start()
        if hash_thread:
            hash_thread.start()
        done = self.done_bytes()
        try:
            while True:
                if self.cancel.is_set():
                    stop.set()
                kind, pos, n, payload = write_q.get()
                if kind == "end":
                    break
                if kind == "bad":
                    self.read_errors += 1
                    self.reporter.read_errors = self.read_errors
                    self.map.set(pos, n, NON_TRIMMED)
                    continue
                try:
                    if self.failure is None:
                        self.write(payload, pos, n)
                        self.map.set(pos, n, FINISHED)
                        self.copied += n
                        done += n
                except OSError as e:
                    self.failure = (f"write error on the target {self.plan.target.node} at "
                                    f"byte {pos}: {e.strerror}")
                    stop.set()
                finally:
                    free.put(payload)
                if self.failure is None:
                    self.maybe_save(pos + n)
                    self.reporter.update(done)
        finally:
            stop.set()
            reader.join()
            if hash_thread:
                hash_thread.join()
            _close_buffers(free)
        if reader.crash:
            raise reader.crash
        return bool(hash_thread and hash_thread.valid)

    # passes 2 and 3: narrowing down read errors -----------------------------------------
    def narrow(self, status: str, step: int, fail_status: str, phase: str) -> None:
        """Re-read every ``status`` area in ``step``-sized pieces; what fails again
        becomes ``fail_status`` (for bad sectors, zeros are written in their place)."""
        areas = list(self.map.ranges(status))
        if not areas or self.failure:
            return
        self.map.phase = status
        done = self.done_bytes()
        self.reporter.start(phase, self.size, done)
        buf = blockdev.AlignedBuffer(max(step, self.sector))
        try:
            for pos, n in _chunks(areas, step):
                if self.cancel.is_set():
                    return
                try:
                    blockdev.read_exact(self.src_fd, buf.view[:n], pos)
                    ok = True
                except OSError:
                    ok = False
                    self.read_errors += 1
                    self.reporter.read_errors = self.read_errors
                    if fail_status == BAD:
                        buf.zero(0, n)
                if ok or fail_status == BAD:
                    try:
                        self.write(buf, pos, n)
                    except OSError as e:
                        self.failure = (f"write error on the target {self.plan.target.node} "
                                        f"at byte {pos}: {e.strerror}")
                        return
                    done += n
                self.map.set(pos, n, FINISHED if ok else fail_status)
                if ok:
                    self.copied += n
                elif fail_status == BAD:
                    self.reporter.unreadable += n
                self.maybe_save(pos + n)
                self.reporter.update(done)
        finally:
            buf.close()

    def run(self) -> CopyResult:
        plan, opts = self.plan, self.opts
        started = time.time()
        new_hasher(opts.algorithm)  # fail early on an unknown name
        self.src_fd = blockdev.open_device(plan.source.path)
        try:
            try:
                self.dst_fd = blockdev.open_device(plan.target.path, write=True, exclusive=True)
            except blockdev.DeviceBusy as e:
                raise Refused(f"the target {plan.target.node} is busy: it is mounted, swap, "
                              "held by RAID/LVM, or opened exclusively by another program "
                              f"({e.strerror})") from None
            for fd, e in ((self.src_fd, plan.source), (self.dst_fd, plan.target)):
                if blockdev.device_size(fd) != e.size:
                    raise Refused(f"{e.node} changed size since it was checked")
            resumed = self.load_map()
            return self._run(started, resumed)
        finally:
            for fd in (self.src_fd, self.dst_fd):
                if fd >= 0:
                    os.close(fd)

    def _run(self, started: float, resumed: bool) -> CopyResult:
        plan, opts = self.plan, self.opts
        hasher = None
        if opts.verify and not resumed:
            hasher = _RegionHasher(opts.algorithm, self.size,
                                   region_size_for(self.size, opts.chunk_size))
        t0 = time.monotonic()
        self.reporter.start("copy", self.size, self.done_bytes())
        hash_ok = self.copy_pass(hasher, skipping=True)
        if self.map.bytes_with(NON_TRIED) and not self.failure and not self.cancel.is_set():
            self.copy_pass(None, skipping=False)  # come back for what was skipped
            hash_ok = False
        self.narrow(NON_TRIMMED, CLUSTER, NON_SCRAPED, "trim")
        self.narrow(NON_SCRAPED, self.sector, BAD, "scrape")
        finished = self.map.finished and not self.failure
        if finished:
            self.map.phase, self.map.current_pos = "+", self.size
        try:
            self.save_map()
        except OSError as e:
            self.failure = self.failure or f"cannot sync the target or save the mapfile: {e}"
        if finished:
            blockdev.flush_buffers(self.dst_fd)
        self.reporter.update(self.done_bytes(), force=True)
        copy_seconds = time.monotonic() - t0
        unreadable = list(self.map.ranges(BAD))
        digest = hasher.digest() if hasher and hash_ok else None

        result = CopyResult(
            operation="copy", status="ok", message="", source=plan.source.describe(),
            target=plan.target.describe(), size=self.size, started=started, finished=0.0,
            algorithm=opts.algorithm, resumed=resumed, mapfile=self.mapfile_path,
            copied_bytes=self.copied, written_bytes=self.written,
            skipped_zero_bytes=self.skipped, write_calls=self.write_calls,
            read_errors=self.read_errors, copy_seconds=copy_seconds, unreadable=unreadable,
            source_digest=digest, warnings=list(plan.warnings),
            options={"verify": opts.verify, "skip_zeros": opts.skip_zeros,
                     "chunk_size": opts.chunk_size},
        )
        if self.failure:
            result.status, result.message = "failed", (
                f"{self.failure}; the mapfile {self.mapfile_path} records what was copied: "
                "run the same copy again to resume")
        elif self.cancel.is_set() and not finished:
            result.status, result.message = "cancelled", (
                f"interrupted; the mapfile {self.mapfile_path} records what was copied: run "
                "the same copy again to resume")
        else:
            if opts.verify:
                if digest:
                    result.verify = verify_against(self.dst_fd, digest,
                                                   progress=self.reporter, cancel=self.cancel,
                                                   chunk_size=opts.chunk_size)
                else:
                    result.verify = _compare(self.src_fd, self.dst_fd, self.size,
                                             opts.algorithm, holes=unreadable,
                                             reporter=self.reporter, cancel=self.cancel,
                                             chunk_size=opts.chunk_size)
            _conclude(result, self.cancel)
        result.finished = time.time()
        return result


def copy(plan: CopyPlan, options: CopyOptions | None = None,
         progress: Callable[[Progress], None] | None = None,
         cancel: threading.Event | None = None) -> CopyResult:
    """Copy ``plan.source`` onto ``plan.target``, verify, write the report.

    ``progress`` is called from this (worker) thread with :class:`Progress`
    events a few times a second: keep it cheap. Setting ``cancel`` stops the
    copy soon, leaving a consistent mapfile. Raises :class:`Refused` when the
    target cannot be opened exclusively or the mapfile belongs to another copy.
    """
    opts = options or CopyOptions()
    result = _Copier(plan, opts, progress, cancel).run()
    if opts.write_report:
        result.report = write_result_report(result, opts.report_dir)
    return result


def _conclude(result: CopyResult, cancel: threading.Event) -> None:
    """Status and message from the verification and the unreadable ranges."""
    v = result.verify
    bad = result.unreadable_bytes
    bad_text = (f"{len(result.unreadable)} unreadable range(s), {bad} bytes: "
                + ", ".join(f"{p}+{s}" for p, s in result.unreadable[:10])
                + (" ..." if len(result.unreadable) > 10 else "")) if bad else ""
    verb = {"copy": "copied", "verify": "verified"}[result.operation]
    if v and v.error:
        result.status = "cancelled" if cancel.is_set() else "failed"
        result.message = f"verification did not finish: {v.error}"
    elif v and not v.match:
        fd = v.first_difference or {}
        where = f"bytes {fd.get('start')}-{fd.get('end')}"
        if fd.get("offset") is not None:
            where = f"byte {fd['offset']} (in {where})"
        result.status = "mismatch"
        result.message = (f"VERIFICATION FAILED: first difference at {where}, "
                          f"{v.differing_regions} differing region(s)")
    elif bad:
        result.status = "unreadable"
        result.message = f"completed with {bad} unreadable bytes in {bad_text}"
        if v:
            result.message += " (zeros written there; the rest verified)"
    else:
        result.status = "ok"
        result.message = f"{verb} {result.size} bytes" + (", verified" if v else "")


# --- verification ------------------------------------------------------------------------


def verify_against(fd: int, digest: SourceDigest, *, progress=None, cancel=None,
                   chunk_size: int = DEFAULT_CHUNK, buffers: int = 4) -> VerifyOutcome:
    """Read ``digest.size`` bytes of ``fd`` with O_DIRECT and compare with ``digest``.

    ``progress``: a callback or a :class:`_Reporter`. The first region whose
    digest differs is named in ``first_difference``.
    """
    reporter = progress if isinstance(progress, _Reporter) else _Reporter(progress, 0.25)
    cancel = cancel or threading.Event()
    t0 = time.monotonic()
    out = VerifyOutcome(match=False, method="read back target", source_hash=digest.hexdigest)
    hasher = _RegionHasher(digest.algorithm, digest.size, digest.region_size)
    free, q, stop = _buffers(buffers, chunk_size), queue.Queue(buffers + 1), threading.Event()
    reader = _Reader(fd, [(0, digest.size)], chunk_size, free, q, stop)
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
            for i in range(checked, full):
                sl = slice(i * REGION_DIGEST, (i + 1) * REGION_DIGEST)
                if hasher.regions[sl] != digest.regions[sl]:
                    out.differing_regions += 1
                    if out.first_difference is None:
                        start = i * digest.region_size
                        out.first_difference = {
                            "start": start, "end": min(digest.size, start + digest.region_size)}
            checked = full
            reporter.update(pos + n)
    finally:
        stop.set()
        reader.join()
        _close_buffers(free)
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


def _compare(src_fd: int, dst_fd: int, size: int, algorithm: str, *, holes=(),
             reporter: _Reporter, cancel: threading.Event, chunk_size: int = DEFAULT_CHUNK,
             buffers: int = 3) -> VerifyOutcome:
    """Read source and target side by side (two reader threads) and compare them.

    ``holes``: unreadable source ranges, compared as zeros (what the copy wrote).
    """
    t0 = time.monotonic()
    out = VerifyOutcome(match=False, method="compared with source")
    stream = new_hasher(algorithm)
    stop = threading.Event()
    pools = [_buffers(buffers, chunk_size), _buffers(buffers, chunk_size)]
    queues = [queue.Queue(buffers + 1), queue.Queue(buffers + 1)]
    readers = [_Reader(src_fd, [(0, size)], chunk_size, pools[0], queues[0], stop,
                       holes=holes),
               _Reader(dst_fd, [(0, size)], chunk_size, pools[1], queues[1], stop)]
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
            _close_buffers(p)
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
        v = _compare(fds[0], fds[1], src.size, algorithm,
                     reporter=_Reporter(progress, 0.25), cancel=cancel, chunk_size=chunk_size)
    finally:
        for fd in fds:
            os.close(fd)
    result = CopyResult(operation="verify", status="ok", message="", source=src.describe(),
                        target=dst.describe(), size=src.size, started=started,
                        finished=time.time(), algorithm=algorithm, verify=v)
    _conclude(result, cancel)
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
        v = _hash_only(fd, digest, _Reporter(progress, 0.25), cancel, chunk_size)
    finally:
        os.close(fd)
    result = CopyResult(operation="verify", status="ok", message="", source=end.describe(),
                        target=None, size=size, started=started, finished=time.time(),
                        algorithm=algorithm, verify=v)
    _conclude(result, cancel)
    if result.status == "mismatch":
        result.message = (f"VERIFICATION FAILED: {algorithm} of the first {size} bytes of "
                          f"{end.node} is {v.target_hash}, expected {expected}")
    if write_report:
        result.report = write_result_report(result, report_dir)
    return result


def _hash_only(fd: int, digest: SourceDigest, reporter: _Reporter, cancel: threading.Event,
               chunk_size: int) -> VerifyOutcome:
    out = VerifyOutcome(match=False, method="hash", source_hash=digest.hexdigest)
    t0 = time.monotonic()
    stream = new_hasher(digest.algorithm)
    free, q, stop = _buffers(4, chunk_size), queue.Queue(5), threading.Event()
    reader = _Reader(fd, [(0, digest.size)], chunk_size, free, q, stop)
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
        _close_buffers(free)
    if pos < digest.size and not out.error:
        out.error = "cancelled" if cancel.is_set() else "the reader stopped early"
    if not out.error:
        out.target_hash = stream.hexdigest()
        out.match = out.target_hash == digest.hexdigest
    out.seconds = time.monotonic() - t0
    return out


# --- reports ---------------------------------------------------------------------------


def report_data(r: CopyResult) -> dict:
    """The JSON report (see docs/copy.md for the schema)."""
    v = r.verify
    copy_rate = r.copied_bytes / r.copy_seconds if r.copy_seconds else None
    return {
        "kind": r.operation, "schema": 1, "result": r.status, "exit_code": r.exit_code,
        "message": r.message, "warnings": r.warnings,
        "source": r.source, "target": r.target,
        "started": report.iso_time(r.started), "finished": report.iso_time(r.finished),
        "duration_seconds": round(r.finished - r.started, 3),
        "size": r.size,
        "copy": None if r.operation != "copy" else {
            "resumed": r.resumed, "mapfile": r.mapfile, "copied_bytes": r.copied_bytes,
            "written_bytes": r.written_bytes, "skipped_zero_bytes": r.skipped_zero_bytes,
            "write_calls": r.write_calls, "read_errors": r.read_errors,
            "seconds": round(r.copy_seconds, 3),
            "bytes_per_second": round(copy_rate) if copy_rate else None,
            "options": r.options,
        },
        "hash": {
            "algorithm": r.algorithm,
            "source": (r.source_digest.hexdigest if r.source_digest
                       else v.source_hash if v else None),
            "target": v.target_hash if v else None,
        },
        "verify": None if v is None else {
            "result": "error" if v.error else "match" if v.match else "mismatch",
            "method": v.method, "first_difference": v.first_difference,
            "differing_regions": v.differing_regions, "error": v.error,
            "seconds": round(v.seconds, 3),
            "bytes_per_second": round(r.size / v.seconds) if v.seconds else None,
        },
        "unreadable": {"bytes": r.unreadable_bytes,
                       "ranges": [{"start": p, "size": s} for p, s in r.unreadable]},
    }


def _who(d: dict) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("device", d["node"] if d["path"] == d["node"] else f"{d['path']} ({d['node']})"),
        ("size", f"{d['size']} bytes ({human_size(d['size'])}), "
                 f"{d['logical_sector_size']}-byte sectors"),
        ("transport", d["transport"])]
    rows += [(k, d[k]) for k in ("model", "serial", "wwn", "backing_file") if d.get(k)]
    if d.get("iscsi"):
        i = d["iscsi"]
        rows.append(("iscsi", f"{i['target']} LUN {i['lun']} @ {i['portal']}"))
    if d.get("partition"):
        p = d["partition"]
        rows.append(("partition", f"number {p['number']} of {p['disk']}, at byte {p['start']}"))
    return rows


def report_text(r: CopyResult) -> str:
    data = report_data(r)
    rows = [("result", f"{r.status.upper()} (exit code {r.exit_code})"),
            ("message", r.message), ("started", data["started"]),
            ("finished", data["finished"]), ("size", f"{r.size} bytes ({human_size(r.size)})")]
    rows += [("warning", w) for w in r.warnings]
    sections = [("Result", rows), ("Source", _who(r.source))]
    if r.target:
        sections.append(("Target", _who(r.target)))
    c = data["copy"]
    if c:
        rate = human_rate(c["bytes_per_second"]) if c["bytes_per_second"] else None
        sections.append(("Copy", [
            ("resumed", "yes" if r.resumed else "no"), ("mapfile", r.mapfile),
            ("copied", f"{r.copied_bytes} bytes in {human_duration(r.copy_seconds)}"
                       + (f" ({rate})" if rate else "")),
            ("written", f"{r.written_bytes} bytes in {r.write_calls} writes"),
            ("zeros skipped", f"{r.skipped_zero_bytes} bytes"),
            ("read errors", r.read_errors)]))
    h = data["hash"]
    sections.append(("Hash", [("algorithm", h["algorithm"]), ("source", h["source"]),
                              ("target", h["target"])]))
    v = data["verify"]
    if v:
        fd = v["first_difference"]
        sections.append(("Verification", [
            ("result", v["result"]), ("method", v["method"]),
            ("first difference", None if not fd else
             f"bytes {fd['start']}-{fd['end']}"
             + (f", first at byte {fd['offset']}" if fd.get("offset") is not None else "")),
            ("differing regions", v["differing_regions"]), ("error", v["error"]),
            ("rate", human_rate(v["bytes_per_second"]) if v["bytes_per_second"] else None)]))
    u = data["unreadable"]
    sections.append(("Unreadable", [
        ("bytes", u["bytes"]),
        ("ranges", "\n".join(f"{x['start']}-{x['start'] + x['size']} ({x['size']} bytes)"
                             for x in u["ranges"]) or "none")]))
    title = f"rtk {r.operation} report"
    return report.render_text(title, sections)


def write_result_report(r: CopyResult, directory: str | None = None) -> report.ReportPaths:
    return report.write_report(r.operation, report_data(r), report_text(r),
                               directory=directory, when=r.started)
