"""Outages during the verification, the restore's first and last MiB, the start-up
fingerprint, and the report server's progress events (toolkit/blockio/verify.py,
toolkit/copy/verify.py, toolkit/restore/write.py, toolkit/copy/fingerprint.py,
toolkit/unattended/reporter.py).

The fake sysfs is test_outage_unit's (captures of a real guest replayed under tmp_path,
SOURCE sda and TARGET sdb on two tgtd at 10.0.2.2): a read (or write) of a disk fails
with EIO while the tree says its path is down, as the kernel's do.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
from conftest import MiB
from test_outage_unit import CHUNK, DST_IQN, SIZE, SRC_IQN, Lab, Sysfs, _device_state, _endpoint

from toolkit.blockio import blockdev
from toolkit.blockio.mapfile import FINISHED, Mapfile
from toolkit.disks import transport
from toolkit.jobs.progress import Progress, Reporter

pytestmark = pytest.mark.unit

LOST = "path to 10.0.2.2 lost"


@pytest.fixture
def sysfs(tmp_path) -> Sysfs:
    s = Sysfs(tmp_path)
    s.show("up")
    return s


def _later(seconds: float, fn) -> threading.Timer:
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()
    return t


def _target_down(tree: str) -> None:
    _device_state(tree, "sdb", "transport-offline", "FAILED")


class VerifyLab(Lab):
    """test_outage_unit's copier, whose TARGET reads (the verification's read-back) fail
    too while sdb is down; ``outage(role, pos, then)``: when the verification first reads
    ``role`` at ``pos`` or after, that path goes down; ``then`` seconds later it is back
    (None: it stays down)."""

    def __init__(self, tmp, sysfs, monkeypatch, **opts):
        super().__init__(tmp, sysfs, monkeypatch, **opts)
        lab_read = blockdev.read_exact
        self.fired: list[int] = []
        self.trigger = None

        def read_exact(fd, view, offset):
            if self.trigger:
                self.trigger(fd, offset)
            if fd == self.c.dst_fd and sysfs.state(self.c.guards["TARGET"].lun.name) != "up":
                raise OSError(errno.EIO, "Input/output error")
            return lab_read(fd, view, offset)
        monkeypatch.setattr(blockdev, "read_exact", read_exact)

    def outage(self, role: str, pos: int, then: float | None) -> None:
        def trigger(fd, offset):
            mine = fd == self.c.dst_fd if role == "TARGET" else fd == self.c.src_fd
            if not self.verifying() or not mine or offset < pos or self.fired:
                return
            self.fired.append(offset)
            if role == "TARGET":
                self.sysfs.show("up", _target_down)
            else:
                self.sysfs.show("offline")
            if then is not None:
                _later(then, lambda: self.sysfs.show("back"))
        self.trigger = trigger

    def verifying(self) -> bool:
        return any(p.phase == "verify" for p in self.events)

    def phases(self) -> list[str]:
        out: list[str] = []
        for p in self.events:
            if not out or out[-1] != p.phase:
                out.append(p.phase)
        return out

    def already_copied(self) -> None:
        """The target holds the copy and the map says so: a resumed run only verifies
        (source and target side by side: compare_devices)."""
        self.dst.write_bytes(self.data)
        self.c.map.set(0, SIZE, FINISHED)


# --- the copy's verification --------------------------------------------------------------

def test_a_target_outage_during_the_read_back_is_waited_out(tmp_path, sysfs, monkeypatch):
    lab = VerifyLab(tmp_path, sysfs, monkeypatch)
    lab.outage("TARGET", 2 * MiB, 0.8)
    result = lab.run()
    assert lab.fired, "the verification never read the target"
    assert result.status == "ok", result.message
    assert result.exit_code == 0
    assert result.verify.method == "read back target" and result.verify.match
    notes = lab.waiting()
    assert notes and notes[0].startswith(f"TARGET {LOST}, waiting 0:00 (gives up at 10:00)")
    assert lab.phases()[-3:] == ["verify", "waiting", "verify"]  # paused, then went on
    assert any(w.startswith(f"TARGET {LOST} at byte {2 * MiB}") and "waited, back" in w
               for w in result.warnings), result.warnings


def test_a_source_outage_while_comparing_is_waited_out(tmp_path, sysfs, monkeypatch):
    lab = VerifyLab(tmp_path, sysfs, monkeypatch)
    lab.already_copied()
    lab.outage("SOURCE", MiB, 0.8)
    result = lab.run(resumed=True)
    assert lab.fired
    assert result.status == "ok", result.message
    assert result.verify.method == "compared with source" and result.verify.match
    assert any(n.startswith(f"SOURCE {LOST}, waiting") for n in lab.waiting())
    assert lab.phases()[-3:] == ["verify", "waiting", "verify"]


def test_a_verification_outage_past_the_limit_fails_and_is_no_mismatch(tmp_path, sysfs,
                                                                       monkeypatch):
    lab = VerifyLab(tmp_path, sysfs, monkeypatch, outage_limit=1.0)
    lab.outage("TARGET", MiB, None)
    t0 = time.monotonic()
    result = lab.run()
    assert time.monotonic() - t0 < 10
    assert result.status == "failed" and result.exit_code == 1, result.message
    v = result.verify
    assert v.error and not v.match and v.differing_regions == 0 and not v.first_difference
    assert "VERIFICATION FAILED" not in result.message and "mismatch" not in result.message
    assert result.message.startswith(
        f"verification did not finish: TARGET {LOST}: not back after 0:01 (the outage "
        "limit, 0:01), gave up"), result.message
    assert "Outage" not in result.message  # words, not a class name
    assert "--resume" in result.message  # what to do: the copy itself is done
    assert "verified" not in Mapfile.load(str(tmp_path / "copy.map")).meta


def test_a_compare_outage_past_the_limit_fails(tmp_path, sysfs, monkeypatch):
    lab = VerifyLab(tmp_path, sysfs, monkeypatch, outage_limit=1.0)
    lab.already_copied()
    lab.outage("SOURCE", 0, None)
    result = lab.run(resumed=True)
    assert result.status == "failed" and result.exit_code == 1
    assert f"SOURCE {LOST}: not back after 0:01" in result.message
    assert result.verify.differing_regions == 0


def test_a_media_error_in_the_read_back_is_still_a_read_error(tmp_path, sysfs, monkeypatch):
    lab = VerifyLab(tmp_path, sysfs, monkeypatch)
    real = blockdev.read_exact

    def read_exact(fd, view, offset):  # the path stays up: the medium fails
        if fd == lab.c.dst_fd and offset <= MiB < offset + len(view):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    result = lab.run()
    assert result.status == "failed" and "cannot read the target" in result.message
    assert not lab.waiting()


# --- rtk verify ------------------------------------------------------------------------------

def _verify_lab(tmp_path, sysfs, monkeypatch):
    from toolkit.copy import verify as verifymod
    data = os.urandom(SIZE)
    files = {"/dev/sda": tmp_path / "a.img", "/dev/sdb": tmp_path / "b.img"}
    for f in files.values():
        f.write_bytes(data)
    ends = {"/dev/sda": _endpoint("sda", "RTK-SRC-0001", SRC_IQN, SIZE),
            "/dev/sdb": _endpoint("sdb", "RTK-DST-0002", DST_IQN, SIZE)}
    fds: dict[int, str] = {}

    def open_device(path, **kw):
        fd = os.open(files[path], os.O_RDONLY)
        fds[fd] = os.path.basename(path)
        return fd
    monkeypatch.setattr(verifymod, "resolve", lambda path, disks: ends[path])
    monkeypatch.setattr(blockdev, "open_device", open_device)
    real, fired = blockdev.read_exact, []

    def read_exact(fd, view, offset):
        if fds.get(fd) == "sdb" and offset >= MiB and not fired:
            fired.append(offset)
            sysfs.show("up", _target_down)
            _later(0.8, lambda: sysfs.show("back"))
        if sysfs.state(fds.get(fd, "-")) != "up":
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    return verifymod, fired


def test_rtk_verify_waits_out_an_outage(tmp_path, sysfs, monkeypatch):
    verifymod, fired = _verify_lab(tmp_path, sysfs, monkeypatch)
    seen: list[Progress] = []
    result = verifymod.verify_disks("/dev/sda", "/dev/sdb", disks=[], progress=seen.append,
                                    chunk_size=CHUNK, write_report=False,
                                    sys_root=sysfs.root)
    assert fired
    assert result.status == "ok" and result.verify.match, result.message
    notes = [p.note for p in seen if p.phase == "waiting"]
    assert notes and notes[0].startswith(f"TARGET {LOST}, waiting")
    assert any("waited, back" in w for w in result.warnings), result.warnings


def test_rtk_verify_gives_up_at_its_limit(tmp_path, sysfs, monkeypatch):
    verifymod, fired = _verify_lab(tmp_path, sysfs, monkeypatch)
    monkeypatch.setattr(sysfs, "show", lambda state, edit=None: Sysfs.show(
        sysfs, "up", _target_down))  # down, and never back
    result = verifymod.verify_disks("/dev/sda", "/dev/sdb", disks=[], chunk_size=CHUNK,
                                    write_report=False, sys_root=sysfs.root,
                                    outage_limit=1.0)
    assert result.status == "failed" and result.exit_code == 1
    assert f"TARGET {LOST}: not back after 0:01" in result.message, result.message
    assert result.verify.differing_regions == 0


# --- restore: the first and the last MiB -------------------------------------------------

def _restore_target(tmp_path, sysfs, monkeypatch, limit=10.0):
    from toolkit.restore.write import Target
    disk_file = tmp_path / "disk.img"
    disk_file.write_bytes(bytes(8 * MiB))
    seen: list[Progress] = []
    reporter = Reporter(seen.append, 0)
    reporter.start("write", 8 * MiB)
    target = Target(str(disk_file))
    target.guard = transport.Guard(transport.Lun.of("TARGET", "sdb", sysfs.root), limit,
                                   report=reporter.waiting, cancel=threading.Event(),
                                   poll=0.1)
    real_w, real_r, fired = blockdev.write_exact, blockdev.read_exact, []

    def down_once(offset):
        if not fired:
            fired.append(offset)
            sysfs.show("up", _target_down)
            if limit > 1:
                _later(0.8, lambda: sysfs.show("back"))

    def write_exact(fd, view, offset):
        if offset == 0:
            down_once(offset)
        if sysfs.state("sdb") != "up":
            raise OSError(errno.EIO, "Input/output error")
        return real_w(fd, view, offset)

    def read_exact(fd, view, offset):
        if sysfs.state("sdb") != "up":
            raise OSError(errno.EIO, "Input/output error")
        return real_r(fd, view, offset)
    monkeypatch.setattr(blockdev, "write_exact", write_exact)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    return target, disk_file, seen, fired


def test_write_head_waits_out_an_outage(tmp_path, sysfs, monkeypatch):
    target, disk_file, seen, fired = _restore_target(tmp_path, sysfs, monkeypatch)
    head = os.urandom(MiB)
    with target:
        target.write_head(head)
    assert fired and target.head_written
    assert disk_file.read_bytes()[:MiB] == head
    notes = [p.note for p in seen if p.phase == "waiting"]
    assert notes and notes[0].startswith(f"TARGET {LOST}, waiting 0:00 (gives up at 0:10)")
    assert seen[-1].phase == "write"
    assert [e.resumed for e in target.guard.events] == [True]


def test_wipe_ends_waits_out_an_outage(tmp_path, sysfs, monkeypatch):
    target, disk_file, seen, fired = _restore_target(tmp_path, sysfs, monkeypatch)
    with open(disk_file, "r+b") as f:
        f.write(b"\xff" * MiB)
        f.seek(7 * MiB)
        f.write(b"\xff" * MiB)
    with target:
        target.wipe_ends()
    data = disk_file.read_bytes()
    assert fired and data[:MiB] == bytes(MiB) and data[-MiB:] == bytes(MiB)
    assert any(p.phase == "waiting" for p in seen)


def test_write_head_past_the_limit_fails_and_does_not_wait_again(tmp_path, sysfs,
                                                                 monkeypatch):
    from toolkit.restore.write import Failed
    target, _file, _seen, _fired = _restore_target(tmp_path, sysfs, monkeypatch, limit=0.5)
    with target:
        with pytest.raises(Failed, match=rf"TARGET {LOST}: not back after 0:0\d "
                                         r"\(the outage limit, 0:00\), gave up; the "
                                         "restore stopped"):
            target.write_head(os.urandom(MiB))
        t0 = time.monotonic()  # the clean-up's wipe: one try, no second wait
        with pytest.raises(OSError):
            target.wipe_ends()
        assert time.monotonic() - t0 < 0.4


def test_restore_outage_limit_option_and_plan_field(monkeypatch, tmp_path):
    import argparse

    from toolkit import restore
    from toolkit.cli import restore as cli_restore
    parser = argparse.ArgumentParser()
    cli_restore.register(parser.add_subparsers())
    args = parser.parse_args(["restore", "img", "/dev/sdb", "--outage-limit", "90s"])
    assert args.outage_limit == 90
    assert parser.parse_args(["restore", "i", "t"]).outage_limit == transport.DEFAULT_LIMIT
    assert restore.RestoreOptions().outage_limit == transport.DEFAULT_LIMIT
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "i", "t", "--outage-limit", "soon"])
    # the unattended plan's outage_limit reaches the restore's options
    from conftest import disk

    from toolkit.unattended import Console, RunReporter
    from toolkit.unattended.job import Job, Stop
    from toolkit.unattended.plan import Image, Plan
    plan = Plan(mode="restore", image=Image("url", "http://10.0.0.5/a.img"), outage_limit=42)
    job = Job(plan, RunReporter(None), Console([]), dry_run=False, medium=str(tmp_path),
              hooks={})
    job.disk = disk("sdb", "RTK-DST-0002")
    got = []

    def plan_restore(location, target, options, **kw):
        got.append(options)
        raise restore.Refused("stop here")
    monkeypatch.setattr(restore, "plan_restore", plan_restore)
    with pytest.raises(Stop):
        job.check_restore([])
    assert got[0].outage_limit == 42


def test_the_restore_guards_its_target_with_the_limit(monkeypatch, rtk_dirs, tmp_path):
    from toolkit import restore
    from toolkit.restore import engine
    from toolkit.restore.write import Failed, Target
    disk_file = tmp_path / "disk.img"
    disk_file.write_bytes(bytes(4 * MiB))
    seen = []

    def open_target(cls, *a, **kw):
        return Target(str(disk_file))

    def watch(self, reporter, cancel):
        seen.append(("watch", self.outage_limit))

    def stream(plan, target, *a):
        seen.append(("stream", target.outage_limit))
        raise Failed("stopped by the test")
    monkeypatch.setattr(Target, "open", classmethod(open_target))
    monkeypatch.setattr(Target, "watch", watch)
    monkeypatch.setattr(engine, "_stream", stream)
    info = restore.ImageInfo("/x.img", False, None, "raw", MiB, MiB, 512, None)
    plan = restore.RestorePlan(info, _endpoint("sdb", "RTK-DST-0002", DST_IQN, 4 * MiB),
                               restore.RestoreOptions(outage_limit=42))
    res = restore.restore(plan)
    assert res.status == "failed" and seen == [("watch", 42), ("stream", 42)]


# --- the start-up fingerprint and the allocation lookup -----------------------------------

def test_a_fingerprint_while_the_source_path_is_down_says_so(tmp_path, sysfs, monkeypatch):
    from toolkit.copy import fingerprint
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(SIZE))
    sysfs.show("offline")
    monkeypatch.setattr(fingerprint, "_device_name", lambda fd, sys_root: "sda")
    monkeypatch.setattr(fingerprint, "SYS_ROOT", sysfs.root)
    real = blockdev.read_exact

    def read_exact(fd, view, offset):
        if sysfs.state("sda") != "up":
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            fingerprint.take(fd, SIZE)
        text = str(e.value)
        assert text.startswith("SOURCE path to 10.0.2.2 is down: "), text
        assert "sda" in text and "fingerprint" in text and "Errno" not in text
        from toolkit.cli.common import os_error
        assert os_error(e.value) == text  # the CLI prints it as it is
        sysfs.show("back")
        fp = fingerprint.take(fd, SIZE)  # the path up: every region read
        assert all(h != fingerprint.UNREADABLE for _p, h in fp.samples)
    finally:
        os.close(fd)


def test_a_fingerprint_media_error_is_still_an_unreadable_region(tmp_path, monkeypatch):
    from toolkit.copy import fingerprint
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(SIZE))
    real = blockdev.read_exact

    def read_exact(fd, view, offset):
        if offset == 0:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    fd = os.open(src, os.O_RDONLY)
    try:
        fp = fingerprint.take(fd, SIZE)  # a regular file: no path to be down
    finally:
        os.close(fd)
    assert dict(fp.samples)[0] == fingerprint.UNREADABLE


def test_the_allocation_lookup_during_an_outage_is_no_map_not_an_error(monkeypatch):
    from toolkit.blockio import allocation
    monkeypatch.setattr(allocation, "whole_disk", lambda device: ("sda", 0))
    monkeypatch.setattr(allocation, "loop_backing", lambda device: None)
    monkeypatch.setattr(allocation, "thin_scsi", lambda disk: True)

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(allocation.os, "fsync", fsync)
    assert allocation.unallocated("/dev/sda", 3, SIZE, 512) == (None, None)


# --- the report server -----------------------------------------------------------------------

def test_the_progress_event_carries_the_note():
    from toolkit.unattended import RunReporter
    rep = RunReporter(None, interval=60)
    rep.progress(Progress("write", MiB, SIZE, 1.0, 1.0, 3.0))
    note = "TARGET path to 10.0.2.2 lost, waiting 0:42 (gives up at 10:00)"
    rep.progress(Progress("waiting", MiB, SIZE, 0.0, 1.0, None, note=note))
    assert rep.posted[-1]["phase"] == "waiting"
    assert rep.posted[-1]["progress"]["note"] == note
    assert rep.posted[0]["progress"]["note"] is None  # no wait: null
