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
   does not name (:class:`~toolkit.disks.consent.Consent`: ``--target-id``, the serial
   typed at the prompt, the menu's typed confirmation, ``rtk.consent=``): the decision,
   :mod:`toolkit.disks.decision`;
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

This module holds the hold and the opening; :func:`write_problems` (the decision without
the opening, for plans and the menu's lists), :class:`Input`, :class:`Consent` and
:func:`consent_problem` are imported from here too.
``tests/test_gate_unit.py`` fails when any other code opens a block device for writing,
and ``tests/writeguard.py`` watches every open of the host tests.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from toolkit.disks import aliases, decision

# the consent and the decision, which callers import from the gate too
from toolkit.disks.consent import TARGET_ID, Consent, accepted_names, consent_problem, menu_word  # noqa: F401
from toolkit.disks.decision import Input, in_use_problems, write_problems  # noqa: F401
from toolkit.disks.endpoint import Endpoint
from toolkit.errors import Refused

RECLAIM_WAIT_S = 10  # a just-released partition's claim, waited out (see Hold._reclaim)

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
    def lend(self, partition: str, *more: str) -> Iterator[str]:
        """Let a program that claims ``partition`` exclusively itself (e2fsck, resize2fs,
        ntfsresize, mount) write it: the kernel refuses that while the whole disk is
        claimed. Meanwhile the gate keeps the device open (not exclusively), claims the
        disk's other partitions, and claims the whole disk again afterwards through its
        own descriptor (never by a name), checking it is still the same device; when it
        cannot (the program still holds the partition), :class:`Refused` says so, unless
        the program's own failure is already on its way. ``more``: further partitions
        lent at the same time (a Linux root's /boot and /boot/efi, mounted together)."""
        path = self.vouch_partition(partition)
        lent = {os.stat(self.vouch_partition(p)).st_rdev for p in (partition, *more)}
        self._check_open()
        anchor = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        others: list[int] = []
        failed = False
        try:
            os.close(self.fd)
            self.fd, self.lent = -1, path
            others = self._claim_partitions(but=lent)
            yield path
        except BaseException:
            failed = True
            raise
        finally:
            for fd in others:
                os.close(fd)
            try:
                self.fd = self._reclaim(anchor)
            except OSError as e:
                if not failed:
                    raise Refused(f"the write gate cannot claim {self.node} again after "
                                  f"lending {path}: {e.strerror}") from None
            finally:
                os.close(anchor)
                self.lent = None
            if not failed:
                self._check_open()

    def _reclaim(self, anchor: int) -> int:
        """The whole disk claimed again through ``anchor``. EBUSY is waited out for up to
        :data:`RECLAIM_WAIT_S`: a filesystem just unmounted, or the last process of a
        namespace that had it mounted, is released by the kernel a moment later."""
        deadline = time.monotonic() + RECLAIM_WAIT_S
        while True:
            try:
                return os.open(f"/proc/self/fd/{anchor}", self.flags)
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _claim_partitions(self, but: set[int]) -> list[int]:
        """Claim (O_EXCL, read-only) every partition of the held disk but those of ``but``
        (device numbers), as sysfs lists them now; the descriptors."""
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
                if rdev not in but and os.stat(node).st_rdev == rdev:
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
    resolver = decision.resolver_for(target, *(i.endpoint for i in inputs))
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
        again = [p for inp in inputs
                 if (p := decision.alias_problem(target, inp, resolver, after))]
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
