"""The Windows storage-driver step without disks: hivexsh's ``lsval`` output parsed (real
output, from a hive built with hivexsh), the ``auto`` rule from inventory records and a
sysfs tree, the changes planned for a SYSTEM hive as read, the check of a changed hive,
and the report's rows."""

from __future__ import annotations

import os

import pytest
from conftest import disk

from toolkit.restore import windows_drivers as wd
from toolkit.restore.windows_registry import Driver, System, plan_changes, verify
from toolkit.system import hivex
from toolkit.system.hivex import Delete, Key, SetValues, Value

pytestmark = pytest.mark.unit

# ``lsval`` of Services\storahci in the host tests' hive, as hivexsh printed it
LSVAL = r'''"Start"=dword:00000003
"Type"=dword:00000001
"ErrorControl"=dword:00000003
"ImagePath"=str(2):"System32\\drivers\\storahci.sys"
"Group"="SCSI miniport"
"DisplayName"="Contrôleur SATA AHCI standard"
"Owners"=hex(7):73,00,74,00,6f,00,72,00,61,00,68,00,63,00,69,00,2e,00,69,00,6e,00,66,00,00,00,00,00
'''


def test_lsval_output_is_read_as_typed_values():
    v = hivex.parse_values(LSVAL)
    assert [(x.name, x.type) for x in v] == [("Start", 4), ("Type", 4), ("ErrorControl", 4),
                                             ("ImagePath", 2), ("Group", 1),
                                             ("DisplayName", 1), ("Owners", 7)]
    assert v[0].data == 3 and v[0].raw() == b"\x03\0\0\0"
    assert v[3].data == "System32\\drivers\\storahci.sys"
    assert v[5].raw() == "Contrôleur SATA AHCI standard\0".encode("utf-16-le")
    assert v[6].raw() == "storahci.inf\0\0".encode("utf-16-le")
    # what setval gets back: the type and the bytes, whatever the value is
    assert hivex.setval_lines(v[3:4]) == [
        "setval 1", "ImagePath", "hex:2:" + "System32\\drivers\\storahci.sys\0"
        .encode("utf-16-le").hex()]
    # escapes, the default value, an empty binary
    odd = hivex.parse_values('"a\\"b\\\\c"="x\\"y"\n"@"=hex(3):\n')
    assert odd == [Value('a"b\\c', 1, 'x"y'), Value("", 3, b"")]
    assert hivex.setval_lines(odd[1:])[1] == "@"


@pytest.mark.parametrize("text", ['"Description"="line one', "line two\"", "Start=dword:3",
                                  '"Q"=qword:5'])
def test_output_that_is_not_a_value_line_is_refused_not_guessed(text):
    with pytest.raises(ValueError):
        hivex.parse_values(text)


def test_values_hivexsh_cannot_write_are_refused():
    with pytest.raises(ValueError, match="too long"):
        hivex.setval_lines([Value("Big", 3, bytes(5000))])
    with pytest.raises(ValueError, match="cannot be written"):
        hivex.setval_lines([Value("two\nlines", 4, 0)])


# --- the target's controller, from inventory records and sysfs -----------------------------

def _sysfs(root, name: str, chain: list[tuple[str, str | None]]) -> str:
    """A sysfs tree: /sys/block/NAME/device -> devices/<chain dirs>, each with its driver."""
    path = os.path.join(root, "devices")
    for part, driver in chain:
        path = os.path.join(path, part)
        os.makedirs(path)
        if driver:
            os.makedirs(os.path.join(root, "bus", "drivers", driver), exist_ok=True)
            os.symlink(os.path.join(root, "bus", "drivers", driver),
                       os.path.join(path, "driver"))
    os.makedirs(os.path.join(root, "block", name))
    os.symlink(path, os.path.join(root, "block", name, "device"))
    return str(root)


SATA = [("pci0000:00", None), ("0000:00:1f.2", "ahci"), ("ata1", None), ("host0", None),
        ("target0:0:0", None), ("0:0:0:0", "sd")]
NVME = [("pci0000:00", None), ("0000:01:00.0", "nvme"), ("nvme", None), ("nvme0", None)]
MEGARAID = [("pci0000:00", None), ("0000:03:00.0", "megaraid_sas"), ("host0", None),
            ("target0:2:0", None), ("0:2:0:0", "sd")]
VIRTIO_SCSI = [("pci0000:00", None), ("0000:00:04.0", "virtio-pci"), ("virtio1", "virtio_scsi"),
               ("host2", None), ("target2:0:0", None), ("2:0:0:0", "sd")]


