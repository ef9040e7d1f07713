"""The target disk of a restore: :class:`Target`, opened for writing through the write
gate (O_DIRECT, O_EXCL; its descriptor the gate's), its outages waited out; it zeros its
first and last MiB (:meth:`Target.wipe_ends`) and writes the image's first MiB last
(:meth:`Target.write_head`, read back). :class:`Failed`: a restore that stopped after it
started writing (the order is :mod:`toolkit.restore.write`'s docstring).
"""

from __future__ import annotations

import os
import threading

from toolkit.blockio import blockdev
from toolkit.disks import gate, transport
from toolkit.jobs.progress import Reporter

MiB = 1 << 20
HEAD = MiB  # held back and written last


class Failed(Exception):
    """The restore stopped after it started writing; the target holds no valid table."""

    def __init__(self, message: str, status: str = "failed"):
        super().__init__(message)
        self.status = status  # "failed", "mismatch", "cancelled"


class Target:
    """The target disk opened for writing: O_DIRECT, O_EXCL (not mounted, not held), its
    descriptor the write gate's (:meth:`open`; ``hold``). Given a path, a regular file
    only (an image file in tests): a block device is written through the gate alone."""

    def __init__(self, target: gate.WriteHold | str):
        if isinstance(target, gate.WriteHold):
            self.hold: gate.WriteHold | None = target
            self.path = target.path
            self._fd = -1
        else:
            self.hold, self.path = None, target
            self._fd = gate.open_file(target, direct=True)
        self.size = blockdev.device_size(self.fd)
        self.sector = blockdev.logical_sector_size(self.fd)
        self.head_written = False
        self.zeroout = True  # BLKZEROOUT for all-zero chunks, until the device refuses it
        self.zeroed = 0  # bytes zeroed that way
        # a storage outage (toolkit.disks.transport): waited out, then the same I/O again
        self.guard: transport.Guard | None = None
        self.outage_limit = transport.DEFAULT_LIMIT
        self.gave_up = False  # an outage outlasted the limit: later errors are not waited
        self.sys_root = "/sys"
        self._reopen: tuple = ((), None, frozenset())  # inputs, consent, source_role

    @classmethod
    def open(cls, target, inputs=(), *, consent: gate.Consent | None = None,
             source_role=frozenset()) -> Target:
        """The target ``Endpoint`` opened by the write gate, which refuses
        (:class:`~toolkit.errors.Refused`) unless it may be written with ``inputs`` (the
        image, its backing files: :class:`toolkit.disks.gate.Input`) read and
        ``consent`` names it."""
        inputs = list(inputs)
        t = cls(gate.open_target(target, inputs, consent=consent, source_role=source_role,
                                 direct=True))
        t._reopen = (inputs, consent, frozenset(source_role))
        return t

    # storage outages ------------------------------------------------------------------
    def watch(self, reporter: Reporter | None, cancel: threading.Event | None) -> None:
        """Guard the target's path from now on: an I/O error while it is down pauses the
        restore (the progress says "TARGET path to ADDR lost, waiting 0:42 (gives up at
        10:00)") until it is back, then the same I/O is done again; past
        ``outage_limit`` seconds it fails. An image file (tests) has no path to guard."""
        if self.hold is None or self.guard is not None:
            return
        self.guard = transport.Guard(
            transport.Lun.of("TARGET", self.hold.node, self.sys_root), self.outage_limit,
            report=reporter.waiting if reporter else None, cancel=cancel)

    def retry(self, io, pos: int | None = None):
        """``io(fd)``; after an I/O error while the path is down: waited out (a device back
        under another name reopened through the write gate) and done again. A media error
        is raised as it is; an outage past the limit as :class:`Failed`."""
        while True:
            try:
                return io(self.fd)
            except OSError as e:
                if not self.outage(e, pos):
                    raise

    def outage(self, error: OSError, pos: int | None = None) -> bool:
        """Whether ``error`` came from an outage, now waited out (True: do the I/O again).
        Once one outlasted the limit (or the wait was cancelled), none is waited out again:
        the clean-up after it (:meth:`wipe_ends`) tries once and says what failed."""
        g = self.guard
        if g is None or self.gave_up or not g.outage(error):
            return False
        old = g.lun.name
        try:
            name = g.wait(pos)
            if name != old:
                self._reopen_as(g.node(), old)
        except transport.Outage as e:
            self.gave_up = True
            raise Failed(f"{e}; the restore stopped" if not e.cancelled else "cancelled",
                         "cancelled" if e.cancelled else "failed") from None
        return True

    def _reopen_as(self, node: str, old: str) -> None:
        inputs, consent, source_role = self._reopen
        try:
            hold = transport.reopen_target(self.hold.target, node, inputs, consent=consent,
                                           source_role=source_role)
        except ValueError as e:
            raise Failed(f"the TARGET came back as {node} (it was /dev/{old}), but {e}: "
                         "nothing more is written to it") from None
        self.hold.close()
        self.hold = hold

    def read_failed(self, pos: int, n: int, error: OSError) -> int | None:
        """For the read-back's reader: the descriptor to read again from after an outage,
        None for a media error."""
        return self.fd if self.outage(error, pos) else None

    @property
    def fd(self) -> int:
        return self.hold.fd if self.hold is not None else self._fd

    @staticmethod
    def _zero(fd: int, start: int, length: int) -> None:
        buf = blockdev.AlignedBuffer(MiB)
        try:
            pos, end = start, start + length
            while pos < end:
                n = min(MiB, end - pos)
                blockdev.write_exact(fd, buf.view[:n], pos)
                pos += n
        finally:
            buf.close()

    def wipe_ends(self, image_end: int | None = None) -> None:
        """Zero the first and the last MiB (and the MiB before ``image_end``), then fsync;
        after an outage meanwhile (waited out: :meth:`retry`), all of it again."""
        mib = min(HEAD, self.size)
        spots = {0, self.size - mib}
        if image_end and image_end > mib:
            end = min(self.size, -(-image_end // self.sector) * self.sector)
            spots.add(end - mib)

        def wipe(fd: int) -> None:
            for start in sorted(spots):
                self._zero(fd, start, mib)
            os.fsync(fd)
        self.retry(wipe, 0)
        self.head_written = False

    def write_head(self, head: bytes) -> None:
        """Write the image's first MiB (padded to a sector), fsync, read it back and compare;
        an outage meanwhile is waited out (:meth:`retry`: the write and fsync, or the read,
        done again)."""
        n = -(-len(head) // self.sector) * self.sector
        buf = blockdev.AlignedBuffer(max(n, self.sector))
        try:
            buf.view[:len(head)] = head
            buf.zero(len(head), n - len(head))

            def write(fd: int) -> None:  # after an outage, both again: the flush may not
                blockdev.write_exact(fd, buf.view[:n], 0)  # have reached the disk
                os.fsync(fd)
            self.retry(write, 0)
            self.head_written = True
            buf.zero(0, n)
            self.retry(lambda fd: blockdev.read_exact(fd, buf.view[:n], 0), 0)
            if buf.mem[:len(head)] != head:
                raise Failed("the first MiB read back from the target differs from the "
                             "image's", "mismatch")
        finally:
            buf.close()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.close()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
