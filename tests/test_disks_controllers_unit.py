"""toolkit.disks and the Disks screen on a probe captured in the live guest with a disk on
each storage controller servers have (tests/test_hardware_vm.py: a q35 under Secure Boot
with NVMe, AHCI, MegaRAID, LSI 53C895A, virtio-scsi, VMware PVSCSI and USB disks, two
iSCSI LUNs, two virtio disks, the boot CD).

The SATA disk's sysfs ``wwid`` is libata's T10 vendor designator (``t10.ATA     QEMU
HARDDISK   ...   RTKAHCI02``): a vendor, model and serial string, not a WWN; the disk has
none, and none is shown."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, MiB
from screen import press

from toolkit.disks.inventory import disks_from_probe
from toolkit.disks.sysfs import SysfsView, wwn_of
from tui.app import App

pytestmark = pytest.mark.unit

# serial: (kernel name in that boot, transport, vendor, model, the screen's column)
EXPECTED = {
    "RTKNVME01": ("nvme0n1", "nvme", None, "QEMU NVMe Ctrl", "NVME"),
    "RTKAHCI02": ("sde", "sata", "ATA", "QEMU HARDDISK", "SATA"),
    "RTKMEGASAS03": ("sdc", "scsi", "QEMU", "QEMU HARDDISK", "SCSI"),
    "RTKLSI04": ("sdd", "scsi", "QEMU", "QEMU HARDDISK", "SCSI"),
    "RTKVSCSI05": ("sdb", "virtio", "QEMU", "QEMU HARDDISK", "virtio"),
    "RTKPVSCSI06": ("sda", "scsi", "QEMU", "QEMU HARDDISK", "SCSI"),
    "RTKUSB07": ("sdf", "usb", "QEMU", "QEMU HARDDISK", "USB"),
}
T10 = "t10.ATA     QEMU HARDDISK                           RTKAHCI02"


def _probe() -> dict:
    return json.loads((FIXTURES / "guest-probe-controllers.json").read_text())


def _disks():
    return disks_from_probe(_probe())


def test_each_controller_transport_model_serial():
    by_serial = {d.serial: d for d in _disks() if d.serial}
    for serial, (name, transport, vendor, model, _) in EXPECTED.items():
        d = by_serial[serial]
        assert (d.name, d.transport, d.vendor, d.model) == (name, transport, vendor, model)
        assert d.size == 32 * MiB and not d.in_use and d.by_id
    assert by_serial["RTKUSB07"].removable
    assert not by_serial["RTKNVME01"].rotational
    luns = {d.serial: d.iscsi.target for d in _disks() if d.transport == "iscsi"}
    assert luns == {"RTKSBSRC01": "iqn.2026-12.lab.rtk:sb-snapshot",
                    "RTKSBDST02": "iqn.2026-12.lab.rtk:sb-san"}


def test_sata_t10_designator_is_not_a_wwn():
    probe = _probe()
    assert probe["block"]["sde"]["attrs"]["device/wwid"] == T10  # what the kernel said
    by_name = {d.name: d for d in disks_from_probe(probe)}
    assert by_name["sde"].wwn is None
    assert by_name["sde"].identity == "RTKAHCI02"
    # real WWNs stay: the NVMe namespace's, the iSCSI LUNs' (from udev)
    assert by_name["nvme0n1"].wwn == probe["block"]["nvme0n1"]["attrs"]["wwid"]
    assert by_name["sdg"].wwn == "0x60000000000000000e00000000010001"
    # without udev (a host without its daemon) only sysfs names the disks: the same
    for entry in probe["block"].values():
        entry["udev"], entry["devlinks"] = {}, []
    bare = {d.name: d for d in disks_from_probe(probe)}
    assert bare["sde"].wwn is None and bare["sde"].serial == "RTKAHCI02"
    assert bare["sdg"].wwn == "naa.60000000000000000e00000000010001"
    assert {n: bare[n].transport for n in ("sde", "sdf", "nvme0n1", "sdc")} == \
        {"sde": "sata", "sdf": "usb", "nvme0n1": "nvme", "sdc": "scsi"}


def test_wwn_of():
    assert wwn_of(T10) is None and wwn_of("T10.ATA  X") is None
    assert wwn_of(None) is None and wwn_of("") is None
    for name in ("naa.5000c500a1b2c3d4", "eui.0025385b71b12345", "nvme.1b36-5254-00000001"):
        assert wwn_of(name) == name


def test_write_gate_names_of_a_sata_disk(tmp_path):
    """The write gate's sysfs names of the disk: its serial (from the inventory), no
    ``wwn:`` made of the T10 string; an NAA wwid stays a WWN."""
    for name, wwid in (("sde", T10), ("sdg", "naa.60000000000000000e00000000010001")):
        (tmp_path / name / "device").mkdir(parents=True)
        (tmp_path / name / "device" / "wwid").write_text(wwid + "\n")
    view = SysfsView(str(tmp_path), names_of=lambda n: frozenset({f"serial:{n.upper()}"}))
    assert view.disk_names(str(tmp_path / "sde")) == {"serial:SDE"}
    assert view.disk_names(str(tmp_path / "sdg")) == {
        "serial:SDG", "wwn:naa.60000000000000000e00000000010001"}


def test_disks_screen_lists_each_controller(tmp_path):
    app = App(log_dir=str(tmp_path), list_disks=_disks)
    seen = press(app, "d")
    for _ in range(len(_disks())):
        seen += "\n" + press(app, "down")
    for serial, (name, _, _, model, column) in EXPECTED.items():
        line = f"{'/dev/' + name:<13} {'33.6 MB':>9}  {column:<6} {model:<20} {serial}"
        assert line in seen, f"{line!r} not in\n{seen}"


def test_sata_disk_details_show_no_wwn(tmp_path):
    app = App(log_dir=str(tmp_path), list_disks=_disks)
    press(app, "d")
    screen = ""
    for _ in range(len(_disks())):
        screen = press(app, "enter")
        if "Disk /dev/sde" in screen:
            break
        press(app, "esc", "down")
    assert "Disk /dev/sde" in screen
    assert "transport: SATA" in screen and "serial: RTKAHCI02" in screen
    assert "WWN: -" in screen and "t10." not in screen
