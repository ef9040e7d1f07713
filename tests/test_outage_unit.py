"""Storage outages are waited out, not recorded as bad sectors (toolkit/disks/transport.py).

The path's state comes from sysfs trees captured in the VM lab
(tests/fixtures/sysfs-iscsi/*.json, by tests/vmlab/capture_sysfs.py: a SOURCE LUN on
one tgtd as sda, a TARGET LUN on another as sdb, a virtio disk vda), replayed under
tmp_path. :class:`Sysfs` switches between them while the copy engine runs (``up``;
``failed``: the SOURCE's tgtd stopped, the session in recovery, sda blocked; ``offline``:
past the recovery timeout, sda transport-offline; ``back``; ``gone``: logged out;
``relogin``: the LUN back as sdc), and the engine's reads (or writes) fail while the
tree says the path is down.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, MiB, disk
from vmlab.sysfs_dump import load, replay

from toolkit.blockio import blockdev
from toolkit.blockio.mapfile import BAD, FINISHED, NON_SCRAPED, NON_TRIED, NON_TRIMMED, Mapfile
from toolkit.copy import engine
from toolkit.copy.plan import CopyPlan
from toolkit.disks import transport
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.disks.inventory import IscsiLocation
from toolkit.jobs.progress import Progress, Reporter

CAPTURES = FIXTURES / "sysfs-iscsi"
SRC_IQN = "iqn.2026-12.lab.rtk:capture-src"
DST_IQN = "iqn.2026-12.lab.rtk:capture-dst"
SIZE = 4 * MiB
CHUNK = 256 * 1024


class Sysfs:
    """``root/sys``: a link to one replayed capture at a time, switched atomically."""

    def __init__(self, tmp: Path):
        self.tmp, self.root = tmp, str(tmp / "sys")
        self.trees: dict[str, str] = {}

    def tree(self, state: str) -> str:
        if state not in self.trees:
            self.trees[state] = replay(load(str(CAPTURES / f"{state}.json")),
                                       str(self.tmp / "trees" / state))
        return self.trees[state]

    def show(self, state: str, edit=None) -> None:
        """Make ``root`` the capture ``state`` (``edit(tree)`` changes a copy of it)."""
        tree = self.tree(state)
        if edit is not None:
            name = f"{state}-{len(self.trees)}"
            tree = self.trees[name] = replay(load(str(CAPTURES / f"{state}.json")),
                                             str(self.tmp / "trees" / name))
            edit(tree)
        tmp = self.root + ".new"
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(tree, tmp)
        os.replace(tmp, self.root)

    def state(self, name: str) -> str:
        return transport.path_state(name, self.root)


def _device_state(tree: str, name: str, state: str, session: str | None = None) -> None:
    """Set disk ``name``'s SCSI device state (and its session's) in a replayed tree."""
    d = os.path.realpath(os.path.join(tree, "block", name))
    with open(os.path.join(d, "device", "state"), "w") as f:
        f.write(state + "\n")
    if session:
        sess = transport.session_of(name, tree)
        with open(os.path.join(tree, "class", "iscsi_session", sess, "state"), "w") as f:
            f.write(session + "\n")


@pytest.fixture
def sysfs(tmp_path) -> Sysfs:
    s = Sysfs(tmp_path)
    s.show("up")
    return s


# --- path_state on the captured trees ----------------------------------------------------

@pytest.mark.parametrize("state, sda, sdb", [
    ("up", "up", "up"), ("failed", "down", "up"), ("offline", "down", "up"),
    ("back", "up", "up"), ("gone", "gone", "up"), ("relogin", "gone", "up")])
def test_path_state_of_the_captured_trees(sysfs, state, sda, sdb):
    sysfs.show(state)
    assert (sysfs.state("sda"), sysfs.state("/dev/sdb"), sysfs.state("vda")) == (sda, sdb, "up")


def test_the_captures_say_what_the_kernel_said():
    """The states behind path_state, as the guest's kernel wrote them."""
    def files(state):
        m = load(str(CAPTURES / f"{state}.json"))["files"]
        sess = next(v for k, v in m.items() if k.endswith("/session1/state"))
        dev = next(v for k, v in m.items() if k.endswith("/2:0:0:1/state"))
        return sess.strip(), dev.strip()
    assert files("up") == ("LOGGED_IN", "running")
    assert files("failed") == ("FAILED", "blocked")
    assert files("offline") == ("FREE", "transport-offline")  # past recovery_tmo
    assert files("back") == ("LOGGED_IN", "running")


