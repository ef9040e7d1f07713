"""Cluster disk identity on real loop devices: GPT made by sgdisk, MBR by sfdisk, NTFS
volumes by mkntfs -L; what ``rtk disks`` (text and --json) shows is checked against what
sgdisk and sfdisk say of the same device. 4Kn disks (a loop device with 4096-byte
sectors), a damaged primary GPT, partitions the kernel does not list."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import MiB
from loopdev import make_image, run

from toolkit.cli.main import main as rtk

pytestmark = pytest.mark.host

GUID = "41a4e9d6-472e-4777-ad08-953687110317"


def gpt_image(path, guid: str = GUID, size: int = 256 * MiB):
    """Windows' layout of a cluster disk: Microsoft reserved at 1 MiB, basic data after."""
    make_image(path, size)
    run("sgdisk", "-U", guid, "-n1:1M:+128M", "-t1:0c01", "-c1:Microsoft reserved partition",
        "-n2:0:0", "-t2:0700", "-c2:Basic data partition", str(path))
    return path


def sgdisk_facts(dev: str, number: int = 2) -> tuple[str, int, int]:
    """(disk GUID, partition ``number``'s first sector, the sector size) per sgdisk."""
    printed = run("sgdisk", "-p", dev)
    guid = re.search(r"Disk identifier \(GUID\): (\S+)", printed).group(1).lower()
    sector = int(re.search(r"Sector size \(logical[/a-z]*\): (\d+)", printed).group(1))
    first = int(re.search(r"First sector: (\d+)", run("sgdisk", "-i", str(number), dev))
                .group(1))
    return guid, first, sector


