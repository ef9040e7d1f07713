"""toolkit.disks on a probe captured in the live guest: the udev path (the
host has no udev daemon), iSCSI sessions from sysfs, the live boot medium."""

from __future__ import annotations

from conftest import guest_disks

from toolkit.disks.inventory import IscsiLocation, find_disk


def test_iscsi_lun_identity():
    sda = find_disk(guest_disks(), "/dev/sda")
    assert sda.transport == "iscsi"
    assert sda.iscsi == IscsiLocation("iqn.2026-11.lab.rtk:bdr1", "10.0.2.2:3260", 1, "session1")
    assert sda.serial == "beaf11" and sda.identity == "beaf11"
    assert sda.wwn == "0x60000000000000000e00000000010001"
    link = "/dev/disk/by-path/ip-10.0.2.2:3260-iscsi-iqn.2026-11.lab.rtk:bdr1-lun-1"
    assert sda.by_path == [link]
    assert (sda.vendor, sda.model) == ("IET", "VIRTUAL-DISK")
    assert [(p.fstype, p.label, p.partlabel) for p in sda.partitions] == [
        ("vfat", "ESP", None), ("ntfs", "Volume2", "Basic data")]


def test_virtio_disk_and_order():
    disks = guest_disks()
    assert [d.name for d in disks] == ["sda", "vda", "fd0", "sr0", "sr1", "loop0"]
    vda = find_disk(disks, "/dev/vda")
    assert (vda.transport, vda.serial, vda.vendor) == ("virtio", "RTKVIRTIO0001", None)
    assert vda.by_id == ["/dev/disk/by-id/virtio-RTKVIRTIO0001"]


def test_find_disk_by_stable_link():
    disks = guest_disks()
    link = "/dev/disk/by-path/ip-10.0.2.2:3260-iscsi-iqn.2026-11.lab.rtk:bdr1-lun-1"
    assert find_disk(disks, link).name == "sda"
    assert find_disk(disks, "/dev/disk/by-id/virtio-RTKVIRTIO0001").name == "vda"
    assert find_disk(disks, "/dev/nonexistent") is None
