"""The write gate's decision without the opening (:func:`write_problems`): every reason
a target must not be written while its inputs are read, for
:func:`toolkit.disks.gate.open_target`, plans and the menu's lists.

A target is refused when it overlaps an :class:`Input` (by any alias:
:mod:`toolkit.disks.aliases`; by bytes, so two partitions side by side on one disk are
apart), when the inventory says it may not be written
(:func:`toolkit.disks.eligibility.writable_problems`), when it reaches a mounted
filesystem, a swap area, a held device, the boot medium or a SOURCE disk through an
alias (:func:`in_use_problems`), or when the consent does not name it
(:func:`toolkit.disks.consent.consent_problem`). Each message names both sides.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from toolkit.disks import aliases
from toolkit.disks.consent import Consent, consent_problem
from toolkit.disks.eligibility import in_use, writable_problems
from toolkit.disks.endpoint import Endpoint
from toolkit.disks.mounts import parse_mountinfo, parse_swaps
from toolkit.disks.overlap import overlap_problem

LIVE_MEDIUM_MOUNTS = ("/run/live/medium", "/lib/live/mount/medium")


@dataclass(frozen=True)
class Input:
    """What a write reads, which it must not destroy: a copy's source, a restore's image
    (and the files a container image refers to). ``role`` is how messages call it;
    ``endpoint``: the input resolved as a disk end; ``fd``: resolve from this open
    descriptor (the very file that will be read) rather than from the path."""

    path: str
    role: str = "source"
    endpoint: Endpoint | None = None
    fd: int | None = None


def resolver_for(*ends: Endpoint | None) -> aliases.Resolver:
    """A resolver that also knows the serials and WWNs the inventory (udev) gave ``ends``."""
    names: dict[str, set[str]] = {}
    for e in ends:
        if e is None:
            continue
        d = e.disk
        names.setdefault(d.name, set()).update(
            {f"serial:{d.serial}"} if d.serial else set())
        if d.wwn:
            names[d.name].add(f"wwn:{d.wwn}")
    return aliases.Resolver(names_of=lambda n: frozenset(names.get(n, ())))


def _target_footprint(target: Endpoint, resolver: aliases.Resolver) -> aliases.Footprint:
    if target.rdev is not None:
        fp = resolver.device_footprint(target.rdev, target.node)
    else:
        fp = resolver.footprint(target.path)
    return fp


def _collision_message(target: Endpoint, given: str, role: str, theirs_fp: aliases.Footprint,
                       ours_fp: aliases.Footprint, col: aliases.Collision) -> str:
    first_theirs = col.theirs is theirs_fp.pieces[0]
    first_ours = col.ours is ours_fp.pieces[0]
    label = target.label()
    if first_theirs and first_ours:
        head = f"the target is the {role}: {target.path} and {given} are the same device"
    elif first_theirs and col.theirs.key.startswith("file:"):
        head = f"the {role} {given} is the backing file of the target {label}"
        if any("loop device over the file" in t for t in col.ours.trail):
            backing = col.ours.what.removeprefix("the file ")
            if os.path.realpath(given) != os.path.realpath(backing):
                head += (f" by another name (the same inode as {backing}: a hard link or a "
                         "renamed file)")
    elif first_ours:
        head = f"the {role} {given} lies on the target {label}"
    elif first_theirs:
        head = f"the target {label} lies on the {role} {given}"
    else:
        head = f"the target {label} and the {role} {given} share {col.theirs.what}"
    return f"{head}: {col.words()}"


def alias_problem(target: Endpoint, inp: Input, resolver: aliases.Resolver | None = None,
                  ours: aliases.Footprint | None = None) -> str | None:
    """Why writing ``target`` would destroy what ``inp`` reads, by any alias (None: apart)."""
    resolver = resolver or resolver_for(target, inp.endpoint)
    try:
        ours = ours or _target_footprint(target, resolver)
        theirs = resolver.footprint(inp.path, fd=inp.fd)
    except aliases.Unresolvable as e:
        if str(e).startswith("cannot tell which disk holds"):
            return f"{e}: writing the target {target.node} is refused"
        return (f"the {inp.role} {inp.path} cannot be followed to the devices it lives on "
                f"({e}), so nothing can tell that the target {target.node} is apart from it")
    except OSError as e:
        return f"the {inp.role} {inp.path} cannot be resolved: {e.strerror or e}"
    col = aliases.collision(ours, theirs)
    return _collision_message(target, inp.path, inp.role, theirs, ours, col) if col else None


@dataclass
class _InUse:
    """A device (or a swap file) in use that no alias of a target may reach."""

    rdev: int | None
    what: str  # "/dev/vda, mounted at /"
    path: str | None = None  # a swap file


def _devices_in_use(resolver: aliases.Resolver, source_role: Iterable[str]) -> list[_InUse]:
    """Mounted filesystems' devices, swap devices and files, held devices, the boot
    medium, SOURCE-role devices given by path: what a target must not reach."""
    out: list[_InUse] = []
    with contextlib.suppress(OSError):
        with open(resolver.mountinfo) as f:
            mounts = parse_mountinfo(f.read())
        for m in mounts:
            with contextlib.suppress(ValueError, OSError):
                rdev = aliases.Resolver.devno(m.devno)
                if resolver.sysdir(rdev):
                    what = ("the boot medium of this live system" if m.mountpoint in
                            LIVE_MEDIUM_MOUNTS else f"mounted at {m.mountpoint}")
                    out.append(_InUse(rdev, f"{resolver.node(rdev)}, {what}"))
    with contextlib.suppress(OSError), open(resolver.swaps) as f:
        for name in parse_swaps(f.read()):
            with contextlib.suppress(OSError):
                st = os.stat(name)
                if stat.S_ISBLK(st.st_mode):
                    out.append(_InUse(st.st_rdev, f"{name}, in use as swap"))
                elif stat.S_ISREG(st.st_mode):
                    out.append(_InUse(None, f"the swap file {name}", name))
    with contextlib.suppress(OSError):
        base = os.path.join(resolver.sys, "class", "block")
        for name in sorted(os.listdir(base)):
            with contextlib.suppress(OSError, ValueError):
                holders = os.listdir(os.path.join(base, name, "holders"))
                if holders:
                    with open(os.path.join(base, name, "dev")) as f:
                        rdev = aliases.Resolver.devno(f.read())
                    out.append(_InUse(rdev, f"{resolver.node(rdev)}, held by "
                                            f"{', '.join(sorted(holders))}"))
    for key in source_role:
        with contextlib.suppress(OSError, TypeError, ValueError):
            if key.startswith("/") and stat.S_ISBLK(os.stat(key).st_mode):
                out.append(_InUse(os.stat(key).st_rdev, f"{key}, an iSCSI disk attached as "
                                                        "SOURCE (a backup snapshot)"))
    return out


def devices_in_use(resolver: aliases.Resolver) -> list[_InUse]:
    """Mounted filesystems' devices, swap devices and files, held devices, the boot
    medium (``what``: in words): for a copy's source (:mod:`toolkit.copy.source_use`)."""
    return _devices_in_use(resolver, ())


