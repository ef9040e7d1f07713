"""The boot rule of the RTK-DATA partition (:func:`toolkit.system.state.boot`): with no
one asked, only an RTK-DATA on the boot medium or on a removable or USB disk is mounted
read-write; one on another fixed disk only when ``rtk.data=UUID=...`` names it; never
one on an iSCSI disk, on a disk attached as SOURCE, or on the disk rtk.disk= names. The
skipped ones are said, with why. Inventories built by hand, mount_volume replaced.
"""

from __future__ import annotations

import os

import pytest
from conftest import MiB, disk, partition

from toolkit.disks import roles
from toolkit.system import state

pytestmark = pytest.mark.unit


def rtk_data(name, *, uuid, transport="sata", **kw):
    d = disk(name, serial=f"SER-{name}", size=8 << 30, transport=transport, **kw)
    partition(d, 1, MiB, 300 * MiB, fstype="ntfs", label="Windows")
    partition(d, 3, 400 * MiB, 7 << 30, fstype="ext4", label="RTK-DATA", uuid=uuid)
    return d


@pytest.fixture
def booted(tmp_path, monkeypatch):
    """``boot(disks, cmdline)`` -> (exit code, the paths mounted, what it said)."""
    monkeypatch.setenv("RTK_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setenv("RTK_RUN_DIR", str(tmp_path / "run"))
    (tmp_path / "log").mkdir()

    def run(disks, cmdline=""):
        mounted, said = [], []

        def fake_mount(v, mountpoint):
            os.makedirs(mountpoint, exist_ok=True)
            mounted.append(v.path)
        monkeypatch.setattr(state, "mount_volume", fake_mount)
        code = state.boot(lambda: disks, cmdline, said.append)
        return code, mounted, "\n".join(said)
    return run


def test_a_fixed_disks_rtk_data_is_not_mounted_at_boot(booted):
    code, mounted, said = booted([rtk_data("sda", uuid="1111")])
    assert code == 0 and mounted == []
    assert "not using /dev/sda3" in said and "fixed disk" in said and "rtk.data=UUID=1111" in said
    assert "stay in RAM" in said


@pytest.mark.parametrize("kw", [{"boot_medium": True}, {"removable": True},
                                {"transport": "usb"}], ids=["boot-medium", "removable", "usb"])
def test_the_boot_medium_or_a_removable_or_usb_disk_is_mounted(booted, kw):
    code, mounted, said = booted([rtk_data("sda", uuid="1111"), rtk_data("sdb", uuid="2222", **kw)])
    assert code == 0 and mounted == ["/dev/sdb3"]
    assert "using /dev/sdb3" in said and "not using /dev/sda3" in said


def test_a_fixed_disk_named_by_rtk_data_is_mounted(booted):
    code, mounted, _ = booted([rtk_data("sda", uuid="1111"), rtk_data("sdc", uuid="AbCd")],
                              "quiet rtk.data=UUID=abcd")
    assert code == 0 and mounted == ["/dev/sdc3"]


def test_never_an_iscsi_disk_even_named_or_removable(booted):
    lun = rtk_data("sdd", uuid="3333", transport="iscsi", removable=True)
    code, mounted, said = booted([lun], "rtk.data=UUID=3333")
    assert mounted == [] and "not using /dev/sdd3" in said and "iSCSI disk" in said


def test_never_a_source_disk_even_usb(booted):
    src = rtk_data("sde", uuid="4444", transport="usb")
    src.role = roles.SOURCE
    code, mounted, said = booted([src], "rtk.data=UUID=4444")
    assert mounted == [] and "attached as SOURCE" in said


def test_never_the_disk_rtk_disk_names_even_usb(booted):
    job = rtk_data("sdf", uuid="5555", transport="usb")
    code, mounted, said = booted([job], "rtk.disk=serial:SER-sdf rtk.data=UUID=5555")
    assert mounted == [] and "rtk.disk=/rtk.consent= names" in said


@pytest.mark.parametrize("named", ["rtk.disk=/dev/sdf", "rtk.disk=sdf",
                                   "rtk.disk=by-id:usb-Stick_SER-sdf-0:0",
                                   "rtk.consent=sdf", "rtk.disk=rule:size>1G"])
def test_never_the_disk_rtk_disk_names_in_any_form(booted, named):
    """Not only serial: and wwn: name the job's disk; a kernel name, a by-id link or a
    rule (which may match the stick itself) keep RTK-DATA off it too."""
    job = rtk_data("sdf", uuid="5555", transport="usb", by_id=["usb-Stick_SER-sdf-0:0"])
    code, mounted, said = booted([job], named)
    assert mounted == [] and "rtk.disk=/rtk.consent= names" in said, said


def test_the_skipped_ones_are_in_the_boot_log(booted, tmp_path):
    booted([rtk_data("sda", uuid="1111"), rtk_data("sdb", uuid="2222", removable=True)])
    log = (tmp_path / "run" / "data" / "rtk" / state.BOOT_LOG).read_text()
    assert "state on /dev/sdb3" in log and "/dev/sda3" in log and "fixed disk" in log


def test_the_menu_may_still_offer_a_fixed_disks_rtk_data():
    vols = state.volumes([rtk_data("sda", uuid="1111")])
    assert [why for v, why in vols if v.path == "/dev/sda3"] == [None]
