"""Path health: is a disk's transport down (an outage to wait out) or is the medium failing?

A read or a write that fails while the device's path is down (the iSCSI session not
``LOGGED_IN``, the SCSI device ``blocked`` or ``transport-offline``, or the device gone)
is not a bad sector: the job waits for the path (:func:`wait_for_path`) and does the same
I/O again, instead of recording the range as unreadable. Everything is read from sysfs
(``sys_root`` is injectable: the unit tests replay captures of a real guest's sysfs,
``tests/fixtures/sysfs-iscsi/``):

- ``/sys/block/sdX/device/state``: ``running``; ``blocked`` while the iSCSI layer
  recovers the session (I/O queued in the kernel), ``transport-offline`` once the session's
  replacement timeout (``recovery_tmo``) has expired (I/O fails at once), ``offline`` when
  the SCSI error handler gave the device up;
- ``/sys/class/iscsi_session/sessionN/state`` of the session the LUN hangs off
  (``/sys/block/sdX`` leads to ``.../hostH/sessionN/targetH:0:0/H:0:0:L/block/sdX``):
  ``LOGGED_IN``, ``FAILED`` (in recovery), ``FREE``;
- no ``/sys/block/sdX`` at all: the device is gone (logged out, the session torn down).
  After a re-login the LUN comes back under another name (the old one is still held
  open by the job): :meth:`Lun.find` finds it by its identity (the iSCSI target and
  LUN number, the SCSI ``wwid``, which holds the serial; the size), never by the old name.

:class:`Guard` is what copy and restore use: one per end of a job.
``guard.outage(error)`` tells an outage from a media error (it looks at the path at the
moment of the error); ``guard.wait()`` pauses the job, reporting
"SOURCE path to 10.0.2.2 lost, waiting 0:42 (gives up at 10:00)" through its ``report``
callback, until the path is back (the kernel's own reconnect, or a re-login) and returns
the LUN's device name now; after ``limit`` seconds, or when cancelled, it raises
:class:`Outage`. The caller reopens a device that came back under another name (the
TARGET through the write gate) and does the failed I/O again.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.units import human_duration

UP, DOWN, GONE = "up", "down", "gone"
# SCSI device states (drivers/scsi/scsi_sysfs.c) in which no I/O reaches the medium
DOWN_STATES = frozenset({"blocked", "transport-offline", "offline", "created-blocked",
                         "quiesce"})
GONE_STATES = frozenset({"cancel", "deleted"})
LOGGED_IN = "LOGGED_IN"
DEFAULT_LIMIT = 600.0  # seconds: 10 minutes
POLL = 1.0
_SESSION = re.compile(r"/(session\d+)/")
_HCTL = re.compile(r"/(\d+):(\d+):(\d+):(\d+)/block/")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _disk_dir(name: str, sys_root: str) -> tuple[str | None, int | None]:
    """``(sys_root/block/DISK, partition number)`` of the disk under kernel name ``name``
    (a whole disk or a partition of one); ``(None, None)`` when there is none."""
    name = os.path.basename(name)
    d = os.path.join(sys_root, "block", name)
    if os.path.isdir(d):
        return d, None
    p = os.path.join(sys_root, "class", "block", name)
    number = _read(os.path.join(p, "partition"))
    if number and number.isdigit():
        disk = os.path.basename(os.path.dirname(os.path.realpath(p)))
        d = os.path.join(sys_root, "block", disk)
        return (d if os.path.isdir(d) else None), int(number)
    return None, None


def session_of(name: str, sys_root: str = "/sys") -> str | None:
    """The iSCSI session (``session3``) that disk ``name`` hangs off, or None."""
    d, _ = _disk_dir(name, sys_root)
    if d is None:
        return None
    m = _SESSION.search(os.path.realpath(d) + "/")
    return m.group(1) if m else None


def path_state(disk: str, sys_root: str = "/sys") -> str:
    """:data:`UP`, :data:`DOWN` or :data:`GONE` for the disk (or partition) with kernel
    name ``disk`` (``sdb``, ``/dev/sdb1``). A device with no SCSI state and no iSCSI
    session (virtio, NVMe, loop) is up while it exists."""
    d, _ = _disk_dir(disk, sys_root)
    if d is None:
        return GONE
    state = _read(os.path.join(d, "device", "state"))
    if state in GONE_STATES:
        return GONE
    m = _SESSION.search(os.path.realpath(d) + "/")
    if state == "offline" and not m:
        # a local disk that the SCSI error handler gave up: a failing medium, not a path
        # that comes back; its errors are recorded as unreadable like any media error
        return UP
    if state in DOWN_STATES:
        return DOWN
    if m:
        s = _read(os.path.join(sys_root, "class", "iscsi_session", m.group(1), "state"))
        if s is None:
            return GONE  # the session is being torn down
        if s != LOGGED_IN:
            return DOWN
    return UP


@dataclass
class Lun:
    """What names one end of a job across a reconnect or a re-login: the kernel name when
    the job started, the partition number (when the end is a partition), and the identity
    of the disk under it from sysfs (the iSCSI target and LUN, the portal's address, the
    SCSI wwid, the size). ``role``: "SOURCE" or "TARGET" (for messages)."""

    role: str
    name: str  # the disk's kernel name when the job started (sdb)
    partition: int | None = None
    target: str | None = None  # iSCSI IQN
    lun: int | None = None
    address: str | None = None  # the portal's address (messages)
    wwid: str | None = None
    size: int | None = None  # the whole disk's, in bytes
    sys_root: str = "/sys"

    @classmethod
    def of(cls, role: str, node: str, sys_root: str = "/sys") -> Lun:
        """The identity of the device at ``node`` (``/dev/sdb1``, ``sdb``) now."""
        d, part = _disk_dir(node, sys_root)
        name = os.path.basename(d) if d else os.path.basename(node)
        lun = cls(role, name, part, sys_root=sys_root)
        if d is not None:
            lun.target, lun.lun, lun.address = _iscsi_location(d, sys_root)
            lun.wwid = _read(os.path.join(d, "device", "wwid"))
            lun.size = _size(d)
        return lun

    @property
    def iscsi(self) -> bool:
        return self.target is not None

    def node(self, name: str | None = None) -> str:
        """``/dev/NAME`` of this end (its partition on disk ``name``, default the first)."""
        disk = name or self.name
        if self.partition is None:
            return f"/dev/{disk}"
        d = os.path.join(self.sys_root, "block", disk)
        with contextlib.suppress(OSError):
            for p in sorted(os.listdir(d)):
                if _read(os.path.join(d, p, "partition")) == str(self.partition):
                    return f"/dev/{p}"
        sep = "p" if disk[-1:].isdigit() else ""
        return f"/dev/{disk}{sep}{self.partition}"

    def same(self, name: str) -> bool:
        """Whether disk ``name`` is this LUN: the same iSCSI target and LUN number (when it
        was one), the same wwid (when both have one), the same size."""
        d = os.path.join(self.sys_root, "block", name)
        if not os.path.isdir(d):
            return False
        target, lun, _ = _iscsi_location(d, self.sys_root)
        if self.iscsi and (target, lun) != (self.target, self.lun):
            return False
        wwid = _read(os.path.join(d, "device", "wwid"))
        if self.wwid and wwid and wwid != self.wwid:
            return False
        if not self.iscsi and not (self.wwid and wwid):
            return name == self.name  # nothing else names it
        return self.size is None or _size(d) == self.size

    def find(self) -> str | None:
        """The kernel name of this LUN now: the old one while it is there, else the disk
        that is the same LUN (:meth:`same`); None when there is none."""
        if os.path.isdir(os.path.join(self.sys_root, "block", self.name)) \
                and path_state(self.name, self.sys_root) != GONE:
            return self.name
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(os.path.join(self.sys_root, "block"))):
                if name != self.name and self.same(name) \
                        and path_state(name, self.sys_root) != GONE:
                    return name
        return None

    def where(self) -> str:
        """``path to 10.0.2.2`` (an iSCSI LUN), else ``sdb``."""
        return f"path to {self.address}" if self.address else self.name

    def waiting_text(self, elapsed: float, limit: float, state: str = DOWN) -> str:
        gone = f" ({self.name} is gone)" if state == GONE and self.iscsi else ""
        return (f"{self.role} {self.where()} lost{gone}, waiting {human_duration(elapsed)} "
                f"(gives up at {human_duration(limit)})")


def _size(d: str) -> int | None:
    s = _read(os.path.join(d, "size"))
    return int(s) * 512 if s and s.isdigit() else None


def _iscsi_location(d: str, sys_root: str) -> tuple[str | None, int | None, str | None]:
    """``(IQN, LUN, portal address)`` of the disk at sysfs directory ``d``, or Nones."""
    real = os.path.realpath(d) + "/"
    m = _SESSION.search(real)
    if not m:
        return None, None, None
    sess = m.group(1)
    target = _read(os.path.join(sys_root, "class", "iscsi_session", sess, "targetname"))
    h = _HCTL.search(real)
    conn = os.path.join(sys_root, "class", "iscsi_connection", f"connection{sess[7:]}:0")
    address = _read(os.path.join(conn, "persistent_address")) \
        or _read(os.path.join(conn, "address"))
    return target, int(h.group(4)) if h else None, address


class Outage(Exception):
    """The path did not come back within the limit (or the job was cancelled meanwhile)."""

    def __init__(self, message: str, lun: Lun, seconds: float, cancelled: bool = False):
        super().__init__(message)
        self.lun, self.seconds, self.cancelled = lun, seconds, cancelled


@dataclass
class Event:
    """One outage waited out (or not): for the report."""

    role: str
    where: str
    started: float  # time.time()
    seconds: float
    position: int | None
    resumed: bool
    renamed: str | None = None  # the new device name after a re-login

    def text(self) -> str:
        at = f" at byte {self.position}" if self.position is not None else ""
        end = (f"back under a new name, {self.renamed}" if self.renamed else "back") \
            if self.resumed else "gave up"
        return (f"{self.role} {self.where} lost{at} for {human_duration(self.seconds)}: "
                f"waited, {end}; nothing was recorded as unreadable")


def wait_for_path(lun: Lun, limit: float = DEFAULT_LIMIT,
                  progress: Callable[[str], None] | None = None,
                  cancel: threading.Event | None = None, poll: float = POLL,
                  clock: Callable[[], float] = time.monotonic) -> str:
    """Wait until ``lun``'s path is up; its kernel name now (another one after a
    re-login). ``progress(text)`` is called at every poll with "SOURCE path to ADDR lost,
    waiting M:SS (gives up at M:SS)". Raises :class:`Outage` after ``limit`` seconds, or
    at once when ``cancel`` is set."""
    cancel = cancel or threading.Event()
    t0 = clock()
    while True:
        name = lun.find()
        state = path_state(name, lun.sys_root) if name else GONE
        if state == UP:
            return name
        elapsed = clock() - t0
        if progress:
            progress(lun.waiting_text(elapsed, limit, state))
        if cancel.is_set():
            raise Outage(f"{lun.role} {lun.where()} lost: interrupted while waiting for it "
                         f"({human_duration(elapsed)})", lun, elapsed, cancelled=True)
        if elapsed >= limit:
            raise Outage(f"{lun.role} {lun.where()} lost: not back after "
                         f"{human_duration(elapsed)} (the outage limit, "
                         f"{human_duration(limit)}), gave up", lun, elapsed)
        cancel.wait(min(poll, max(0.05, limit - elapsed)))


@dataclass
class Guard:
    """One end of a job (``lun``) whose I/O errors are checked against its path.

    ``report(text)``: the waiting message (None when the wait is over); ``cancel``:
    the job's. Thread-safe: a reader thread and the writer may wait at once (one waits,
    the other finds the path up when it gets the lock). ``events``: the outages."""

    lun: Lun
    limit: float = DEFAULT_LIMIT
    report: Callable[[str | None], None] | None = None
    cancel: threading.Event | None = None
    poll: float = POLL
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_node(cls, role: str, node: str, sys_root: str = "/sys", **kw) -> Guard:
        return cls(Lun.of(role, node, sys_root), **kw)

    def state(self) -> str:
        name = self.lun.find()
        return path_state(name, self.lun.sys_root) if name else GONE

    def outage(self, error: BaseException | None = None) -> bool:
        """Whether an I/O error (``error``) happened while the path is down: an outage,
        not a media error. Looked at right after the error."""
        with contextlib.suppress(OSError):
            name = self.lun.name
            if path_state(name, self.lun.sys_root) != UP:
                return True
            return self.lun.find() != name  # the device was replaced meanwhile
        return False

    def wait(self, position: int | None = None) -> str:
        """Wait for the path (:func:`wait_for_path`); the LUN's kernel name now. Raises
        :class:`Outage` after the limit (the event is recorded either way)."""
        with self._lock:
            started, t0 = time.time(), time.monotonic()
            old = self.lun.name
            try:
                name = wait_for_path(self.lun, self.limit, self.report, self.cancel, self.poll)
            except Outage as e:
                self.events.append(Event(self.lun.role, self.lun.where(), started, e.seconds,
                                         position, False))
                raise
            finally:
                if self.report:
                    self.report(None)
            seconds = time.monotonic() - t0
            if seconds >= self.poll or name != old:  # a wait, not a path up at once
                self.events.append(Event(self.lun.role, self.lun.where(), started, seconds,
                                         position, True, name if name != old else None))
            self.lun.name = name
            return name

    def node(self) -> str:
        return self.lun.node()


def reopen_target(then, node: str, inputs=(), *, consent=None, source_role=frozenset()):
    """The TARGET that came back as ``node`` after a re-login, opened again through the
    write gate (:func:`toolkit.disks.gate.open_target`, whose rules all apply) once it is
    checked to be the same disk as the ``Endpoint`` ``then``: the same serial, WWN and
    size (the iSCSI target and LUN were matched by :meth:`Lun.find`). ``consent``: what
    the person named it with; one that named the old kernel name or path is replaced by
    the serial/WWN (the disk consented to, recognised). Returns the new
    :class:`~toolkit.disks.gate.WriteHold`; ValueError (in words) when it is not the same
    disk or the gate refuses."""
    from toolkit.disks import gate
    from toolkit.disks.endpoint import resolve
    from toolkit.disks.inventory import list_disks
    from toolkit.errors import Refused
    from toolkit.system import udev

    with contextlib.suppress(Exception):
        udev.settle(30)  # the new device's serial and links come from udev
    try:
        now = resolve(node, list_disks())
    except Refused as e:
        raise ValueError(e.problems[0]) from None
    for what, a, b in (("serial", then.disk.serial, now.disk.serial),
                       ("WWN", then.disk.wwn, now.disk.wwn), ("size", then.size, now.size)):
        if a != b:
            raise ValueError(f"its {what} is {b}, not {a}")
    if not (now.disk.serial or now.disk.wwn):
        raise ValueError("it has neither serial nor WWN to be recognised by")
    if consent is None or gate.consent_problem(now, consent):
        consent = gate.Consent.target_id(now.disk.serial or now.disk.wwn)
    try:
        return gate.open_target(now, list(inputs), consent=consent, source_role=source_role,
                                direct=True)
    except Refused as e:
        raise ValueError(f"the write gate refuses it: {'; '.join(e.problems)}") from None