@pytest.mark.parametrize("record, chain, name, windows", [
    (disk("sda", transport="sata"), SATA, "SATA AHCI", ("storahci", "msahci")),
    (disk("nvme0n1", transport="nvme"), NVME, "NVMe", ("stornvme",)),
    (disk("sda", transport="scsi"), MEGARAID, "MegaRAID SAS", None),
    (disk("sda", transport="virtio"), VIRTIO_SCSI, "virtio SCSI", ("vioscsi",)),
])
def test_the_controller_comes_from_the_drivers_along_the_disks_device(tmp_path, record, chain,
                                                                      name, windows):
    root = _sysfs(tmp_path, record.name, chain)
    assert wd.driver_chain(record.name, root) == [d for _, d in reversed(chain) if d]
    c = wd.target_controller(record, root)
    assert (c.transport, c.name, c.windows) == (record.transport, name, windows)


def test_a_disk_without_a_known_driver_is_named_by_its_transport(tmp_path):
    c = wd.target_controller(disk("loop3", transport="loop"), str(tmp_path))
    assert (c.driver, c.windows, c.name) == (None, None, "a loop device (an image file)")
    usb = wd.controller("usb", ["sd", "usb-storage", "usb", "xhci_hcd"])
    assert (usb.driver, usb.windows) == ("usb-storage", None)
    assert usb.why == "a USB disk boots on the controller of the machine it goes into"
    other = wd.controller("scsi", ["sd", "sym53c8xx", "virtio-pci"])
    assert (other.driver, other.name, other.why) == ("sym53c8xx", "scsi",
                                                     "no Windows driver is known here for it")


# the Linux driver bound at each device of the guest whose probe tests/test_hardware_vm.py
# captured (one disk per storage controller): the devices and paths are that guest's, the
# bindings the ones these kernel drivers make for those PCI functions
GUEST_DRIVERS = {"0000:00:05.0": "nvme", "0000:00:06.0": "ahci", "0000:00:07.0": "megaraid_sas",
                 "0000:00:08.0": "sym53c8xx", "0000:00:09.0": "virtio-pci",
                 "virtio3": "virtio_scsi", "0000:00:0a.0": "vmw_pvscsi",
                 "0000:00:0b.0": "xhci_hcd", "2-1:1.0": "usb-storage",
                 "0000:00:03.0": "virtio-pci", "virtio1": "virtio_blk"}
GUEST = {  # kernel name: (what the step calls its controller, its Windows drivers)
    "nvme0n1": ("NVMe", ("stornvme",)), "sde": ("SATA AHCI", ("storahci", "msahci")),
    "sdc": ("MegaRAID SAS", None), "sdd": ("scsi", None),  # sym53c8xx: none known
    "sdb": ("virtio SCSI", ("vioscsi",)),
    "sda": ("VMware Paravirtual SCSI", ("pvscsi",)), "sdf": ("USB", None),
    "sdg": ("iSCSI", None), "vda": ("virtio block", ("viostor",))}


def _guest_sysfs(root, probe: dict) -> str:
    """The guest's sysfs tree for the disks of GUEST, from their captured sys_paths."""
    for name in GUEST:
        sys_path = probe["block"][name]["sys_path"]
        device = sys_path.split("/block/")[0] if "/block/" in sys_path else \
            os.path.dirname(sys_path)
        rel = device.removeprefix("/sys/")
        os.makedirs(os.path.join(root, rel), exist_ok=True)
        parts = rel.split("/")
        for i in range(2, len(parts) + 1):
            drv = GUEST_DRIVERS.get(parts[i - 1]) or ("sd" if i == len(parts) and
                                                     parts[-1].count(":") == 3 else None)
            link = os.path.join(root, *parts[:i], "driver")
            if drv and not os.path.islink(link):
                os.makedirs(os.path.join(root, "bus", "drivers", drv), exist_ok=True)
                os.symlink(os.path.join(root, "bus", "drivers", drv), link)
        os.makedirs(os.path.join(root, "block", name))
        os.symlink(os.path.join(root, rel), os.path.join(root, "block", name, "device"))
    return str(root)


