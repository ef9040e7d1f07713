"""State that outlives the boot, without devices: the durable-write sequence of mapfiles
and reports, where the state directory really is (mountinfo of a live guest), which
RTK-DATA partition wins, the state directory moved onto it, the boot step with mounts
replaced, and the menu's warning before a long job (keys typed, screen read)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import MiB, dialog, disk, guest_disks, guest_probe, partition, wait_worker
from screen import press, render

from toolkit import atomic
from toolkit.blockio.mapfile import Mapfile
from toolkit.jobs import report
from toolkit.system import paths, state, tools
from tui.app import App
from tui.controllers.state import StatePrompt

pytestmark = pytest.mark.unit


# --- durable writes: temporary file, fsync, rename, fsync of the directory ----------------

@pytest.fixture
def syscalls(monkeypatch):
    """Every fsync (of what file or directory) and rename, in order."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        calls.append(("rename", os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", replace)
    return calls


def assert_durable(calls, path: str) -> None:
    """``path`` was replaced by a rename of a file beside it that had been fsynced, and
    the directory was fsynced after the rename."""
    directory = os.path.dirname(path)
    renames = [i for i, c in enumerate(calls) if c[0] == "rename" and c[2] == path]
    assert len(renames) == 1, calls
    i = renames[0]
    tmp = calls[i][1]
    assert os.path.dirname(tmp) == directory and tmp != path
    assert ("fsync", tmp) in calls[:i], f"the new file is not fsynced before the rename: {calls}"
    assert ("fsync", directory) in calls[i + 1:], f"no fsync of the directory: {calls}"


def test_mapfile_save_is_durable(tmp_path, syscalls):
    path = str(tmp_path / "copy.map")
    m = Mapfile(10 * MiB)
    m.set(0, MiB, "+")
    m.save(path)
    assert_durable(syscalls, path)
    assert Mapfile.load(path) == m


def test_report_is_durable(tmp_path, syscalls):
    """Both files of a report (before the fix: no fsync of the directory)."""
    paths_ = report.write_report("copy", {"result": "ok"}, "copy report\n",
                                 directory=str(tmp_path))
    assert_durable(syscalls, paths_.json)
    assert_durable(syscalls, paths_.text)
    assert json.loads(Path(paths_.json).read_text()) == {"result": "ok"}