def test_a_partition_and_a_missing_disk(sysfs, tmp_path):
    tree = sysfs.tree("up")
    # a partition of sda, as the kernel lays it out (sda/sda1 with its partition number)
    d = os.path.realpath(os.path.join(tree, "block", "sda"))
    os.makedirs(os.path.join(d, "sda1"))
    Path(d, "sda1", "partition").write_text("1\n")
    os.symlink(os.path.relpath(os.path.join(d, "sda1"), os.path.join(tree, "class", "block")),
               os.path.join(tree, "class", "block", "sda1"))
    assert transport.path_state("/dev/sda1", sysfs.root) == "up"
    lun = transport.Lun.of("SOURCE", "/dev/sda1", sysfs.root)
    assert (lun.name, lun.partition, lun.node()) == ("sda", 1, "/dev/sda1")
    sysfs.show("offline", lambda t: None)
    assert transport.path_state("/dev/sda1", sysfs.root) in ("down", "gone")
    assert transport.path_state("sdz", sysfs.root) == "gone"


def test_a_lun_is_known_by_its_identity_not_its_name(sysfs):
    lun = transport.Lun.of("SOURCE", "/dev/sda", sysfs.root)
    assert (lun.target, lun.lun, lun.address, lun.size) == (SRC_IQN, 1, "10.0.2.2", 16 * MiB)
    assert lun.wwid and lun.wwid.startswith("naa.")
    assert lun.find() == "sda"
    sysfs.show("gone")
    assert lun.find() is None
    sysfs.show("relogin")  # logged in again while sda was held open: a new name
    new = lun.find()
    assert new not in (None, "sda", "sdb")
    assert transport.path_state(new, sysfs.root) == "up"
    # the TARGET (another target, same size, same tgtd LUN number) is never taken for it
    dst = transport.Lun.of("TARGET", "sdb", sysfs.root)
    assert dst.target == DST_IQN and dst.find() == "sdb" and not lun.same("sdb")


def test_the_waiting_text():
    lun = transport.Lun("SOURCE", "sda", target=SRC_IQN, lun=1, address="10.0.2.2")
    assert lun.waiting_text(42, 600) == \
        "SOURCE path to 10.0.2.2 lost, waiting 0:42 (gives up at 10:00)"
    assert transport.Lun("TARGET", "vdb").waiting_text(5, 30) == \
        "TARGET vdb lost, waiting 0:05 (gives up at 0:30)"
    p = Progress("waiting", MiB, 4 * MiB, 0.0, 0.0, None, note=lun.waiting_text(42, 600))
    assert p.line().startswith("SOURCE path to 10.0.2.2 lost, waiting 0:42 (gives up at 10:00)")


# --- wait_for_path ---------------------------------------------------------------------------

def _later(seconds: float, fn) -> threading.Timer:
    t = threading.Timer(seconds, fn)
    t.start()
    return t


def test_wait_for_path_reports_and_returns_when_the_session_is_back(sysfs):
    lun = transport.Lun.of("SOURCE", "sda", sysfs.root)
    sysfs.show("offline")
    said: list[str] = []
    t0 = time.monotonic()
    _later(0.6, lambda: sysfs.show("back"))
    assert transport.wait_for_path(lun, 10, said.append, poll=0.1) == "sda"
    assert 0.5 < time.monotonic() - t0 < 3
    assert said and all(s.startswith("SOURCE path to 10.0.2.2 lost, waiting 0:0") and
                        s.endswith("(gives up at 0:10)") for s in said)


def test_wait_for_path_follows_a_relogin_to_the_new_name(sysfs):
    lun = transport.Lun.of("SOURCE", "sda", sysfs.root)
    sysfs.show("gone")
    said: list[str] = []
    _later(0.5, lambda: sysfs.show("relogin"))
    name = transport.wait_for_path(lun, 10, said.append, poll=0.1)
    assert name != "sda" and lun.same(name)
    assert "(sda is gone)" in said[0]


def test_wait_for_path_gives_up_at_the_limit_and_on_cancel(sysfs):
    lun = transport.Lun.of("SOURCE", "sda", sysfs.root)
    sysfs.show("failed")
    t0 = time.monotonic()
    with pytest.raises(transport.Outage, match=r"SOURCE path to 10\.0\.2\.2 lost: not back "
                                               r"after 0:01 \(the outage limit, 0:01\)"):
        transport.wait_for_path(lun, 1.0, poll=0.1)
    assert 0.9 < time.monotonic() - t0 < 2
    cancel = threading.Event()
    _later(0.3, cancel.set)
    with pytest.raises(transport.Outage) as e:
        transport.wait_for_path(lun, 60, cancel=cancel, poll=0.1)
    assert e.value.cancelled