def test_each_controller_of_the_captured_guest(tmp_path):
    import json

    from conftest import FIXTURES

    from toolkit.disks.inventory import disks_from_probe
    probe = json.loads((FIXTURES / "guest-probe-controllers.json").read_text())
    root = _guest_sysfs(tmp_path, probe)
    records = {d.name: d for d in disks_from_probe(probe)}
    boots_ahci = system(drv("ControlSet001", "storahci", 0), drv("ControlSet001", "stornvme", 3))
    acts = {}
    for name, (label, windows) in GUEST.items():
        c = wd.target_controller(records[name], root)
        assert (c.name, c.windows) == (label, windows), name
        assert (c.why is None) == (windows is not None), name
        acts[name] = wd.decide("auto", boots_ahci, c)[0]
    # an image that boots from AHCI is left alone only on the AHCI disk
    assert [n for n, act in acts.items() if not act] == ["sde"]


# --- the rule ------------------------------------------------------------------------------

def drv(cs: str, name: str, start: int | None, override: dict | None = None) -> Driver:
    values = [Value("Start", 4, start)] if start is not None else []
    values.append(Value("ImagePath", 2, f"System32\\drivers\\{name}.sys"))
    key = Key(f"{cs}\\Services\\{name}", values, ["StartOverride"] if override is not None
              else [])
    ov = Key(f"{cs}\\Services\\{name}\\StartOverride",
             [Value(k, 4, v) for k, v in override.items()], []) if override is not None else None
    return Driver(cs, name, key, ov, exact_of(key.values))


def exact_of(values: list[Value]) -> dict[str, tuple[int, bytes]]:
    """The values as hivexml's records would give them: what lsval showed, byte for byte."""
    return {v.name: (v.type, v.raw()) for v in values}


def system(*drivers: Driver, current: str = "ControlSet001") -> System:
    sets = sorted({d.control_set for d in drivers} | {current})
    return System(sets, current, "Select\\Current", list(drivers))


AHCI = wd.controller("sata", ["sd", "ahci"])
NVME_C = wd.controller("nvme", ["nvme"])
RAID = wd.controller("scsi", ["sd", "megaraid_sas"])
LOOP = wd.controller("loop", [])


def test_auto_acts_only_when_the_image_does_not_boot_from_the_targets_controller():
    on_ahci = system(drv("ControlSet001", "storahci", 0), drv("ControlSet001", "stornvme", 3))
    act, why = wd.decide("auto", on_ahci, AHCI)
    assert not act and why == "the image already starts storahci at boot, and the target's " \
        "controller is SATA AHCI (ahci)"
    act, why = wd.decide("auto", on_ahci, NVME_C)
    assert act and why == "the image starts storahci at boot; the target's controller is " \
        "NVMe (nvme), which needs stornvme"
    # Start 0 held off by StartOverride is not a boot driver (Windows 8 and later)
    held_off = system(drv("ControlSet001", "storahci", 0, {"0": 3}),
                      drv("ControlSet001", "LSI_SAS", 0))
    assert held_off.boot_drivers() == ["LSI_SAS"]
    assert wd.decide("auto", held_off, AHCI)[0]
    # what the image boots from in another control set only does not count
    other_set = system(drv("ControlSet002", "storahci", 0), drv("ControlSet001", "LSI_SAS", 0))
    assert wd.decide("auto", other_set, AHCI)[0]


def test_auto_acts_when_the_targets_controller_cannot_be_told():
    booted = system(drv("ControlSet001", "megasas2i", 0))
    act, why = wd.decide("auto", booted, RAID)
    assert act and why == "the target's controller is MegaRAID SAS (megaraid_sas): it has " \
        "one Windows driver per hardware generation: which one cannot be told from here"
    act, why = wd.decide("auto", booted, LOOP)
    assert act and "the disk will boot on another controller" in why
    act, why = wd.decide("auto", system(drv("ControlSet001", "storahci", 3)), AHCI)
    assert act and why.startswith("the image starts none of these storage drivers at boot")


def test_on_and_off_decide_alone():
    booted = system(drv("ControlSet001", "storahci", 0))
    assert wd.decide("on", booted, AHCI) == (True, "the Windows drivers option is on")
    assert wd.decide("off", system(drv("ControlSet001", "storahci", 3)), NVME_C)[0] is False


# --- the changes ---------------------------------------------------------------------------