def test_write_atomic_failure_keeps_the_old_version(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic.write_atomic(str(path), "old\n")

    def broken(_fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        atomic.write_atomic(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left


def test_log_viewer_skips_a_write_under_way(tmp_path):
    from toolkit.system import logs

    (tmp_path / "copy-1.txt").write_text("done\n")
    (tmp_path / f"copy-2.json.123{atomic.TMP_SUFFIX}").write_text("{")
    assert [s.title for s in logs.sources(str(tmp_path)) if s.kind == "file"] == ["copy-1.txt"]


# --- where the state is, and whether it survives a reboot ---------------------------------

def live_mountinfo(*extra: str) -> str:
    """The mountinfo of a live guest booted from CD (root: overlay over tmpfs)."""
    return guest_probe()["mountinfo"] + "".join(f"\n{line}" for line in extra)


def test_the_live_system_keeps_its_state_in_ram():
    loc = state.location("/var/log/rtk", mountinfo=live_mountinfo())
    assert loc.fstype == "overlay" and not loc.persistent
    assert "in RAM" in loc.message and "reboot" in loc.message


def test_state_on_a_data_partition_survives(tmp_path):
    data = tmp_path / "data"
    (data / "rtk").mkdir(parents=True)
    link = tmp_path / "rtk-log"
    link.symlink_to(data / "rtk")
    line = f"90 27 8:19 / {data} rw,noatime shared:40 - ext4 /dev/sdb3 rw"
    loc = state.location(str(link), mountinfo=live_mountinfo(line))
    assert loc.persistent and loc.writable
    assert (loc.device, loc.fstype, loc.real) == ("/dev/sdb3", "ext4", str(data / "rtk"))
    assert "survive a reboot" in loc.message
    ro = f"90 27 8:19 / {data} ro,noatime shared:40 - ext4 /dev/sdb3 ro"
    assert not state.location(str(link), mountinfo=live_mountinfo(ro)).writable


@pytest.mark.parametrize(("line", "persistent"), [
    ("90 27 0:50 / {d} rw - tmpfs tmpfs rw", False),
    ("90 27 252:0 / {d} rw - ext4 /dev/zram0 rw", False),
    ("90 27 0:51 / {d} rw - overlay overlay rw,lowerdir=/a,upperdir=/run/live/overlay/rw,"
     "workdir=/w", False),
    # live-boot's own persistence: the overlay's upper layer on a disk
    ("91 27 8:3 / /run/live/persistence/sda3 rw - ext4 /dev/sda3 rw\n"
     "90 27 0:51 / {d} rw - overlay overlay rw,lowerdir=/a,"
     "upperdir=/run/live/persistence/sda3/rw,workdir=/w", True),
    ("90 27 8:1 / {d} rw - vfat /dev/sdc1 rw,fmask=0022", True),
])
def test_what_survives(tmp_path, line, persistent):
    loc = state.location(str(tmp_path), mountinfo=live_mountinfo(line.format(d=tmp_path)))
    assert loc.persistent is persistent


# --- which RTK-DATA partition ---------------------------------------------------------------

def rtk_data(name, *, uuid, fstype="ext4", label="RTK-DATA", transport="usb", **kw):
    d = disk(name, serial=f"SER-{name}", size=8 << 30, transport=transport, **kw)
    partition(d, 1, MiB, 300 * MiB, fstype="iso9660", label="RTK")
    partition(d, 3, 400 * MiB, 7 << 30, fstype=fstype, label=label, uuid=uuid)
    return d


def names(volumes):
    return [v.path for v in volumes]


def test_the_boot_medium_wins_then_removable_then_uuid():
    disks = [rtk_data("sdb", uuid="bbbb", transport="sata"),
             rtk_data("sdc", uuid="aaaa", transport="sata"),
             rtk_data("sdd", uuid="cccc", removable=True, transport="sata"),
             rtk_data("sde", uuid="dddd", boot_medium=True, transport="sata")]
    named = "rtk.data=UUID=BBBB rtk.data=UUID=aaaa"  # fixed disks: only when named
    ok, skipped = state.data_partitions(disks, named)
    assert names(ok) == ["/dev/sde3", "/dev/sdd3", "/dev/sdc3", "/dev/sdb3"] and not skipped
    ok, _ = state.data_partitions(disks[:2], named)  # then the UUID decides, not /dev names
    assert names(ok) == ["/dev/sdc3", "/dev/sdb3"]


def test_partitions_that_cannot_hold_the_state_are_skipped_with_why():
    ntfs = rtk_data("sdb", uuid="1", fstype="ntfs")
    consented = rtk_data("sdc", uuid="2", wwn="0x5000c500a1b2c3d4")
    mounted = rtk_data("sdd", uuid="3")
    mounted.partitions[-1].mountpoints = ["/mnt/x"]
    lower = rtk_data("sde", uuid="4", label="rtk-data")  # FAT labels: any case
    ro = rtk_data("sdf", uuid="5", read_only=True)
    other = rtk_data("sdg", uuid="6", label="DATA")
    cmdline = ("BOOT_IMAGE=/live/vmlinuz rtk.mode=restore rtk.disk=rule:transport=sas "
               'rtk.consent="wwn:naa.5000C500A1B2C3D4"')
    ok, skipped = state.data_partitions([ntfs, consented, mounted, lower, ro, other], cmdline)
    assert names(ok) == ["/dev/sde3"]
    why = {v.path: w for v, w in skipped}
    assert "ntfs is not one of" in why["/dev/sdb3"]
    assert "rtk.disk=/rtk.consent= names" in why["/dev/sdc3"]
    assert "already mounted at /mnt/x" in why["/dev/sdd3"]
    assert "read-only" in why["/dev/sdf3"]
    assert "/dev/sdg3" not in why


def test_job_disk_ids_from_the_command_line():
    assert state.job_disk_ids("rtk.disk=serial:S4EW%20NX rtk.consent=wwn:0x5ABC x=1") == {
        "s4ew nx", "5abc"}
    # a rule alone may match the stick itself: no RTK-DATA is mounted on its own then
    assert state.job_disk_ids("rtk.disk=rule:size>=1T") == {state.ANY_DISK}
    assert state.job_disk_ids("rtk.disk=rule:size>=1T rtk.consent=serial:AB") == {"ab"}


def test_volumes_the_menu_offers():
    from toolkit.disks import roles

    stick = rtk_data("sdb", uuid="1", removable=True)
    src = rtk_data("sdc", uuid="2")
    src.role = roles.SOURCE
    job = rtk_data("sdd", uuid="3")
    used = rtk_data("sde", uuid="4")
    used.partitions[-1].mountpoints = ["/run/rtk/data"]
    choices = state.volumes([stick, src, job, used], busy=["/dev/sdd"])
    why = {v.path: r for v, r in choices}
    assert set(why) == {"/dev/sdb3", "/dev/sdc3", "/dev/sdd3", "/dev/sde3"}  # no iso9660
    assert why["/dev/sdb3"] is None and choices[0][0].path == "/dev/sdb3"
    assert "attached as SOURCE" in why["/dev/sdc3"]
    assert "part of this job" in why["/dev/sdd3"]
    assert "mounted at /run/rtk/data" in why["/dev/sde3"]


# --- the state directory moved onto the partition --------------------------------------------

def test_activate_moves_this_boots_files_and_links(tmp_path):
    log = tmp_path / "var-log-rtk"
    log.mkdir()
    (log / "tools.log").write_text("this boot\n")
    (log / "iscsi.log").write_text("iscsi now\n")
    (log / f"x.json.1{atomic.TMP_SUFFIX}").write_text("{")
    data = tmp_path / "data"
    (data / "rtk").mkdir(parents=True)
    (data / "rtk" / "tools.log").write_text("last boot\n")
    (data / "rtk" / "copy-a--b.map").write_text("map\n")
    target = state.activate(str(data), str(log))
    assert target == str(data / "rtk")
    assert log.is_symlink() and os.path.realpath(log) == str(data / "rtk")
    assert (log / "tools.log").read_text() == "last boot\nthis boot\n"
    assert sorted(os.listdir(log)) == ["copy-a--b.map", "iscsi.log", "tools.log"]
    assert sorted(os.listdir(tmp_path)) == ["data", "var-log-rtk"]  # nothing left behind
    # again: nothing changes; to another partition: the link is replaced at once
    state.activate(str(data), str(log))
    other = tmp_path / "other"
    other.mkdir()
    state.activate(str(other), str(log))
    assert os.path.realpath(log) == str(other / "rtk")


# --- the boot step (mounts replaced) ----------------------------------------------------------

@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("RTK_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setenv("RTK_RUN_DIR", str(tmp_path / "run"))
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "tools.log").write_text("early\n")
    return tmp_path


def test_boot_mounts_the_first_that_mounts(dirs, monkeypatch):
    mounted, said = [], []

    def fake_mount(v, mountpoint):
        if v.path == "/dev/sdc3":
            raise tools.ToolError(["mount", v.path], 32, "mount: wrong fs type, bad superblock")
        os.makedirs(mountpoint, exist_ok=True)
        mounted.append((v.path, mountpoint))

    monkeypatch.setattr(state, "mount_volume", fake_mount)
    disks = [rtk_data("sdb", uuid="bbbb"), rtk_data("sdc", uuid="aaaa")]
    assert state.boot(lambda: disks, "quiet", said.append) == 0
    assert mounted == [("/dev/sdb3", str(dirs / "run" / "data"))]
    text = "\n".join(said)
    assert "cannot mount /dev/sdc3" in text and "using /dev/sdb3" in text
    assert os.path.realpath(dirs / "log") == str(dirs / "run" / "data" / "rtk")
    assert (dirs / "log" / "tools.log").read_text() == "early\n"
    record = json.loads((dirs / "run" / state.STATE_RECORD).read_text())
    assert record["device"] == "/dev/sdb3" and record["how"] == "found at boot"
    assert "using" not in (dirs / "log" / state.BOOT_LOG).read_text()
    assert "state on /dev/sdb3" in (dirs / "log" / state.BOOT_LOG).read_text()


def test_boot_without_rtk_data_leaves_the_state_in_ram(dirs, monkeypatch):
    said = []
    monkeypatch.setattr(state, "mount_volume", lambda *a: pytest.fail("nothing to mount"))
    assert state.boot(lambda: guest_disks(), "", said.append) == 0
    assert "no usable partition labelled RTK-DATA" in said[-1]
    assert not (dirs / "log").is_symlink()


def test_boot_when_none_mounts(dirs, monkeypatch):
    def fail(v, _mnt):
        raise tools.ToolError(["mount", v.path], 32, "unknown filesystem type 'exfat'")

    monkeypatch.setattr(state, "mount_volume", fail)
    said = []
    assert state.boot(lambda: [rtk_data("sdb", uuid="1", fstype="exfat")], "", said.append) == 1
    assert "none of the partitions found mounts" in said[-1]
    assert not (dirs / "log").is_symlink()


# --- the menu: before a long job ----------------------------------------------------------------

def volatile(path="/var/log/rtk") -> state.StateLocation:
    return state.StateLocation(path, path, "/", "overlay", "overlay", False, True)


@pytest.fixture
def app(tmp_path):
    return App(log_dir=str(tmp_path), list_disks=lambda: guest_disks())


def test_persistent_state_starts_the_job_at_once(app):
    started = []
    loc = state.StateLocation("/var/log/rtk", "/run/rtk/data/rtk", "/run/rtk/data", "ext4",
                              "/dev/sdb3", True, True)
    StatePrompt(app, location=lambda: loc).before_long_job(lambda: started.append(1))
    assert started == [1] and "┌" not in render(app)


def test_state_in_ram_warns_first(app):
    started = []
    prompt = StatePrompt(app, list_disks=guest_disks, location=volatile)
    prompt.before_long_job(lambda: started.append(1), busy=["/dev/sda"])
    text = dialog(render(app))
    assert "in RAM" in text and "loses the resume point" in text and "RTK-DATA" in text
    press(app, "esc")  # Esc: Back, nothing starts
    assert started == [] and "┌" not in render(app)
    prompt.before_long_job(lambda: started.append(1))
    press(app, "right", "right", "enter")  # Start anyway
    assert started == [1]


def test_choosing_a_disk_for_the_state(app, monkeypatch):
    started, used = [], []
    d = rtk_data("sdb", uuid="1", removable=True, label="STICK")

    def use(v):
        used.append(v.path)
        return state.StateLocation("/var/log/rtk", "/run/rtk/data/rtk", "/run/rtk/data",
                                   "ext4", v.path, True, True)

    monkeypatch.setattr(state, "use_volume", use)
    prompt = StatePrompt(app, list_disks=lambda: [d, *guest_disks()], location=volatile)
    prompt.before_long_job(lambda: started.append(1), busy=["/dev/sda"])
    press(app, "right", "enter")  # Choose a disk
    screen = wait_worker(app)
    assert "Keep mapfiles and reports on" in screen
    assert '/dev/sdb3       ext4   "STICK"' in screen
    assert "cannot be chosen: part of this job" in screen  # the iSCSI disk sda's ntfs
    press(app, "enter")
    screen = wait_worker(app)
    assert used == ["/dev/sdb3"] and "survive a reboot" in dialog(screen)
    press(app, "enter")
    assert started == [1]


def test_data_mount_follows_the_run_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("RTK_RUN_DIR", raising=False)
    assert paths.data_mount() == "/run/rtk/data"
    monkeypatch.setenv("RTK_RUN_DIR", str(tmp_path))
    assert paths.data_mount() == str(tmp_path / "data")


def test_reports_written_in_the_same_second_never_share_a_name(tmp_path):
    """The pairs of a copy job start together: each gets its own report, none replaced."""
    import threading

    from toolkit.jobs.report import write_report

    got, start = [], threading.Barrier(8)

    def one(i: int) -> None:
        start.wait()
        got.append(write_report("copy", {"pair": i}, f"pair {i}\n", directory=str(tmp_path),
                                when=1_700_000_000.0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.json for p in got}) == 8
    assert sorted((tmp_path / os.path.basename(p.text)).read_text() for p in got) == \
        sorted(f"pair {i}\n" for i in range(8))