# --- the copy engine ---------------------------------------------------------------------------

def _endpoint(name: str, serial: str, iqn: str, size: int):
    d = disk(name, serial, size=size, transport="iscsi",
             iscsi=IscsiLocation(iqn, "10.0.2.2:3260", 1, "session1"))
    return endpoint_from_disk(d)


class Lab:
    """A copier over two regular files whose paths are sda (SOURCE) and sdb (TARGET) of
    the fake sysfs: reads of the SOURCE (writes of the TARGET) fail with EIO while that
    disk is not up there, as the kernel's do."""

    def __init__(self, tmp: Path, sysfs: Sysfs, monkeypatch, **opts):
        self.sysfs = sysfs
        self.src, self.dst = tmp / "src.img", tmp / "dst.img"
        self.data = os.urandom(SIZE)
        self.src.write_bytes(self.data)
        self.dst.write_bytes(bytes(SIZE))
        plan = CopyPlan(_endpoint("sda", "RTK-SRC-0001", SRC_IQN, SIZE),
                        _endpoint("sdb", "RTK-DST-0002", DST_IQN, SIZE))
        self.events: list[Progress] = []
        self.opts = engine.CopyOptions(mapfile=str(tmp / "copy.map"), chunk_size=CHUNK,
                                       write_report=False, sys_root=sysfs.root,
                                       progress_interval=0.0, **opts)
        self.c = engine._Copier(plan, self.opts, self.events.append, None)
        self.c.src_fd = os.open(self.src, os.O_RDONLY)
        self.c.dst_fd = os.open(self.dst, os.O_RDWR)
        self.c.map = Mapfile(SIZE)
        self.c.watch_paths()
        for g in self.c.guards.values():
            g.poll = 0.1
        self.read_calls: list[tuple[int, int]] = []
        real_read, real_write = blockdev.read_exact, blockdev.write_exact
        self.on_read = None  # called with the position before each read

        def read_exact(fd, view, offset):
            self.read_calls.append((offset, len(view)))
            if self.on_read:
                self.on_read(offset)
            if fd != self.c.dst_fd and sysfs.state(self.c.guards["SOURCE"].lun.name) != "up":
                raise OSError(errno.EIO, "Input/output error", f"offset {offset}")
            return real_read(fd, view, offset)

        def write_exact(fd, view, offset):
            if fd == self.c.dst_fd and sysfs.state(self.c.guards["TARGET"].lun.name) != "up":
                raise OSError(errno.EIO, "Input/output error")
            return real_write(fd, view, offset)
        monkeypatch.setattr(blockdev, "read_exact", read_exact)
        monkeypatch.setattr(blockdev, "write_exact", write_exact)

    def run(self, resumed: bool = False):
        result = self.c._run(time.time(), resumed=resumed)
        os.close(self.c.src_fd)
        os.close(self.c.dst_fd)
        return result

    def outage_at(self, pos: int, state: str, then: str | None, after: float, edit=None):
        """When the reader first reaches ``pos``: show ``state``; ``after`` seconds later
        ``then`` (None: stays)."""
        fired = []

        def hook(offset):
            if offset >= pos and not fired:
                fired.append(offset)
                self.sysfs.show(state, edit)
                if then:
                    _later(after, lambda: self.sysfs.show(then))
        self.on_read = hook

    def waiting(self) -> list[str]:
        return [p.note for p in self.events if p.phase == "waiting"]


def test_a_source_outage_pauses_the_copy_and_it_resumes_identical(tmp_path, sysfs, monkeypatch):
    lab = Lab(tmp_path, sysfs, monkeypatch)
    lab.outage_at(MiB, "offline", "back", 1.0)
    result = lab.run()
    assert result.status == "ok", result.message
    assert result.read_errors == 0 and not result.unreadable
    assert lab.dst.read_bytes() == lab.data
    assert lab.c.map.bytes_with(FINISHED) == SIZE
    said = lab.waiting()
    assert said and said[0] == "SOURCE path to 10.0.2.2 lost, waiting 0:00 (gives up at 10:00)"
    assert lab.events[-1].phase != "waiting"  # the progress went back to the copy
    assert any("SOURCE path to 10.0.2.2 lost at byte 1048576" in w and "back" in w
               for w in result.warnings), result.warnings
    # the hash followed the stream through the outage: the target was read back
    assert result.verify.method == "read back target" and result.verify.match