def listed(capsys, dev: str) -> tuple[dict, list[str]]:
    """``rtk disks --json``'s entry for ``dev`` and ``rtk disks``' lines under it."""
    assert rtk(["disks", "--json"]) == 0
    entry = {d["path"]: d for d in json.loads(capsys.readouterr().out)}[dev]
    assert rtk(["disks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(dev + " "))
    under = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        under.append(line.strip())
    return entry, under


@pytest.fixture
def gpt_disk(tmp_path, loops):
    dev = loops(gpt_image(tmp_path / "csv.img"), partitions=True)
    run("mkntfs", "-Q", "-F", "-L", "Vol1", f"{dev}p2")
    return dev


def test_rtk_disks_shows_guid_offset_type_label_and_csv_id(gpt_disk, capsys):
    dev = gpt_disk
    guid, first, sector = sgdisk_facts(dev)
    offset = first * sector
    assert (guid, offset) == (GUID, 135266304)
    entry, lines = listed(capsys, dev)
    c = entry["cluster"]
    assert (c["scheme"], c["disk_id"], c["sector_size"], c["damage"]) == ("gpt", guid, 512, None)
    p2 = c["partitions"][1]
    assert (p2["number"], p2["offset"], p2["type_name"], p2["fstype"], p2["label"],
            p2["csv_id"]) == (2, offset, "Microsoft basic data", "ntfs", "Vol1",
                              f"{guid}:{offset}")
    assert c["partitions"][0]["type"] == "e3c9e316-0b5c-4db8-817d-f92df00215ae"
    assert lines[0] == f"GPT disk GUID {guid}"
    line = next(x for x in lines if x.startswith(f"{dev}p2 "))
    assert re.search(rf'ntfs "Vol1"\s+partition 2 at byte {offset}, Microsoft basic data, '
                     rf"CSV ID {guid}:{offset}$", line), line


def test_partitions_the_kernel_does_not_list_still_show_their_label(gpt_disk, capsys):
    dev = gpt_disk
    run("partx", "-d", dev)  # the table is read from the disk, the label by blkid --offset
    entry, lines = listed(capsys, dev)
    assert entry["partitions"] == []
    p2 = entry["cluster"]["partitions"][1]
    assert (p2["label"], p2["csv_id"]) == ("Vol1", f"{GUID}:135266304")
    assert any(x.startswith("-") and f"CSV ID {GUID}:135266304" in x and '"Vol1"' in x
               for x in lines), lines


def test_mbr_disk_signature_as_windows_shows_it(tmp_path, loops, capsys):
    img = make_image(tmp_path / "mbr.img", 64 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], input=",32M,7\n,,83\n", text=True, check=True)
    run("sfdisk", "--disk-id", str(img), "0x5f1b2c36")
    dev = loops(img, partitions=True)
    run("mkntfs", "-Q", "-F", "-L", "Vol1", f"{dev}p1")
    table = json.loads(run("sfdisk", "--json", dev))["partitiontable"]
    entry, lines = listed(capsys, dev)
    c = entry["cluster"]
    assert table["id"] == "0x5f1b2c36" and (c["scheme"], c["disk_id"]) == ("mbr", "5F1B2C36")
    offset = table["partitions"][0]["start"] * 512
    assert [(p["number"], p["offset"], p["type"]) for p in c["partitions"]] == [
        (1, offset, "0x07"), (2, table["partitions"][1]["start"] * 512, "0x83")]
    assert c["partitions"][0]["csv_id"] == f"5F1B2C36:{offset}"
    assert lines[0] == "MBR disk signature 5F1B2C36"
    assert any('ntfs "Vol1"' in x and f"CSV ID 5F1B2C36:{offset}" in x for x in lines), lines


def test_4kn_disk_gpt_at_byte_4096(tmp_path, loops, capsys):
    img = make_image(tmp_path / "4kn.img", 256 * MiB)
    dev = loops(img, sector_size=4096)
    run("sgdisk", "-U", GUID, "-n1:1M:+128M", "-t1:0c01", "-n2:0:0", "-t2:0700", dev)
    run("partx", "-a", dev)
    run("mkntfs", "-Q", "-F", "-L", "Vol4K", f"{dev}p2")
    guid, first, sector = sgdisk_facts(dev)
    assert (guid, sector) == (GUID, 4096)
    with open(img, "rb") as f:
        head = f.read(8192)
    assert head[4096:4104] == b"EFI PART" and head[512:520] != b"EFI PART"
    entry, lines = listed(capsys, dev)
    c = entry["cluster"]
    assert (c["disk_id"], c["sector_size"], c["damage"]) == (GUID, 4096, None)
    p2 = c["partitions"][1]
    assert (p2["offset"], p2["label"], p2["csv_id"]) == (first * 4096, "Vol4K",
                                                         f"{GUID}:{first * 4096}")


def test_damaged_primary_gpt_is_said_and_read_from_the_backup(tmp_path, loops, capsys):
    img = gpt_image(tmp_path / "csv.img")
    with open(img, "r+b") as f:  # one byte of the primary header's disk GUID
        f.seek(512 + 56)
        b = f.read(1)
        f.seek(512 + 56)
        f.write(bytes([b[0] ^ 0xFF]))
    dev = loops(img)
    entry, lines = listed(capsys, dev)
    c = entry["cluster"]
    assert c["disk_id"] == GUID
    assert c["damage"].startswith("GPT header damaged (header CRC wrong): read from the backup")
    assert [p["offset"] for p in c["partitions"]] == [1 * MiB, 129 * MiB]
    assert lines[0].startswith(f"GPT disk GUID {GUID} (GPT header damaged")


def test_whole_disk_ntfs_has_no_partition_table(tmp_path, loops, capsys):
    img = make_image(tmp_path / "whole.img", 32 * MiB)
    run("mkntfs", "-Q", "-F", "-L", "Whole", str(img))
    dev = loops(img)
    entry, lines = listed(capsys, dev)
    assert entry["cluster"]["scheme"] is None and entry["cluster"]["partitions"] == []
    assert entry["label"] == "Whole" and not any("CSV ID" in x for x in lines)


def test_gpt_for_512_byte_sectors_on_a_4kn_disk_is_said(tmp_path, loops, capsys):
    """A 512-byte-sector disk's image written onto a 4Kn LUN: Windows will not read it."""
    dev = loops(gpt_image(tmp_path / "csv.img"), sector_size=4096)
    entry, lines = listed(capsys, dev)
    c = entry["cluster"]
    assert (c["disk_id"], c["sector_size"]) == (GUID, 512)
    assert c["damage"] == ("GPT laid out for 512-byte sectors on a disk of 4096-byte sectors: "
                           "Windows will not read it")
    assert c["partitions"][1]["csv_id"] == f"{GUID}:135266304"


def test_an_mbr_disk_with_an_old_gpt_header_left_at_lba_1_is_an_mbr_disk(tmp_path, loops,
                                                                          capsys):
    """sfdisk --wipe never over a former GPT disk: sector 0 is a plain MBR (no 0xEE
    entry), LBA 1 still holds the old, valid GPT header. libblkid, the kernel and Windows
    read the MBR; so does ``rtk disks``, and it says the old header is there."""
    img = make_image(tmp_path / "d.img", 64 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\nsize=20M\nsize=20M\n",
                   text=True, check=True, capture_output=True)
    subprocess.run(["sfdisk", "-q", "--wipe", "never", str(img)],
                   input="label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=40M, type=83\n",
                   text=True, check=True, capture_output=True)
    dev = loops(img)
    assert 'PTTYPE="dos"' in run("blkid", "-p", dev)
    entry, lines = listed(capsys, dev)
    c = entry["cluster"]
    assert (c["scheme"], c["disk_id"]) == ("mbr", "1234ABCD")
    assert [(p["number"], p["offset"], p["type"]) for p in c["partitions"]] == [
        (1, MiB, "0x83")]
    assert lines[0] == ("MBR disk signature 1234ABCD (an old GPT header remains at LBA 1; "
                        "the disk is MBR)")


def test_two_disks_of_one_guid_are_noted_and_ldm_has_no_csv_id(tmp_path, loops, capsys):
    """A LUN and its clone (the same image twice): identical CSV IDs, so each says another
    disk has its disk GUID. A dynamic disk's LDM partition (0x42) shows no CSV ID."""
    import uuid
    guid = str(uuid.uuid4())  # this test's own: the machine is shared
    a = loops(gpt_image(tmp_path / "a.img", guid))
    run("cp", "--sparse=always", str(tmp_path / "a.img"), str(tmp_path / "b.img"))
    b = loops(tmp_path / "b.img")
    note = "has the same disk GUID (a clone or a snapshot of it): tell them apart by serial/LUN"
    entry_a, lines_a = listed(capsys, a)
    _entry_b, lines_b = listed(capsys, b)
    assert lines_a[0].startswith(f"GPT disk GUID {guid}; another disk (") and note in lines_a[0]
    assert b in lines_a[0] and a in lines_b[0], (lines_a[0], lines_b[0])
    assert note in entry_a["cluster"]["note"]
    ldm = make_image(tmp_path / "ldm.img", 32 * MiB)
    subprocess.run(["sfdisk", "-q", str(ldm)], input="label: dos\nstart=2048, type=42\n",
                   text=True, check=True, capture_output=True)
    dev = loops(ldm)
    entry, lines = listed(capsys, dev)
    assert entry["cluster"]["partitions"][0]["csv_id"] is None
    assert any("partition 1 at byte 1048576, Windows LDM" in x for x in lines), lines
    assert not any("CSV ID" in x for x in lines), lines