def in_use_problems(target: Endpoint, resolver: aliases.Resolver,
                    source_role: Iterable[str] = frozenset(),
                    ours: aliases.Footprint | None = None) -> list[str]:
    """Devices in use (mounted, swap, held, the boot medium, SOURCE) that writing
    ``target`` would reach through an alias: a loop device over a mounted disk, say.
    Only the target's raw bytes count: a file on a mounted filesystem may be written."""
    roles = set(source_role)
    ours = ours or _target_footprint(target, resolver)
    problems: list[str] = []
    for piece in ours.pieces[1:]:  # the target itself: the inventory's (eligibility)
        hit = piece.names & ({f"serial:{r}" for r in roles} | {f"wwn:{r}" for r in roles})
        if piece.inside is None and hit:
            problems.append(f"the target {target.label()} reaches {piece.what}, an iSCSI disk "
                            f"attached as SOURCE ({', '.join(sorted(hit))}): "
                            + "; ".join(piece.trail))
    for used in _devices_in_use(resolver, roles):
        try:
            theirs = (resolver.footprint(used.path) if used.path else
                      resolver.device_footprint(used.rdev, used.what))
        except (aliases.Unresolvable, OSError):
            continue
        col = aliases.collision(ours, theirs, raw_only=True)
        if col is None or (col.ours is ours.pieces[0] and col.theirs is theirs.pieces[0]):
            continue  # none, or the target itself in use: the inventory says so
        said = col.words()
        problems.append(f"the target {target.label()} would overwrite {used.what}: {said}")
    return list(dict.fromkeys(problems))


def write_problems(target: Endpoint, inputs: Iterable[Input] = (), *,
                   source_role: Iterable[str] = frozenset(), consent: Consent | None = None,
                   deep: bool = True, resolver: aliases.Resolver | None = None) -> list[str]:
    """Every reason ``target`` must not be written with ``inputs`` read, most serious
    first: it overlaps an input; it may not be written at all (the inventory: SOURCE,
    in use, read-only); it reaches a device in use through an alias; ``consent`` does
    not name it. ``deep=False``: the inventory's records only (no sysfs), for lists of
    hand-built disks."""
    inputs = list(inputs)
    roles = frozenset(source_role)
    resolver = resolver or resolver_for(target, *(i.endpoint for i in inputs))
    problems: list[str] = []
    ours = None
    if deep:
        try:
            ours = _target_footprint(target, resolver)
        except (aliases.Unresolvable, OSError) as e:
            problems.append(f"the target {target.node} cannot be followed to the devices it "
                            f"is made of ({e}): it is not written")
            deep = False
    for inp in inputs:
        p = overlap_problem(inp.endpoint, target, inp.role) if inp.endpoint else None
        if p is None and deep:
            p = alias_problem(target, inp, resolver, ours)
        if p:
            problems.append(p)
    eligible = writable_problems(target, roles)
    problems += eligible
    if deep and not in_use(target):
        problems += [p for p in in_use_problems(target, resolver, roles, ours)
                     if p not in problems]
    if consent is not None:
        c = consent_problem(target, consent)
        if c:
            problems.append(c)
    return problems