def test_a_target_outage_pauses_the_writes(tmp_path, sysfs, monkeypatch):
    lab = Lab(tmp_path, sysfs, monkeypatch)
    lab.outage_at(2 * MiB, "up", "up", 1.0,
                  edit=lambda t: _device_state(t, "sdb", "transport-offline", "FAILED"))
    result = lab.run()
    assert result.status == "ok", result.message
    assert lab.dst.read_bytes() == lab.data
    assert any(n.startswith("TARGET path to 10.0.2.2 lost, waiting") for n in lab.waiting())


def test_an_outage_past_the_limit_stops_resumable_and_nothing_is_bad(tmp_path, sysfs,
                                                                     monkeypatch):
    lab = Lab(tmp_path, sysfs, monkeypatch, outage_limit=1.0)
    lab.outage_at(MiB + CHUNK, "offline", None, 0)
    result = lab.run()
    assert result.status == "failed" and result.exit_code == 1
    assert "SOURCE path to 10.0.2.2 lost: not back after 0:01 (the outage limit, 0:01), " \
           "gave up" in result.message, result.message
    assert "--resume" in result.message and "nothing was recorded as unreadable" in \
        result.message
    saved = Mapfile.load(str(tmp_path / "copy.map"))
    assert saved.bytes_with(BAD, NON_TRIMMED, NON_SCRAPED) == 0
    assert saved.bytes_with(FINISHED) == MiB + CHUNK  # what was read before the outage
    assert saved.bytes_with(NON_TRIED) == SIZE - MiB - CHUNK
    assert result.read_errors == 0 and not result.unreadable
    # the path is back: a second run from the mapfile completes
    sysfs.show("back")
    copied = lab.dst.read_bytes()
    assert copied[:MiB + CHUNK] == lab.data[:MiB + CHUNK]
    again = Lab(tmp_path, sysfs, monkeypatch)  # new files: put the first run's back
    for path, data in ((again.src, lab.data), (again.dst, copied)):
        with open(path, "r+b") as f:
            f.write(data)
    again.data = lab.data
    again.c.map = saved
    result = again.run(resumed=True)
    assert result.copied_bytes == SIZE - MiB - CHUNK  # only what the first run had not
    assert result.status == "ok", result.message
    assert again.dst.read_bytes() == lab.data


def test_a_media_error_on_a_healthy_path_is_still_a_bad_sector(tmp_path, sysfs, monkeypatch):
    lab = Lab(tmp_path, sysfs, monkeypatch)
    real = blockdev.read_exact
    bad = (MiB + 4096, 512)

    def read_exact(fd, view, offset):  # the path stays up: the medium fails
        if fd != lab.c.dst_fd and offset < bad[0] + bad[1] and offset + len(view) > bad[0]:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    result = lab.run()
    assert result.status == "unreadable" and result.exit_code == 3
    assert result.unreadable == [bad]
    assert not lab.waiting()


def test_a_relogin_reopens_the_source_under_its_new_name(tmp_path, sysfs, monkeypatch):
    lab = Lab(tmp_path, sysfs, monkeypatch)
    opened: list[str] = []
    real_open = blockdev.open_device

    def open_device(path, **kw):
        opened.append(path)
        return os.open(lab.src, os.O_RDONLY) if path.startswith("/dev/sd") else \
            real_open(path, **kw)
    monkeypatch.setattr(blockdev, "open_device", open_device)
    lab.outage_at(MiB, "gone", "relogin", 0.8)
    result = lab.run()
    assert result.status == "ok", result.message
    new = lab.c.guards["SOURCE"].lun.name
    assert new != "sda" and opened == [f"/dev/{new}"]
    assert lab.dst.read_bytes() == lab.data
    assert any(f"came back under another name after a re-login: /dev/{new}" in w
               for w in result.warnings)


