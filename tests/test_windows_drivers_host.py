"""Windows storage drivers made boot-start after a restore, on real data: a SYSTEM hive
built with hivexsh from the hivex project's empty hive (tests/fixtures/hivex), put at
Windows/System32/config/SYSTEM in an NTFS partition (mkntfs on a loop device, GPT by
sgdisk), changed through the write gate, read back with hivexget. Also an unparsable
hive, a hive not saved cleanly, a BitLocker-looking partition, and ``rtk restore`` of a
raw image holding that partition with --windows-drivers on and off. Needs root.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FIXTURES, ROOT, MiB, rtk
from loopdev import loop_device

from toolkit.disks import gate
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks
from toolkit.restore import RestoreOptions, contents, ntfs_file, windows_drivers
from toolkit.restore.windows_registry import plan_changes, read_system
from toolkit.system import hivex

pytestmark = pytest.mark.host

MINIMAL = ROOT / "tests" / "fixtures" / "hivex" / "hivex-minimal.hive"
SETS = ("ControlSet001", "ControlSet002")
DISPLAY = "Contrôleur SATA AHCI standard"  # not ASCII: written back as the same text
OWNERS = "storahci.inf\0\0".encode("utf-16-le")  # REG_MULTI_SZ, byte for byte


def run(*cmd: str, input: str | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, input=input)
    assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr}{p.stdout}"
    return p.stdout


def _service(name: str, start: int, extra: list[str] = ()) -> list[str]:
    values = [("Start", f"dword:{start}"), ("Type", "dword:1"), ("ErrorControl", "dword:3"),
              ("ImagePath", f"expandstring:System32\\drivers\\{name}.sys"),
              ("Group", "string:SCSI miniport"), *extra]
    return [f"add {name}", f"cd {name}", f"setval {len(values)}",
            *(x for pair in values for x in pair), "cd .."]


def build_system_hive(path: Path) -> Path:
    """ControlSet001 and 002, each with Services\\storahci (Start 3, StartOverride\\0 = 3,
    a non-ASCII DisplayName, Owners), stornvme (Start 3), LSI_SAS (Start 0) and Tcpip (not
    a storage driver, Start 3); Select (Current 1, LastKnownGood 2)."""
    shutil.copyfile(MINIMAL, path)
    os.chmod(path, 0o644)  # shared/ is read-only in CI
    display = f"hex:1:{(DISPLAY + chr(0)).encode('utf-16-le').hex()}"
    script = []
    for cs in SETS:
        script += ["cd \\", f"add {cs}", f"cd {cs}", "add Services", "cd Services",
                   *_service("storahci", 3, [("DisplayName", display),
                                             ("Owners", f"hex:7:{OWNERS.hex()}")]),
                   "cd storahci", "add StartOverride", "cd StartOverride", "setval 1", "0",
                   "dword:3", "cd \\" + cs + "\\Services",
                   *_service("stornvme", 3), *_service("LSI_SAS", 0), *_service("Tcpip", 3)]
    script += ["cd \\", "add Select", "cd Select", "setval 4", "Current", "dword:1", "Default",
               "dword:1", "Failed", "dword:0", "LastKnownGood", "dword:2", "commit"]
    run("hivexsh", "-w", str(path), input="\n".join(script) + "\n")
    return path


def hivexget(hive: Path, key: str, name: str | None = None) -> str | None:
    p = subprocess.run(["hivexget", str(hive), key, *([name] if name else [])],
                       capture_output=True, text=True)
    return p.stdout.rstrip("\n") if p.returncode == 0 else None


def make_ntfs_disk(image: Path, files: dict[str, bytes], *, second: bytes | None = None,
                   size: int = 64 * MiB) -> Path:
    """``image``: GPT, p1 NTFS (mkntfs on the loop device's partition) holding ``files``
    and Windows/System32/ntoskrnl.exe; p2 (when ``second``): raw bytes at its start."""
    with open(image, "wb") as f:
        f.truncate(size)
    run("sgdisk", "-n", "1:2048:+40M", "-t", "1:0700", *(["-n", "2:0:0", "-t", "2:0700"]
                                                         if second else []), str(image))
    with loop_device(image) as dev, tempfile.TemporaryDirectory() as mnt:
        run("mkntfs", "-Q", "-F", "-L", "WINDOWS", f"{dev}p1")
        run("ntfs-3g", f"{dev}p1", mnt)
        try:
            for name, data in {"Windows/System32/ntoskrnl.exe": b"MZ" * 1000, **files}.items():
                target = Path(mnt) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        finally:
            run("umount", mnt)
        if second:
            with open(f"{dev}p2", "r+b") as f:
                f.write(second)
    return image


@pytest.fixture
def hive(tmp_path) -> Path:
    return build_system_hive(tmp_path / "SYSTEM")


@pytest.fixture
def held(loops, rtk_dirs):
    """``held(image)`` -> (plan, res, hold) for the step on the disk ``image``: the
    disk on a loop device, held by the write gate, its contents inspected."""
    holds = []

    def make(image: Path, mode: str = "on"):
        dev = loops(image, partitions=True)
        target = resolve(dev, list_disks())
        hold = gate.open_target(target)
        holds.append(hold)
        plan = SimpleNamespace(options=RestoreOptions(windows_drivers=mode), target=target)
        res = SimpleNamespace(contents=contents.inspect_disk(dev), warnings=[])
        return plan, res, hold
    yield make
    for h in holds:
        h.close()


def hive_on(node: str, path: str = "/Windows/System32/config/SYSTEM") -> bytes:
    return subprocess.run(["ntfscat", node, path], capture_output=True, check=True).stdout


EXPECTED = [(cs, key, value, old, new) for cs in SETS for key, value, old, new in (
    ("Services\\storahci", "Start", 3, 0),
    ("Services\\storahci\\StartOverride", "0", 3, None),
    ("Services\\stornvme", "Start", 3, 0))]


def test_on_makes_every_storage_driver_boot_start_in_every_control_set(tmp_path, hive, held):
    image = make_ntfs_disk(tmp_path / "disk.img",
                           {"Windows/System32/config/SYSTEM": hive.read_bytes()})
    plan, res, hold = held(image, "on")
    record = windows_drivers.run(plan, res, hold)
    (part,) = record["partitions"]
    assert part["status"] == "changed", part
    assert [(c["control_set"], c["key"], c["value"], c["old"], c["new"])
            for c in part["changes"]] == EXPECTED
    assert part["system"]["current_control_set"] == "ControlSet001"
    assert part["system"]["boot_drivers"] == ["LSI_SAS"]
    assert res.warnings == []
    hold.vouch()  # the gate holds the whole disk again
    node = plan.target.node + "p1"
    out = tmp_path / "after"
    out.write_bytes(hive_on(node))
    for cs in SETS:
        services = f"\\{cs}\\Services"
        for drv in ("storahci", "stornvme", "LSI_SAS"):
            assert hivexget(out, f"{services}\\{drv}", "Start") == "0", (cs, drv)
        assert hivexget(out, f"{services}\\storahci\\StartOverride") is None
        assert hivexget(out, f"{services}\\Tcpip", "Start") == "3"  # not a storage driver
        for absent in ("iaStorV", "megasas", "viostor", "pvscsi"):  # never created
            assert hivexget(out, f"{services}\\{absent}") is None
        # the other values are as they were: text, numbers, bytes
        assert hivexget(out, f"{services}\\storahci", "DisplayName") == DISPLAY
        assert hivexget(out, f"{services}\\storahci", "ImagePath") == \
            "System32\\drivers\\storahci.sys"
        assert hivexget(out, f"{services}\\storahci", "ErrorControl") == "3"
        assert hivexget(out, f"{services}\\storahci", "Owners") == "storahci.inf"
        assert f'"Owners"=hex(7):{",".join(f"{b:02x}" for b in OWNERS)}' in \
            hivexget(out, f"{services}\\storahci")
    assert hivexget(out, "\\Select", "LastKnownGood") == "2"
    assert subprocess.run(["ntfsfix", "-n", node], capture_output=True).returncode == 0
    rows = windows_drivers.report_rows(record)
    assert ("ControlSet002", "Services\\storahci\\StartOverride\\0: 3 -> deleted") in rows
    # a second run finds nothing left to do, and writes nothing
    before = hive_on(node)
    again = windows_drivers.run(plan, SimpleNamespace(contents=res.contents, warnings=[]),
                                hold)
    assert again["partitions"][0]["status"] == "unchanged"
    assert "every driver starts at boot already" in again["partitions"][0]["message"]
    assert hive_on(node) == before


def test_auto_on_a_loop_device_acts_and_says_why(tmp_path, hive, held):
    image = make_ntfs_disk(tmp_path / "disk.img",
                           {"Windows/System32/config/SYSTEM": hive.read_bytes()})
    plan, res, hold = held(image, "auto")
    record = windows_drivers.run(plan, res, hold)
    assert record["target_controller"]["transport"] == "loop"
    part = record["partitions"][0]
    assert part["status"] == "changed"
    assert "the disk will boot on another controller" in part["message"]


def test_off_reads_nothing_and_changes_nothing(tmp_path, hive, held):
    image = make_ntfs_disk(tmp_path / "disk.img",
                           {"Windows/System32/config/SYSTEM": hive.read_bytes()})
    plan, res, hold = held(image, "off")
    record = windows_drivers.run(plan, res, hold)
    assert record == {"mode": "off", "message": "not looked at: the Windows drivers option is off",
                      "partitions": []}
    assert hive_on(plan.target.node + "p1") == hive.read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "dirty"])
def test_a_hive_that_cannot_be_trusted_is_left_byte_for_byte(tmp_path, hive, held, damage):
    data = bytearray(hive.read_bytes())
    if damage == "garbage":
        data = bytearray(random.Random(7).randbytes(64 * 1024))
    else:  # the second sequence number behind the first: its logs were never flushed
        data[8:12] = (int.from_bytes(data[4:8], "little") - 1).to_bytes(4, "little")
        checksum = 0  # the base block's: XOR of its first 127 dwords, at 0x1fc
        for i in range(0, 0x1fc, 4):
            checksum ^= int.from_bytes(data[i:i + 4], "little")
        data[0x1fc:0x200] = checksum.to_bytes(4, "little")
    image = make_ntfs_disk(tmp_path / "disk.img", {"Windows/System32/config/SYSTEM": data})
    plan, res, hold = held(image, "on")
    part = windows_drivers.run(plan, res, hold)["partitions"][0]
    assert part["status"] == "skipped" and part["changes"] == []
    why = "the hive cannot be parsed" if damage == "garbage" else "not saved cleanly"
    assert why in part["message"] and "changed" in part["message"], part["message"]
    assert any(why in w for w in res.warnings)
    assert hive_on(plan.target.node + "p1") == bytes(data)


def test_a_bitlocker_partition_is_skipped_and_left_alone(tmp_path, hive, held):
    fve = bytearray(4096)
    fve[:11] = b"\xeb\x58\x90-FVE-FS-"
    fve[510:512] = b"\x55\xaa"
    image = make_ntfs_disk(tmp_path / "disk.img",
                           {"Windows/System32/config/SYSTEM": hive.read_bytes()},
                           second=bytes(fve))
    plan, res, hold = held(image, "on")
    node2 = plan.target.node + "p2"
    with open(node2, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    record = windows_drivers.run(plan, res, hold)
    by_number = {p["partition"]: p for p in record["partitions"]}
    assert by_number[2]["status"] == "skipped"
    assert "BitLocker" in by_number[2]["message"]
    assert any("partition 2" in w and "BitLocker" in w for w in res.warnings)
    assert by_number[1]["status"] == "changed"  # the readable Windows still is
    with open(node2, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before


def test_rtk_restore_with_the_option_on_and_off(tmp_path, hive, loops, rtk_dirs):
    # a case-insensitive path to the hive, as Windows has it on some systems
    image = make_ntfs_disk(tmp_path / "win.img",
                           {"Windows/System32/CONFIG/system": hive.read_bytes()})
    for mode in ("on", "off"):
        target = tmp_path / f"target-{mode}.img"
        with open(target, "wb") as f:
            f.truncate(96 * MiB)
        dev = loops(target)
        r = rtk("restore", str(image), dev, "--yes", "--target-id", os.path.basename(dev),
                "--windows-drivers", mode)
        assert r.returncode == 0, r.stderr + r.stdout
        subprocess.run(["partx", "-a", dev], capture_output=True)
        got = tmp_path / f"hive-{mode}"
        got.write_bytes(hive_on(dev + "p1", "/Windows/System32/CONFIG/system"))
        report = json.loads(Path(r.stdout.split("report: ")[1].split()[0]
                                 .replace(".txt", ".json")).read_text())
        drivers = report["windows_drivers"]
        if mode == "off":
            assert got.read_bytes() == hive.read_bytes()
            assert drivers["mode"] == "off"
            continue
        assert "windows drivers: partition 1: changed" in r.stdout
        part = drivers["partitions"][0]
        assert part["hive"] == "/Windows/System32/CONFIG/system"
        assert [(c["control_set"], c["key"], c["value"], c["old"], c["new"])
                for c in part["changes"]] == EXPECTED
        for cs in SETS:
            assert hivexget(got, f"\\{cs}\\Services\\storahci", "Start") == "0"
            assert hivexget(got, f"\\{cs}\\Services\\storahci\\StartOverride") is None
        text = Path(r.stdout.split("report: ")[1].split()[0]).read_text()
        assert "Windows storage drivers" in text and "storahci\\Start: 3 -> 0" in text


def test_a_control_character_elsewhere_in_the_hive_does_not_stop_the_drivers(
        tmp_path, hive, loops, rtk_dirs):
    """One string anywhere in the hive with a control character ("TCP\\x01IP" under
    Services\\Tcpip) is no XML in hivexml's output: every driver key was left "not read
    byte for byte", and the line said "every driver starts at boot already" with no warning
    (review helper-60). Now the drivers are changed; and when none can be, it is a failure
    with a warning, never "already"."""
    run("hivexsh", "-w", str(hive), input="\n".join([
        "cd \\ControlSet002\\Services\\Tcpip", "setval 1", "Description",
        "hex:1:" + "TCP\x01IP\0".encode("utf-16-le").hex(), "commit"]) + "\n")
    system = read_system(str(hive), windows_drivers.DRIVERS)
    edits, records, notes = plan_changes(system)
    assert notes == [] and len(records) == len(EXPECTED)
    image = make_ntfs_disk(tmp_path / "win.img",
                           {"Windows/System32/config/SYSTEM": hive.read_bytes()})
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(96 * MiB)
    dev = loops(target)
    r = rtk("restore", str(image), dev, "--yes", "--target-id", os.path.basename(dev),
            "--windows-drivers", "on")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "windows drivers: partition 1: changed" in r.stdout, r.stdout
    # the only driver's Start not a 4-byte REG_DWORD, nothing else to change: failed, said
    odd = tmp_path / "ODD"
    odd.write_bytes((FIXTURES / "hivex" / "hivex-minimal.hive").read_bytes())
    run("hivexsh", "-w", str(odd), input="\n".join([
        "add Select", "cd Select", "setval 1", "Current", "dword:1", "cd \\",
        "add ControlSet001", "cd ControlSet001", "add Services", "cd Services", "add storahci",
        "cd storahci", "setval 1", "Start", "hex:4:0300000000", "commit"]) + "\n")
    image = make_ntfs_disk(tmp_path / "odd.img",
                           {"Windows/System32/config/SYSTEM": odd.read_bytes()})
    dev = loops(target)
    r = rtk("restore", str(image), dev, "--yes", "--target-id", os.path.basename(dev),
            "--windows-drivers", "on")
    assert r.returncode == 0, r.stderr + r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("windows drivers:"))
    assert line.startswith("windows drivers: partition 1: failed: ") and \
        "every driver starts at boot already" not in line, line
    assert line.endswith("ControlSet001\\Services\\storahci: Start is a REG_DWORD of 5 "
                         "bytes, not 4: not changed"), line
    assert "warning: Windows storage drivers, partition 1" in r.stderr, r.stderr


# --- the hivex wrapper on hive files -------------------------------------------------------

TRICKY = [("a\"b\\c", "string:x\"y\\z"), ("Blob", "hex:3:00ff10"),
          ("Q", "hex:11:8877665544332211"),
          ("Name", f"hex:1:{('Größe' + chr(0)).encode('utf-16-le').hex()}"),
          ("Empty", "hex:3:"), ("CR", "hex:1:61000d0062000000"),  # "a\rb"
          ("Start", "dword:3")]


def test_a_key_is_rewritten_with_every_other_value_as_it_was(hive, tmp_path):
    script = ["cd \\ControlSet001\\Services", "add Odd", "cd Odd", f"setval {len(TRICKY)}",
              *(x for pair in TRICKY for x in pair), "commit"]
    run("hivexsh", "-w", str(hive), input="\n".join(script) + "\n")
    key = hivex.read(str(hive), ["ControlSet001\\Services\\Odd"])["ControlSet001\\Services\\Odd"]
    assert key.values[0].name == 'a"b\\c'
    assert [v.shown() for v in key.values] == ['x"y\\z', "00ff10", "8877665544332211", "Größe",
                                               "", "a\rb", 3]
    values = tuple(hivex.Value("Start", 4, 0) if v.name == "Start" else v for v in key.values)
    new = tmp_path / "new"
    hivex.edit(str(hive), str(new), [hivex.SetValues(key.path, values)])
    again = hivex.read(str(new), [key.path])[key.path]
    assert again.values == list(values)
    assert hivexget(new, "\\ControlSet001\\Services\\Odd", "Name") == "Größe"
    with pytest.raises(ValueError, match="not a new file"):
        hivex.edit(str(hive), str(new), [hivex.Delete(key.path)])
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"x" * 9000)
    with pytest.raises(hivex.HiveError, match="not a registry hive"):
        hivex.subkeys(str(garbage), "\\")


def test_a_driver_key_hivexsh_shows_ambiguously_is_left_alone(hive):
    two_lines = ("two\nlines" + chr(0)).encode("utf-16-le").hex()
    run("hivexsh", "-w", str(hive), input="\n".join([
        "cd \\ControlSet002\\Services\\stornvme", "setval 2", "Start", "dword:3",
        "Description", f"hex:1:{two_lines}", "commit"]) + "\n")
    system = read_system(str(hive), windows_drivers.DRIVERS)
    edits, records, notes = plan_changes(system)
    assert [n.split(" could not")[0] for n in notes] == ["ControlSet002\\Services\\stornvme"]
    assert all(e.path != "ControlSet002\\Services\\stornvme" for e in edits)
    assert len(records) == 5  # the rest is changed as usual


def test_without_select_the_first_control_set_is_taken_and_said(tmp_path):
    path = build_system_hive(tmp_path / "SYSTEM")
    run("hivexsh", "-w", str(path), input="cd \\Select\ndel\ncommit\n")
    system = read_system(str(path), windows_drivers.DRIVERS)
    assert system.current == "ControlSet001"
    assert system.current_from == "no Select\\Current: ControlSet001 taken"
    assert system.boot_drivers() == ["LSI_SAS"]


def _mounted(node: str) -> bool:
    real = os.path.realpath(node)
    return any(line.split()[0] in (node, real) for line in open("/proc/mounts"))


def test_a_volume_windows_left_hibernated_is_not_mounted_for_writing(tmp_path, hive, held):
    image = make_ntfs_disk(tmp_path / "disk.img", {
        "Windows/System32/config/SYSTEM": hive.read_bytes(),
        "hiberfil.sys": b"HIBR" + bytes(8188)})  # what ntfs-3g looks for
    plan, res, hold = held(image, "on")
    part = windows_drivers.run(plan, res, hold)["partitions"][0]
    node = plan.target.node + "p1"
    assert part["status"] == "failed" and part["changes"] == []
    assert "ntfs-3g mounts" in part["message"] and "only read-only" in part["message"]
    assert "hibernated" in part["message"]
    assert any("nothing written" in w for w in res.warnings)
    assert not _mounted(node)
    hold.vouch()
    assert hive_on(node) == hive.read_bytes()


def test_the_mount_is_undone_when_the_write_is_refused(tmp_path, hive, held):
    image = make_ntfs_disk(tmp_path / "disk.img",
                           {"Windows/System32/config/SYSTEM": hive.read_bytes()})
    plan, res, hold = held(image, "on")
    node = plan.target.node + "p1"
    path = "/Windows/System32/config/SYSTEM"
    with pytest.raises(ntfs_file.NtfsError, match="not the file that was read"):
        ntfs_file.rewrite(node, path, b"new", was_sha256="0" * 64, hold=hold)
    assert not _mounted(node)
    hold.vouch()  # the gate holds the whole disk again
    assert hive_on(node) == hive.read_bytes()
    with pytest.raises(ntfs_file.NtfsError, match="while the write gate holds"):
        ntfs_file.rewrite(node, path, b"new", was_sha256="0" * 64, hold=None)
