"""May this disk be written at all, whatever is written onto it?

:func:`writable_problems` says why not, in plain language, most serious first: an
iSCSI disk attached as SOURCE (a backup snapshot), a disk in use (the boot medium of
this live system, mounted, swap, held by a RAID, LVM or dm device), a read-only
device. Whether the target overlaps what is written onto it is
:mod:`toolkit.disks.overlap`'s question; sizes and sector sizes are the caller's
(a copy compares two disks, a restore a disk and an image).
"""

from __future__ import annotations

from collections.abc import Iterable

from toolkit.disks.endpoint import Endpoint


def writable_problems(target: Endpoint, source_role: Iterable[str] = frozenset()) -> list[str]:
    """Why ``target`` must not be written (empty: it may be).

    ``source_role``: paths or identities of disks the iSCSI manager attached as
    SOURCE (:func:`toolkit.disks.roles.source_keys`), never to be written.
    """
    problems: list[str] = []
    if is_source_role(target, source_role):
        problems.append(f"the target {target.label()} is an iSCSI disk attached as SOURCE "
                        "(a backup snapshot): it is never written")
    problems += [f"the target {target.node} is in use: {r}" for r in in_use(target)]
    if target.disk.read_only:
        problems.append(f"the target {target.node} is read-only")
    return problems


def is_source_role(e: Endpoint, source_role: Iterable[str]) -> bool:
    """Whether any name of ``e``'s disk is among the SOURCE-role names."""
    roles = set(source_role)
    if not roles:
        return False
    d = e.disk
    names = {e.path, e.node, d.path, d.name, d.serial, d.wwn, *d.by_id, *d.by_path} - {None}
    if d.iscsi:
        names.add(f"{d.iscsi.target}:{d.iscsi.lun}")
    return bool(names & roles)


def in_use(e: Endpoint, *, boot: bool = True) -> list[str]:
    """What uses ``e`` (the whole disk's uses for a disk, the partition's for a partition,
    with the boot medium unless ``boot`` is False), most serious first."""
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
