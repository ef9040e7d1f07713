"""The write gate: the one place that decides whether a block device may be written, from
identities only, and the only code that opens one for writing.

Disk Copy, Restore, the unattended runs and the menu all get their writable descriptor
from :func:`open_target`, which

1. resolves the target and every input (a copy's source, a restore's image and its
   backing files) to the physical devices and files involved
   (:mod:`toolkit.disks.aliases`: symlinks, device nodes by major:minor, partitions to
   byte ranges of their disk, loop devices to their backing file or device, dm/md
   devices to their members, the same serial/WWN under another path, an image file to
   its inode and the filesystem device(s) it lives on, recursively);
2. refuses (:class:`~toolkit.errors.Refused`, each message naming both sides) a target
   that overlaps an input (by bytes: two partitions side by side on one disk are
   apart), that reaches a mounted filesystem, a swap area, a held device or the boot
   medium through any alias, that the inventory calls in use, read-only or SOURCE
   (:func:`toolkit.disks.eligibility.writable_problems`), or that the person's consent
   does not name (:class:`Consent`: ``--target-id``, the serial typed at the prompt, the
   menu's typed confirmation, ``rtk.consent=``);
3. opens it ``O_RDWR | O_EXCL`` (``O_DIRECT`` unless told otherwise), then checks that
   the descriptor is the device it decided on (``fstat``: a symlink swapped between the
   check and the open does not win; the disk sequence number: a loop device detached and
   attached to another file is another disk), resolves it again now that it is held, and
   hands out a :class:`WriteHold`.

Programs that write the target (qemu-img, sfdisk, growpart; e2fsck, resize2fs,
ntfsresize, mount for XFS on a partition) run only while a hold is in place:
qemu-img through ``/proc/self/fd/N`` of the hold's own descriptor
(:meth:`WriteHold.fd_path`, the very device held), the partition-table tools through
the kernel's node of the held disk, checked just before (:meth:`WriteHold.vouch`), and
the filesystem tools, which claim their partition exclusively themselves (the kernel
refuses that while the whole disk is claimed), through :meth:`WriteHold.lend`.

:func:`write_problems` is the decision without the opening, for plans and the menu's
lists. ``tests/test_gate_unit.py`` fails when any other code opens a block device for
writing, and ``tests/writeguard.py`` watches every open of the host tests.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from toolkit.disks import aliases
from toolkit.disks.eligibility import in_use, writable_problems
from toolkit.disks.endpoint import Endpoint
from toolkit.disks.identity import identity_of
from toolkit.disks.mounts import parse_mountinfo, parse_swaps
from toolkit.disks.overlap import overlap_problem
from toolkit.errors import Refused

LIVE_MEDIUM_MOUNTS = ("/run/live/medium", "/lib/live/mount/medium")


# --- consent ---------------------------------------------------------------------------------

TARGET_ID, TYPED, MENU, UNATTENDED, PROGRAM = (
    "--target-id", "typed at the prompt", "typed in the menu", "rtk.consent", "the program")


@dataclass(frozen=True)
class Consent:
    """What a person (or the boot parameters) named the target with, as the caller
    collected it. ``how`` says where it came from, which decides what it may be:

    - ``--target-id`` (``rtk copy/restore --yes``): the serial or WWN; a disk with
      neither (a loop device) by its kernel name, node or backing file;
    - typed at the prompt: the serial/WWN or the device name (``sdb``, ``/dev/sdb``);
    - typed in the menu: exactly the word the screen asked for (the serial/WWN, else
      the kernel name);
    - ``rtk.consent=serial:X`` / ``wwn:Y``: only a serial or a WWN;
    - the program: a Python caller (tests, benchmarks) that named the target by its
      path: that path must still lead to the target.
    """

    how: str
    value: str
    kind: str = ""  # rtk.consent: "serial" or "wwn"

    @classmethod
    def target_id(cls, value: str) -> Consent:
        return cls(TARGET_ID, value)

    @classmethod
    def typed(cls, value: str) -> Consent:
        return cls(TYPED, value.strip())

    @classmethod
    def menu(cls, value: str) -> Consent:
        return cls(MENU, value.strip())

    @classmethod
    def unattended(cls, kind: str, value: str) -> Consent:
        return cls(UNATTENDED, value, kind)

    @classmethod
    def program(cls, path: str) -> Consent:
        return cls(PROGRAM, path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}" if self.kind else self.value


def menu_word(target: Endpoint) -> str:
    """What the menu asks the technician to type: the serial/WWN, else the kernel name."""
    return target.disk.identity or target.disk.name


def accepted_names(target: Endpoint, how: str = TARGET_ID) -> set[str]:
    """What a consent given ``how`` may be for ``target``."""
    d = target.disk
    ident = {x for x in (d.serial, d.wwn) if x}
    if how == TARGET_ID:
        if ident:
            return ident
        names = {d.name, d.path, target.node, os.path.basename(target.node)}
        if d.backing_file:
            names.add(d.backing_file)
        return names
    if how == TYPED:
        names = {os.path.basename(target.node), target.node}
        if target.identity:
            names.add(target.identity)
        return names
    if how == MENU:
        return {menu_word(target)}
    return ident


def _wwn(text: str | None) -> str:
    t = (text or "").strip().lower()
    for prefix in ("0x", "naa.", "eui.", "wwn-0x"):
        t = t.removeprefix(prefix)
    return t


def consent_problem(target: Endpoint, consent: Consent) -> str | None:
    """Why ``consent`` does not name ``target`` (None: it does)."""
    label = target.label()
    if consent.how == TARGET_ID:
        names = accepted_names(target, TARGET_ID)
        if consent.value in names:
            return None
        return (f"--target-id {consent.value} does not match the target {label}: "
                f"expected {' or '.join(sorted(names))}")
    if consent.how == TYPED:
        if consent.value in accepted_names(target, TYPED):
            return None
        return f"not confirmed: {consent.value or 'nothing'!r} does not name the target {label}"
    if consent.how == MENU:
        if consent.value == menu_word(target):
            return None
        return (f"the confirmation typed in the menu ({consent.value or 'nothing'}) does not "
                f"name the target {label}: {menu_word(target)} was asked for")
    if consent.how == UNATTENDED:
        d = target.disk
        if consent.kind not in ("serial", "wwn"):
            return f"rtk.consent={consent}: consent is serial: or wwn:"
        if not d.serial and not d.wwn:
            return (f"{d.name} has neither serial nor WWN, so no consent can name it: write "
                    "it from the menu instead")
        ok = (d.serial is not None and d.serial.strip() == consent.value.strip()
              if consent.kind == "serial" else bool(d.wwn) and _wwn(d.wwn) == _wwn(consent.value))
        if ok:
            return None
        return (f"rtk.consent={consent} does not name the disk found, "
                f"{identity_of(d).summary()}: nothing was written")
    if consent.how == PROGRAM:
        try:
            rdev = os.stat(consent.value).st_rdev
        except OSError as e:
            return f"the target was named {consent.value}, which is gone ({e.strerror})"
        if target.rdev is not None and rdev != target.rdev:
            return (f"the target was named {consent.value}, which does not lead to "
                    f"{target.node} any more")
        return None
    return f"a consent of an unknown kind ({consent.how}) names nothing"


# --- inputs and the decision ------------------------------------------------------------------

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


# --- the hold ------------------------------------------------------------------------------------

def _diskseq(resolver: aliases.Resolver, rdev: int) -> str | None:
    """The kernel's sequence number of the disk under ``rdev`` (a new one for every disk
    attached: a loop device bound to another file is another disk), or None."""
    d = resolver.sysdir(rdev)
    if d is None:
        return None
    whole = os.path.dirname(d) if os.path.exists(os.path.join(d, "partition")) else d
    with contextlib.suppress(OSError), open(os.path.join(whole, "diskseq")) as f:
        return f.read().strip()
    return None


@dataclass
class WriteHold:
    """The target, open for writing and claimed exclusively (O_EXCL): the only writable
    descriptor of it. ``fd``; ``node``: the kernel's /dev/NAME of it; ``rdev``."""

    fd: int
    target: Endpoint
    rdev: int
    node: str
    flags: int
    resolver: aliases.Resolver = field(repr=False)
    lent: str | None = None

    @property
    def path(self) -> str:
        return self.target.path

    def fd_path(self) -> str:
        """``/proc/self/fd/N``: the held device itself, for a child process that gets the
        descriptor (``pass_fds=(hold.fd,)``) and opens that name (qemu-img)."""
        self._check_open()
        return f"/proc/self/fd/{self.fd}"

    def _check_open(self) -> None:
        if self.fd < 0:
            raise Refused(f"the write gate's hold of {self.node} is closed: nothing is written")
        st = os.fstat(self.fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != self.rdev:
            raise Refused(f"the write gate's descriptor is not {self.node} any more")

    def vouch(self, path: str | None = None) -> str:
        """``path`` (default: the disk's node) for a program that writes the held disk,
        once it is checked to lead to the held device right now."""
        self._check_open()
        path = path or self.node
        try:
            st = os.stat(path)
        except OSError as e:
            raise Refused(f"{path}: {e.strerror}; nothing is written through it") from None
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != self.rdev:
            raise Refused(f"{path} does not lead to the held target {self.node}: nothing is "
                          "written through it")
        return path

    def vouch_partition(self, path: str) -> str:
        """``path``, once it is checked to be a partition of the held disk right now."""
        try:
            st = os.stat(path)
        except OSError as e:
            raise Refused(f"{path}: {e.strerror}; nothing is written through it") from None
        d = self.resolver.sysdir(st.st_rdev) if stat.S_ISBLK(st.st_mode) else None
        parent = os.path.dirname(d) if d and os.path.exists(os.path.join(d, "partition")) \
            else None
        if parent is None or self.resolver.sysdir(self.rdev) != parent:
            raise Refused(f"{path} is not a partition of the held target {self.node}: nothing "
                          "is written through it")
        return path

    @contextlib.contextmanager
    def lend(self, partition: str) -> Iterator[str]:
        """Let a program that claims ``partition`` exclusively itself (e2fsck, resize2fs,
        ntfsresize, mount) write it: the kernel refuses that while the whole disk is
        claimed. Meanwhile the gate keeps the device open (not exclusively), claims the
        disk's other partitions, and claims the whole disk again afterwards through its
        own descriptor (never by a name), checking it is still the same device; when it
        cannot (the program still holds the partition), :class:`Refused` says so, unless
        the program's own failure is already on its way."""
        path = self.vouch_partition(partition)
        self._check_open()
        anchor = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        others: list[int] = []
        failed = False
        try:
            os.close(self.fd)
            self.fd, self.lent = -1, path
            others = self._claim_partitions(but=os.stat(path).st_rdev)
            yield path
        except BaseException:
            failed = True
            raise
        finally:
            for fd in others:
                os.close(fd)
            try:
                self.fd = os.open(f"/proc/self/fd/{anchor}", self.flags)
            except OSError as e:
                if not failed:
                    raise Refused(f"the write gate cannot claim {self.node} again after "
                                  f"lending {path}: {e.strerror}") from None
            finally:
                os.close(anchor)
                self.lent = None
            if not failed:
                self._check_open()

    def _claim_partitions(self, but: int) -> list[int]:
        """Claim (O_EXCL, read-only) every partition of the held disk but ``but``, as
        sysfs lists them now; the descriptors."""
        fds: list[int] = []
        d = self.resolver.sysdir(self.rdev)
        for name in sorted(os.listdir(d)) if d else []:
            with contextlib.suppress(OSError, ValueError):
                sub = os.path.join(d, name)
                if not os.path.exists(os.path.join(sub, "partition")):
                    continue
                with open(os.path.join(sub, "dev")) as f:
                    rdev = aliases.Resolver.devno(f.read())
                node = os.path.join(self.resolver.dev, name)
                if rdev != but and os.stat(node).st_rdev == rdev:
                    fds.append(os.open(node, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC))
        return fds

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> WriteHold:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _busy(node: str, e: OSError) -> Refused:
    if e.errno == errno.EBUSY:
        return Refused(f"the target {node} is busy: it is mounted, swap, held by RAID/LVM, or "
                       f"opened exclusively by another program ({e.strerror})")
    return Refused(f"the target {node} cannot be opened for writing: {e.strerror}")


def open_target(target: Endpoint, inputs: Iterable[Input] = (), *,
                consent: Consent | None = None, source_role: Iterable[str] = frozenset(),
                direct: bool = True) -> WriteHold:
    """Decide, open ``target`` (O_RDWR | O_EXCL, O_DIRECT when ``direct``), check the
    descriptor is the device decided on, and hand out the hold. ``consent``: what the
    person named the target with (None: a program's call, the target's path is its
    consent). Raises :class:`~toolkit.errors.Refused` with every reason; nothing is
    written then."""
    inputs = list(inputs)
    consent = consent or Consent.program(target.path)
    resolver = resolver_for(target, *(i.endpoint for i in inputs))
    problems = write_problems(target, inputs, source_role=source_role, consent=consent,
                              resolver=resolver)
    if problems:
        raise Refused(problems)
    try:
        st = os.stat(target.path)
    except OSError as e:
        raise Refused(f"the target {target.path}: {e.strerror}") from None
    rdev = target.rdev if target.rdev is not None else st.st_rdev
    if not stat.S_ISBLK(st.st_mode) or st.st_rdev != rdev:
        raise Refused(f"the target {target.path} does not lead to {target.node} any more: it "
                      "changed since it was checked")
    before = resolver.device_footprint(rdev, target.node)
    seq = target.diskseq if target.diskseq is not None else _diskseq(resolver, rdev)
    flags = os.O_RDWR | os.O_EXCL | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(target.path, flags)
    except OSError as e:
        raise _busy(target.node, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != rdev:
            raise Refused(f"the target {target.path} changed between the check and the open: "
                          f"it led to {target.node} ({os.major(rdev)}:{os.minor(rdev)}), "
                          f"now to {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        now = _diskseq(resolver, rdev)
        if seq is not None and now != seq:
            raise Refused(f"the target {target.node} is not the disk that was checked: it was "
                          f"detached and another one attached since (disk sequence {seq}, now "
                          f"{now})")
        after = resolver.device_footprint(rdev, target.node)
        if after.keys() != before.keys():
            raise Refused(f"the target {target.node} changed while it was opened (what it "
                          "is made of is not what was checked)")
        again = [p for inp in inputs if (p := alias_problem(target, inp, resolver, after))]
        if again:
            raise Refused(again)
    except BaseException:
        os.close(fd)
        raise
    return WriteHold(fd, target, rdev, resolver.node(rdev), flags, resolver)


def open_file(path: str, *, direct: bool = True) -> int:
    """A regular file opened for writing (a restore onto an image file, in tests); a
    block device is refused: it is written only through :func:`open_target`."""
    with contextlib.suppress(OSError):
        if stat.S_ISBLK(os.stat(path).st_mode):
            raise Refused(f"{path} is a block device: it is written only through the write "
                          "gate's checks")
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_DIRECT if direct else 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{path} is not a regular file: nothing is written to it")
    return fd
