"""The two ends of a copy, and whether copying one onto the other is safe.

:func:`plan_copy` resolves both paths to devices (sizes and sector sizes from
the devices' ioctls) and refuses unsafe pairs with :class:`Refused`, whose
message names both figures: target smaller, different logical sector sizes,
target is the source (by any path, serial, WWN, loop backing file) or
overlaps it, target mounted/swap/held/boot medium/read-only, or an iSCSI disk
attached as SOURCE. :func:`check_pair` is the pure part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from toolkit.blockio import blockdev
from toolkit.disks.inventory import Disk, Partition, list_disks
from toolkit.errors import Refused
from toolkit.jobs import report
from toolkit.units import human_size


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

    Problems come most serious first (same disk, SOURCE role, in use, then sizes):
    a list that can show only one reason shows the first.

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
    if dst.size < src.size:
        problems.append(f"the target is smaller than the source: target {dst.node} has "
                        f"{dst.size} bytes ({human_size(dst.size)}), source {src.node} has "
                        f"{src.size} bytes ({human_size(src.size)})")
    if src.sector_size != dst.sector_size:
        problems.append(f"the logical sector sizes differ: source {src.node} has "
                        f"{src.sector_size}-byte sectors, target {dst.node} has "
                        f"{dst.sector_size}-byte sectors (a partition table and file "
                        "systems would not fit the target)")
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