def test_a_target_outage_pauses_a_restore(tmp_path, sysfs, monkeypatch):
    import io

    from toolkit.restore.write import HEAD, Target, write_stream
    image = os.urandom(4 * MiB)
    disk_file = tmp_path / "disk.img"
    disk_file.write_bytes(bytes(8 * MiB))
    seen: list[Progress] = []
    reporter, cancel = Reporter(seen.append, 0), threading.Event()
    target = Target(str(disk_file))
    target.guard = transport.Guard(transport.Lun.of("TARGET", "sdb", sysfs.root), 10,
                                   report=reporter.waiting, cancel=cancel, poll=0.1)
    real, fired = blockdev.write_exact, []

    def write_exact(fd, view, offset):
        if offset >= 2 * MiB and not fired:
            fired.append(offset)
            sysfs.show("up", lambda t: _device_state(t, "sdb", "blocked", "FAILED"))
            _later(0.8, lambda: sysfs.show("back"))
        if sysfs.state("sdb") != "up":
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "write_exact", write_exact)
    with target:
        end, digest, _ = write_stream(io.BytesIO(image[HEAD:]), target, head=image[:HEAD],
                                      algorithm="blake3", reporter=reporter, cancel=cancel,
                                      total=len(image), chunk=CHUNK)
    assert end == len(image) and fired
    assert disk_file.read_bytes()[HEAD:len(image)] == image[HEAD:]
    notes = [p.note for p in seen if p.phase == "waiting"]
    assert notes and notes[0].startswith("TARGET path to 10.0.2.2 lost, waiting 0:00")
    assert seen[-1].phase == "write"
    assert [e.resumed for e in target.guard.events] == [True]


def test_the_menu_shows_the_wait(sysfs):
    from types import SimpleNamespace

    from screen import render as render_app

    from tui.views.copy import CopyProgressView

    def render(view) -> str:
        return render_app(SimpleNamespace(root=view))
    plan = CopyPlan(_endpoint("sda", "RTK-SRC-0001", SRC_IQN, SIZE),
                    _endpoint("sdb", "RTK-DST-0002", DST_IQN, SIZE))
    view = CopyProgressView(plan, lambda *_: None)
    note = "SOURCE path to 10.0.2.2 lost, waiting 0:42 (gives up at 10:00)"
    view.update(Progress("waiting", MiB, SIZE, 0.0, 0.0, None, note=note))
    assert note in render(view)
    view.update(Progress("copy", 2 * MiB, SIZE, 1.0, 1.0, 2.0))
    assert note not in render(view) and "Copying" in render(view)


# --- the pieces around it ---------------------------------------------------------------------

def test_the_reporter_shows_the_wait_and_goes_back():
    seen: list[Progress] = []
    r = Reporter(seen.append, 0)
    r.start("copy", 100, 10)
    r.waiting("SOURCE path to 10.0.2.2 lost, waiting 0:01 (gives up at 10:00)")
    r.waiting(None)
    assert [p.phase for p in seen] == ["copy", "waiting", "copy"]
    assert seen[1].note.startswith("SOURCE path") and seen[1].done == 10


def test_outage_limit_option_and_plan_field():
    from toolkit.cli.copy import duration
    from toolkit.unattended.plan import from_file
    assert [duration(x) for x in ("30s", "10m", "1.5h", "90")] == [30, 600, 5400, 90]
    for bad in ("0", "-3", "10 days", ""):
        with pytest.raises(Exception, match="duration"):
            duration(bad)
    assert from_file({"outage_limit": 120})["outage_limit"] == 120
    with pytest.raises(ValueError, match="outage_limit"):
        from_file({"outage_limit": "ten"})


def test_a_local_disk_the_error_handler_took_offline_is_failing_media_not_an_outage(tmp_path):
    """SCSI state ``offline`` on a disk with no iSCSI session (a dying SATA/SAS disk):
    its read errors are recorded as unreadable, not waited out for the outage limit."""
    root = tmp_path / "sys"
    dev = root / "devices" / "pci0000:00" / "0000:00:1f.2" / "ata1" / "host0" / "target0:0:0"
    blk = dev / "0:0:0:0" / "block" / "sda"
    (blk.parent.parent / "state").parent.mkdir(parents=True, exist_ok=True)
    blk.mkdir(parents=True)
    (blk.parent.parent / "state").write_text("offline\n")
    (blk / "device").symlink_to(blk.parent.parent)
    (root / "block").mkdir()
    (root / "block" / "sda").symlink_to(blk)
    assert transport.path_state("sda", str(root)) == transport.UP
    (blk.parent.parent / "state").write_text("blocked\n")  # the transport, not the medium
    assert transport.path_state("sda", str(root)) == transport.DOWN
