"""The menu as a person sees it: keys typed, the 80x24 screen read as text.

Disks come from a probe captured in the live guest (an iSCSI LUN logged in,
a virtio disk, the boot CD), replayed through toolkit.disks."""

from __future__ import annotations

import pytest
from conftest import guest_disks, guest_probe
from screen import press, render

from tui.app import App


@pytest.fixture
def app(tmp_path):
    (tmp_path / "copy-20261122-101500.txt").write_text("copy report\nresult: verified\n")
    powered = []
    a = App(log_dir=str(tmp_path), list_disks=lambda: guest_disks(),
            power=powered.append)
    a.powered = powered
    return a


def test_main_menu_frame(app):
    screen = render(app).splitlines()
    assert len(screen) == 24 and all(len(line) == 80 for line in screen)
    assert screen[0].startswith(" Recovery Toolkit ")
    assert "Main menu" in screen[1]
    for entry in ("Disks", "iSCSI Manager", "Disk Copy", "Restore", "Network", "Logs", "Shell",
                  "Reboot", "Power off"):
        assert entry in "\n".join(screen)
    # nothing that does not work yet is offered
    for absent in ("Unattended",):
        assert absent not in "\n".join(screen[2:-1])
    assert "Enter select" in screen[-1] and "F10" in screen[-1]


def test_disks_view_shows_iscsi_lun_and_virtio_disk(app):
    screen = press(app, "d")
    assert "Disks" in screen.splitlines()[1]
    assert "/dev/sda        33.6 MB  iSCSI  VIRTUAL-DISK         beaf11" in screen
    assert "iqn.2026-11.lab.rtk:bdr1  LUN 1  portal 10.0.2.2:3260" in screen
    assert 'sda2 24.1 MB ntfs "Volume2"' in screen
    assert "/dev/vda" in screen and "RTKVIRTIO0001" in screen
    assert "IN USE: boot medium of this live system; mounted at /run/live/medium" in screen
    assert "Esc back" in screen.splitlines()[-1]


def test_disks_view_says_what_the_probe_could_not_see(tmp_path):
    """The probe's warnings (blkid missing on a machine without udev) are lines of the
    Disks screen, above the disks, and stay after F5."""
    from toolkit.disks.inventory import disks_from_probe
    probe = {**guest_probe(), "warnings": [
        "blkid is not installed (util-linux): filesystems and labels are not shown"]}
    app = App(log_dir=str(tmp_path), list_disks=lambda: disks_from_probe(probe))
    for screen in (press(app, "d"), press(app, "f5")):
        lines = screen.splitlines()
        assert lines[3].startswith("! blkid is not installed (util-linux): filesystems and "
                                   "labels are not shown")
        assert lines[4].startswith("/dev/sda")
    quiet = press(App(log_dir=str(tmp_path), list_disks=guest_disks), "d")
    assert quiet.splitlines()[3].startswith("/dev/sda")  # no warning, no line


def test_disk_details_and_back(app):
    screen = press(app, "d", "enter")
    assert "Disk /dev/sda" in screen
    assert "by-path: ip-10.0.2.2:3260-iscsi-iqn.2026-11.lab.rtk:bdr1-lun-1" in screen
    assert "WWN: 0x60000000000000000e00000000010001" in screen
    assert "session: session1" in screen
    screen = press(app, "esc")
    assert "Disks" in screen.splitlines()[1]
    screen = press(app, "esc")
    assert "Main menu" in screen.splitlines()[1]


def test_boot_medium_squashfs_loop_is_in_use(app):
    disks = {d.name: d for d in guest_disks()}
    assert disks["loop0"].boot_medium and disks["sr0"].boot_medium
    assert not disks["sda"].boot_medium and disks["sda"].in_use == []
    screen = press(app, "d", "end")
    assert "file /run/live/medium/live/filesystem.squashfs" in screen


def test_log_viewer_lists_reports_and_opens_one(app):
    screen = press(app, "l")
    lines = screen.splitlines()
    assert "copy-20261122-101500.txt" in lines[3]  # toolkit reports first
    assert "Kernel messages (dmesg)" in screen
    screen = press(app, "enter")
    assert "result: verified" in screen


