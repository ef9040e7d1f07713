"""Whether copying one disk onto another is safe, and the copy's plan.

:func:`plan_copy` resolves both paths to devices
(:func:`toolkit.disks.endpoint.resolve`: sizes and sector sizes from the devices'
ioctls) and refuses unsafe pairs with :class:`Refused`, whose message names both
figures. :func:`check_pair` is the pure part: the target overlaps the source
(:mod:`toolkit.disks.overlap`: by any path, serial, WWN, loop backing file, a
partition of it), the target may not be written (:mod:`toolkit.disks.eligibility`:
mounted, swap, held, the boot medium, read-only, an iSCSI disk attached as SOURCE),
and what is copy's own: the target is smaller, the logical sector sizes differ, the
source is in use (a warning).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from toolkit.disks.eligibility import in_use, writable_problems
from toolkit.disks.endpoint import Endpoint, resolve
from toolkit.disks.inventory import Disk, list_disks
from toolkit.disks.overlap import overlap_problem
from toolkit.errors import Refused
from toolkit.jobs import report
from toolkit.units import human_size


def check_pair(src: Endpoint, dst: Endpoint,
               source_role: Iterable[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Why copying ``src`` onto ``dst`` must be refused, and what to warn about.

    Problems come most serious first (same disk, SOURCE role, in use, read-only, then
    sizes): a list that can show only one reason shows the first.

    ``source_role``: paths or identities of disks the iSCSI manager attached
    as SOURCE (backup snapshots), never to be written.
    """
    overlap = overlap_problem(src, dst, "source")
    problems = [overlap] if overlap else []
    problems += writable_problems(dst, source_role)
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
    if used:
        warnings.append(f"the source {src.node} is in use ({'; '.join(used)}): data "
                        "changing during the copy may make it inconsistent")
    return problems, warnings


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
