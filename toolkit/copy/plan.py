"""Whether copying one disk onto another is safe, and the copy's plan.

:func:`plan_copy` resolves both paths to devices
(:func:`toolkit.disks.endpoint.resolve`: sizes and sector sizes from the devices'
ioctls) and refuses unsafe pairs with :class:`Refused`, whose message names both
figures. :func:`check_pair` asks the write gate (:func:`toolkit.disks.gate.write_problems`)
whether the target may be written with the source read: the target overlaps the source
(by any path, serial, WWN, loop backing file, a partition of it, and with ``deep``, by
every alias sysfs knows: a loop device over the source, over a partition of the target,
a hard link of a backing file...), the target may not be written (mounted, swap, held,
the boot medium, read-only, an iSCSI disk attached as SOURCE); then what is copy's own:
the target is smaller, the logical sector sizes differ, the source is in use (a
warning; with ``deep`` also through any alias: :mod:`toolkit.copy.source_use`).
The copy itself gets its writable descriptor from the gate
(:func:`toolkit.disks.gate.open_target`), which decides all of it again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from toolkit.copy import source_use
from toolkit.disks import gate
from toolkit.disks.eligibility import in_use
from toolkit.disks.endpoint import Endpoint, resolve
from toolkit.disks.inventory import Disk, list_disks
from toolkit.errors import Refused
from toolkit.jobs import report
from toolkit.units import human_size


def source_input(src: Endpoint, fd: int | None = None) -> gate.Input:
    """The source as the write gate sees it: read, never to be overwritten."""
    return gate.Input(src.path, "source", endpoint=src, fd=fd)


def check_pair(src: Endpoint, dst: Endpoint, source_role: Iterable[str] = frozenset(), *,
               deep: bool = False) -> tuple[list[str], list[str]]:
    """Why copying ``src`` onto ``dst`` must be refused, and what to warn about.

    Problems come most serious first (same disk, SOURCE role, in use, read-only, then
    sizes): a list that can show only one reason shows the first.

    ``source_role``: paths or identities of disks the iSCSI manager attached
    as SOURCE (backup snapshots), never to be written. ``deep``: also every alias the
    devices' sysfs records show (both ends must exist); without it the inventory's
    records only (a pure function of the two ends).
    """
    problems = gate.write_problems(dst, [source_input(src)], source_role=source_role,
                                   deep=deep)
    if dst.size < src.size:
        problems.append(f"the target is smaller than the source: target {dst.node} has "
                        f"{dst.size} bytes ({human_size(dst.size)}), source {src.node} has "
                        f"{src.size} bytes ({human_size(src.size)})")
    if src.sector_size != dst.sector_size:
        problems.append(f"the logical sector sizes differ: source {src.node} has "
                        f"{src.sector_size}-byte sectors, target {dst.node} has "
                        f"{dst.sector_size}-byte sectors (a partition table and file "
                        "systems would not fit the target)")
    warnings: list[str] = []
    used = in_use(src, boot=False)
    other = source_use.finder(src)(0, src.size) if deep and not used else ""
    if other:
        used = [f"through another device: {other}"]
    if used:
        warnings.append(f"the source {src.node} is in use ({'; '.join(used)}): data "
                        "changing during the copy may make it inconsistent")
    return problems, warnings


@dataclass
class CopyPlan:
    source: Endpoint
    target: Endpoint
    warnings: list[str] = field(default_factory=list)
    source_role: frozenset[str] = frozenset()  # checked again when the target is opened


def plan_copy(source: str, target: str, *, source_role: Iterable[str] = frozenset(),
              disks: list[Disk] | None = None) -> CopyPlan:
    """Resolve and check a copy; raises :class:`Refused` with every problem found."""
    disks = list_disks() if disks is None else disks
    src, dst = resolve(source, disks), resolve(target, disks)
    role = frozenset(source_role)
    problems, warnings = check_pair(src, dst, role, deep=True)
    if problems:
        raise Refused(problems)
    return CopyPlan(src, dst, warnings, role)


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