def test_power_off_needs_confirmation(app):
    screen = press(app, "p")
    assert "Power off?" in screen
    press(app, "esc")  # Esc is Cancel
    assert app.powered == []
    assert "Power off?" not in render(app)
    press(app, "p", "right", "enter")
    assert app.powered == ["poweroff"]


def test_reboot_cancel_by_default(app):
    press(app, "r", "enter")  # focus starts on Cancel
    assert app.powered == []
    press(app, "f10", "right", "enter")
    assert app.powered == ["poweroff"]


def test_roles_shown_and_source_never_a_target(tmp_path, monkeypatch):
    """A LUN the iSCSI Manager attached as SOURCE is marked, listed first as a
    source, and cannot be the target of a copy: the list says why."""
    from toolkit.disks import roles

    monkeypatch.setenv("RTK_RUN_DIR", str(tmp_path))
    disks = guest_disks()
    sda = next(d for d in disks if d.name == "sda")
    roles.set_role(sda, roles.SOURCE)

    def listed():
        found = guest_disks()
        for d in found:
            d.role = roles.role_of(d)
        return found

    app = App(log_dir=str(tmp_path), list_disks=listed)
    screen = press(app, "d")
    assert "/dev/sda        33.6 MB  iSCSI  SOURCE" in screen
    press(app, "esc", "c")
    assert [d.name for d in app.copy.disks][0] == "sda"
    vda = next(d for d in app.copy.disks if d.name == "vda")
    reasons = dict((d.name, r) for d, r in app.copy.target_choices(vda))
    assert "attached as SOURCE" in reasons["sda"]
    assert reasons["vda"] == "this is the SOURCE"


def test_the_restore_result_screen_shows_what_was_found_while_it_ran():
    """A restore whose Windows storage-driver step failed (that Windows stops at
    INACCESSIBLE_BOOT_DEVICE on this controller) is not only "RESTORED AND VERIFIED":
    the warnings found while it ran, not those of the plan (shown before writing), and
    the Windows and Linux steps' lines are on the result screen, as rtk restore prints
    them (review helper-61)."""
    from conftest import MiB, disk

    from toolkit.disks.endpoint import endpoint_from_disk
    from toolkit.restore.plan import ImageInfo
    from toolkit.restore.report import RestoreResult
    from tui.views.restore import RestoreResultView
    warn = ("Windows storage drivers, partition 2: failed: the SYSTEM hive could not be "
            "written back (ntfs-3g: Input/output error): stornvme still does not start at "
            "boot")
    planned = "this image boots only in UEFI mode (an EFI system partition)"
    image = ImageInfo("/img/win.raw", False, None, "raw", 64 * MiB, 64 * MiB, 512, "gpt")
    r = RestoreResult("ok", "restored 67108864 bytes onto /dev/sdz, verified", image,
                      endpoint_from_disk(disk("sdz", "SER1")), warnings=[planned, warn],
                      started=1.0, finished=2.0)
    r.verify = {"match": True}
    r.windows_drivers = {"mode": "auto", "partitions": [
        {"partition": 2, "status": "failed", "message": warn.split(": ", 2)[2],
         "changes": []}]}
    r.linux_initramfs = {"mode": "auto", "roots": [
        {"partition": 3, "volume": None, "system": "Debian", "status": "rebuilt",
         "message": "update-initramfs: 6.1.0: /boot/initrd.img-6.1.0", "kernels": [],
         "changes": [], "fstab": [], "notes": []}]}
    canvas = RestoreResultView(r, lambda: None, (planned,)).render((100, 60), focus=True)
    screen = "\n".join(line.decode("utf-8") for line in canvas.text)
    flat = " ".join(screen.split())
    assert "RESTORED AND VERIFIED" in screen
    assert "warning: Windows storage drivers, partition 2: failed" in flat, screen
    assert "windows drivers: partition 2: failed: the SYSTEM hive could not be" in flat
    assert "linux initramfs: partition 3" in flat and planned not in flat, screen