def test_every_present_driver_in_every_control_set_is_planned_boot_start():
    s = system(drv("ControlSet001", "storahci", 3, {"0": 3}), drv("ControlSet001", "LSI_SAS", 0),
               drv("ControlSet002", "storahci", 3, {"0": 3, "1": 0}),
               drv("ControlSet002", "stornvme", None))
    edits, records, notes = plan_changes(s)
    assert notes == []
    assert [(type(e).__name__, e.path) for e in edits] == [
        ("SetValues", "ControlSet001\\Services\\storahci"),
        ("Delete", "ControlSet001\\Services\\storahci\\StartOverride"),
        ("SetValues", "ControlSet002\\Services\\storahci"),
        ("Delete", "ControlSet002\\Services\\storahci\\StartOverride"),
        ("SetValues", "ControlSet002\\Services\\stornvme")]
    # every value written back, Start in its place, as a REG_DWORD 0
    assert [(v.name, v.type, v.raw()) for v in edits[0].values] == [
        ("Start", 4, bytes(4)),
        ("ImagePath", 2, "System32\\drivers\\storahci.sys".encode("utf-16-le") + bytes(2))]
    assert edits[4].values[-1] == Value("Start", 4, 0)  # it had none: added
    assert [(r["control_set"], r["key"], r["value"], r["old"], r["new"]) for r in records] == [
        ("ControlSet001", "Services\\storahci", "Start", 3, 0),
        ("ControlSet001", "Services\\storahci\\StartOverride", "0", 3, None),
        ("ControlSet002", "Services\\storahci", "Start", 3, 0),
        ("ControlSet002", "Services\\storahci\\StartOverride", "0", 3, None),
        ("ControlSet002", "Services\\storahci\\StartOverride", "1", 0, None),
        ("ControlSet002", "Services\\stornvme", "Start", None, 0)]
    assert [wd.change_text(r) for r in records[:2]] == [
        "Services\\storahci\\Start: 3 -> 0", "Services\\storahci\\StartOverride\\0: 3 -> deleted"]


def test_a_key_that_cannot_be_read_or_written_exactly_is_left_and_said():
    unreadable = Driver("ControlSet001", "iaStorV", Key("ControlSet001\\Services\\iaStorV",
                                                        problem="invalid UTF-16"))
    odd_start = drv("ControlSet001", "stornvme", 3)
    odd_start.key.values[0] = Value("Start", 3, b"\x03")
    big = drv("ControlSet001", "storahci", 3)
    big.key.values.append(Value("Blob", 3, bytes(6000)))
    odd_start.exact, big.exact = exact_of(odd_start.key.values), exact_of(big.key.values)
    long_start = drv("ControlSet001", "LSI_SAS", 3)  # a REG_DWORD of 8 bytes: lsval shows 4
    long_start.exact["Start"] = (4, bytes(8))
    unsure = drv("ControlSet001", "iaStorAVC", 3)
    unsure.exact = None  # hivexml could not place its records
    edits, records, notes = plan_changes(system(unreadable, odd_start, big, long_start, unsure))
    assert edits == [] and records == []
    assert notes == ["ControlSet001\\Services\\iaStorV could not be read (invalid UTF-16): not "
                     "changed",
                     "ControlSet001\\Services\\stornvme: Start is not a REG_DWORD (type 3): not "
                     "changed",
                     "ControlSet001\\Services\\storahci: value 'Blob' is too long for a hivexsh "
                     "script line: not changed",
                     "ControlSet001\\Services\\LSI_SAS: Start is a REG_DWORD of 8 bytes, not 4: "
                     "not changed",
                     "ControlSet001\\Services\\iaStorAVC: its values could not be read byte for "
                     "byte: not changed"]


def test_the_check_of_the_changed_hive_finds_what_went_wrong(monkeypatch):
    monkeypatch.setattr(hivex, "get", lambda hive, path, name: "0")
    before = system(drv("ControlSet001", "storahci", 3, {"0": 3}))
    edits = [SetValues("ControlSet001\\Services\\storahci", ()),
             Delete("ControlSet001\\Services\\storahci\\StartOverride")]
    good = system(drv("ControlSet001", "storahci", 0))
    assert verify(before, good, edits, "new") == []
    kept = system(drv("ControlSet001", "storahci", 0, {"0": 3}))
    assert verify(before, kept, edits, "new") == [
        "ControlSet001\\Services\\storahci: StartOverride is still there"]
    lost = system(drv("ControlSet001", "storahci", 0))
    lost.drivers[0].key.values.pop()  # ImagePath gone
    assert verify(before, lost, edits, "new") == [
        "ControlSet001\\Services\\storahci: values other than Start changed"]
    created = system(drv("ControlSet001", "storahci", 0), drv("ControlSet001", "megasas", 0))
    assert verify(before, created, edits, "new") == [
        "the drivers present changed: controlset001\\megasas"]


