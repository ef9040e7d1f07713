"""Storage outages during a copy (:mod:`toolkit.disks.transport`): each end's path
watched, an I/O error while it is down waited out and done again, an end that came back
under another name checked and reopened (one outage at a time per end: the writer and the
read-back behind it may meet the same one), and the verification's reads waited out too.
A mixin of :class:`toolkit.copy.engine._Copier`."""

from __future__ import annotations

import contextlib
import os
import threading

from toolkit.blockio import blockdev
from toolkit.copy import fingerprint
from toolkit.copy.plan import source_input
from toolkit.disks import gate, transport


class OutageGuards:
    """The copy's I/O with an outage waited out (state: the copier's)."""

    # storage outages (toolkit.disks.transport) ---------------------------------------
    def watch_paths(self) -> None:
        """A guard on each end's path: an I/O error while it is down is waited out."""
        for role, end in (("SOURCE", self.plan.source), ("TARGET", self.plan.target)):
            self.guards[role] = transport.Guard(
                transport.Lun.of(role, end.node, self.opts.sys_root), self.opts.outage_limit,
                report=self.reporter.waiting, cancel=self.cancel)

    def outage(self, role: str, pos: int, error: OSError) -> bool:
        """After an I/O error at byte ``pos`` of ``role``'s end: False when its path is up
        (a media error: handled as such); else wait until the path is back, reopen a
        device that came back under another name, and True: do the same I/O again.
        Raises :class:`transport.Outage` when the limit passes (or on cancel)."""
        guard = self.guards.get(role)
        if guard is None or not guard.outage(error):
            return False
        # one at a time per end (the writer and the read-back may meet the same outage):
        # the second finds the path up and the device already reopened
        with self.outage_locks.setdefault(role, threading.Lock()):
            old = guard.lun.name
            try:
                name = guard.wait(pos)
                if name != old:
                    self.reopen(role, guard.node(), old)
            except transport.Outage:
                if role == "TARGET":
                    self.target_lost = True
                raise
        return True

    def reopen(self, role: str, node: str, old: str) -> None:
        """The end that came back as ``node`` (a re-login: a new device name), checked to
        be the same disk, opened again: the SOURCE read-only, checked by size and the
        fingerprint taken when the copy began; the TARGET through the write gate, by its
        serial/WWN, target and LUN."""
        guard = self.guards[role]

        def lost(why: str) -> transport.Outage:
            return transport.Outage(f"the {role} came back as {node} (it was /dev/{old}), "
                                    f"but {why}: nothing more is done with it", guard.lun, 0)
        if role == "SOURCE":
            try:
                fd = blockdev.open_device(node)
            except OSError as e:
                raise lost(f"it cannot be opened ({e.strerror})") from None
            try:
                why = None
                if blockdev.device_size(fd) != self.size:
                    why = f"its size is {blockdev.device_size(fd)} bytes, not {self.size}"
                elif self.fp is not None:
                    now = fingerprint.take(fd, self.size, self.sector)
                    why = self.fp.difference(now)
                    why = why and f"it is not the disk the copy began with: {why}"
                if why:
                    raise lost(why)
            except BaseException:
                os.close(fd)
                raise
            was, self.src_fd = self.src_fd, fd
            os.close(was)
            with contextlib.suppress(Exception):  # a SOURCE LUN is read-only in the kernel
                from toolkit.iscsi import manager
                manager.reapply_read_only()
        else:
            self.hold = self._reopen_target(node, lost)
            self.dst_fd = self.hold.fd
        self.warnings.append(f"the {role} came back under another name after a re-login: "
                             f"{node} (it was /dev/{old}); checked to be the same disk")

    def _reopen_target(self, node: str, lost) -> gate.WriteHold:
        try:
            hold = transport.reopen_target(
                self.plan.target, node, [source_input(self.plan.source, self.src_fd)],
                consent=self.consent, source_role=self.plan.source_role)
        except ValueError as e:
            raise lost(str(e)) from None
        if self.read_back is not None:  # before the old descriptor goes
            self.read_back.retarget(hold.fd)
        if self.hold is not None:
            self.hold.close()
        return hold

    def read_failed(self, pos: int, n: int, error: OSError) -> int | None:
        """The reader's question about a failed read (in its thread): the descriptor to
        read the chunk again from, after an outage waited out; None: a media error."""
        return self.src_fd if self.outage("SOURCE", pos, error) else None

    def read_again(self, role: str):
        """The verification's question about a failed read of ``role``'s end (in its
        reader's thread): the descriptor to read the chunk again from once an outage is
        waited out (the end reopened when it came back under another name); None: a media
        error. An outage past the limit raises :class:`transport.Outage`, which ends the
        verification (not a mismatch)."""
        def ask(pos: int, n: int, error: OSError) -> int | None:
            if not self.outage(role, pos, error):
                return None
            return self.src_fd if role == "SOURCE" else self.dst_fd
        return ask

    def read_piece(self, view: memoryview, pos: int) -> bool:
        """Read ``view`` at ``pos`` (an outage waited out and read again); False: a read
        error with the path up."""
        while True:
            try:
                blockdev.read_exact(self.src_fd, view, pos)
                return True
            except OSError as e:
                if not self.outage("SOURCE", pos, e):
                    return False

    def write_piece(self, view: memoryview, pos: int) -> None:
        """Write ``view`` at ``pos``; after an outage, again (to the reopened device)."""
        while True:
            try:
                blockdev.write_exact(self.dst_fd, view, pos)
                return
            except OSError as e:
                if not self.outage("TARGET", pos, e):
                    raise

    def punch_piece(self, pos: int, n: int) -> None:
        """Free ``n`` bytes at ``pos`` so that they read back zeros
        (:func:`toolkit.blockio.blockdev.punch_zeros`); after an outage, again."""
        while True:
            try:
                blockdev.punch_zeros(self.dst_fd, pos, n)
                return
            except OSError as e:
                if not self.outage("TARGET", pos, e):
                    raise

    def sync_target(self) -> None:
        while True:
            try:
                os.fdatasync(self.dst_fd)
                return
            except OSError as e:
                if not self.outage("TARGET", self.map.current_pos, e):
                    raise

    def gave_up(self, e: transport.Outage) -> None:
        """The outage outlasted the limit: stop, resumable (cancelled: just stop)."""
        if not e.cancelled:
            self.failure = (f"{e}; nothing was recorded as unreadable for it (what was not "
                            "read or written then is still to copy)")