def test_the_report_rows_and_the_command_line_lines():
    data = {"mode": "auto", "target_controller": {"transport": "nvme", "driver": "nvme",
                                                  "name": "NVMe", "windows": ["stornvme"]},
            "partitions": [{"partition": 3, "status": "changed", "message": "2 values changed",
                            "changes": [{"control_set": "ControlSet001",
                                         "key": "Services\\stornvme", "value": "Start",
                                         "old": 3, "new": 0}]},
                           {"partition": 4, "status": "skipped", "changes": [],
                            "message": "BitLocker-encrypted"}]}
    assert wd.report_rows(data) == [
        ("mode", "auto"), ("target controller", "NVMe (nvme)"),
        ("partition 3", "changed: 2 values changed"),
        ("ControlSet001", "Services\\stornvme\\Start: 3 -> 0"),
        ("partition 4", "skipped: BitLocker-encrypted")]
    assert wd.summary(data) == ["partition 3: changed: 2 values changed",
                                "partition 4: skipped: BitLocker-encrypted"]
    assert wd.report_rows(None) == [] and wd.summary(None) == []


# --- the option: command line, plan file ---------------------------------------------------

def test_the_option_reaches_the_restore_from_the_command_line_and_a_plan_file():
    import argparse

    from toolkit.cli import restore as cli
    from toolkit.unattended.plan import Plan, PlanError, from_file

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    assert parser.parse_args(["restore", "i", "t"]).windows_drivers == "auto"
    assert parser.parse_args(["restore", "i", "t", "--windows-drivers", "off"]) \
        .windows_drivers == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "i", "t", "--windows-drivers", "maybe"])
    plan = {"version": 1, "mode": "restore", "image": "/images/w.img",
            "disk": "serial:beaf11", "consent": "serial:beaf11"}
    assert from_file({**plan, "windows_drivers": "on"})["windows_drivers"] == "on"
    assert Plan().windows_drivers == "auto"
    with pytest.raises(PlanError, match="windows_drivers"):
        from_file({**plan, "windows_drivers": "yes"})
    assert tuple(wd.MODES) == ("auto", "on", "off")


def test_the_other_values_of_a_driver_key_are_written_back_byte_for_byte(tmp_path):
    """A driver key whose other values hivexsh's lsval does not show exactly (a REG_DWORD of
    8 bytes shown as its first 4, one of 0 bytes as ffffffff, a string with a NUL inside
    shown up to it, a REG_DWORD_BIG_ENDIAN shown as a REG_DWORD): made boot-start, every
    one of them is in the new hive as it was, and the check of the new hive compares them
    so (review helper-59: the 8-byte value came back as 4 bytes and the check passed)."""
    import shutil
    import subprocess

    from conftest import FIXTURES

    from toolkit.restore.windows_drivers import DRIVERS
    from toolkit.restore.windows_registry import read_system
    hive = tmp_path / "SYSTEM"
    shutil.copyfile(FIXTURES / "hivex" / "hivex-minimal.hive", hive)
    odd = {"Tag8": "hex:4:0100000002000000", "Empty": "hex:4:", "Nul": "hex:1:610000006200",
           "Big": "hex:5:00000001"}
    script = ["add ControlSet001", "cd ControlSet001", "add Services", "cd Services",
              "add storahci", "cd storahci", f"setval {len(odd) + 1}", "Start", "dword:3",
              *[x for kv in odd.items() for x in kv], "commit"]
    subprocess.run(["hivexsh", "-w", str(hive)], input="\n".join(script) + "\n", text=True,
                   check=True)
    key = "ControlSet001\\Services\\storahci"
    before = hivex.exact_values(str(hive), [key])[key]
    assert before["Tag8"] == (4, bytes.fromhex("0100000002000000"))
    assert before["Nul"] == (1, bytes.fromhex("610000006200")) and before["Big"][0] == 5
    system_ = read_system(str(hive), DRIVERS)
    edits, records, notes = plan_changes(system_)
    assert notes == [] and [r["value"] for r in records] == ["Start"]
    new = tmp_path / "SYSTEM.new"
    hivex.edit(str(hive), str(new), edits)
    after = hivex.exact_values(str(new), [key])[key]
    assert after == {**before, "Start": (4, bytes(4))}
    assert verify(system_, read_system(str(new), DRIVERS), edits, str(new)) == []
    cut = read_system(str(new), DRIVERS)  # a value changed behind lsval's back: found
    cut.drivers[0].exact["Tag8"] = (4, bytes.fromhex("01000000"))
    assert verify(system_, cut, edits, str(new)) == [f"{key}: values other than Start changed"]
