"""Cluster disk identity (toolkit.disks.ptable, toolkit.disks.cluster) on image files
partitioned by the real tools (sgdisk, sfdisk), parsed by our code and compared with
what ``sgdisk -p`` and ``sfdisk --json`` say of the same file; damaged tables made by
overwriting bytes of those; the statement before a copy; the report's fields."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import MiB, disk
from loopdev import make_image, run

from toolkit.disks import cluster, ptable
from toolkit.disks.identity import identity_of

pytestmark = pytest.mark.unit

GUID = "41a4e9d6-472e-4777-ad08-953687110317"
OTHER = "9b1c7e2a-0d4f-4c55-8a31-2f6e5d4c3b2a"
BASIC, MSR = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "e3c9e316-0b5c-4db8-817d-f92df00215ae"


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict:
    """Cluster disks as Windows lays them out, one per disk GUID: a 127 MiB Microsoft
    reserved partition at 1 MiB, the basic data partition at 129 MiB (byte 135266304,
    the issue's CSV ID). Made once (sgdisk takes a second to write): copied per test."""
    out = {}
    for guid in (GUID, OTHER):
        path = make_image(tmp_path_factory.mktemp("csv") / "csv.img", 256 * MiB)
        run("sgdisk", "-U", guid, "-n1:2048:262177", "-t1:0c01",
            "-c1:Microsoft reserved partition", "-n2:264192:0", "-t2:0700",
            "-c2:Basic data partition", str(path))
        out[guid] = path
    return out


@pytest.fixture
def csv_disk(templates):
    """``csv_disk(path, guid=GUID)``: a copy of that GUID's cluster disk at ``path``."""
    def make(path, guid: str = GUID):
        run("cp", "--sparse=always", str(templates[guid]), str(path))
        return path
    return make


def sfdisk_json(path) -> dict:
    return json.loads(run("sfdisk", "--json", str(path)))["partitiontable"]


def test_gpt_matches_sgdisk_and_sfdisk(tmp_path, csv_disk):
    img = csv_disk(tmp_path / "csv.img")
    t = ptable.read_table(str(img))
    printed = run("sgdisk", "-p", str(img))
    assert re.search(r"Disk identifier \(GUID\): (\S+)", printed).group(1).lower() == GUID
    assert (t.scheme, t.disk_id, t.sector_size, t.damage) == ("gpt", GUID, 512, None)
    listed = [(int(n), int(start), code, name.strip()) for n, start, _end, _s, _u, code, name
              in re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+) (\S+)\s+(\w{4})\s+(.*)$",
                            printed, re.M)]
    assert [(e.number, e.offset // 512) for e in t.entries] == [(n, s) for n, s, *_ in listed]
    js = sfdisk_json(img)
    assert js["id"].lower() == GUID
    assert [(e.offset // 512, e.size // 512, e.type, e.guid, e.name) for e in t.entries] == [
        (p["start"], p["size"], p["type"].lower(), p["uuid"].lower(), p["name"])
        for p in js["partitions"]]
    assert [e.type_name for e in t.entries] == ["Microsoft reserved", "Microsoft basic data"]


def test_csv_id_is_disk_guid_and_byte_offset(tmp_path, csv_disk):
    c = cluster.read_identity(str(csv_disk(tmp_path / "csv.img")),
                              labels={135266304: ("ntfs", "Vol1")})
    data = c.volumes()
    assert [p.number for p in data] == [2]  # the reserved partition is no volume
    assert data[0].csv_id == f"{GUID}:135266304"
    assert c.volumes_line() == f'"Vol1" CSV ID {GUID}:135266304'
    assert c.line() == f"GPT disk GUID {GUID}"
    assert data[0].line() == (f'2 at byte 135266304, 133.2 MB, Microsoft basic data, ntfs '
                              f'"Vol1", CSV ID {GUID}:135266304')
    again = cluster.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    assert c.to_dict()["partitions"][1]["csv_id"] == f"{GUID}:135266304"


def test_mbr_signature_and_logical_partitions_match_sfdisk(tmp_path):
    img = make_image(tmp_path / "mbr.img", 64 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], check=True, text=True, input=(
        "label: dos\n"
        f"{img}1 : start=2048, size=16384, type=7, bootable\n"
        f"{img}2 : start=18432, size=81920, type=5\n"
        f"{img}5 : start=20480, size=16384, type=83\n"
        f"{img}6 : start=38912, size=20480, type=7\n"
        f"{img}3 : start=100352, size=8192, type=c\n"))
    run("sfdisk", "--disk-id", str(img), "0x5f1b2c36")
    c = cluster.read_identity(str(img))
    js = sfdisk_json(img)
    assert js["id"] == "0x5f1b2c36"
    assert (c.scheme, c.disk_id) == ("mbr", "5F1B2C36")  # as diskpart's uniqueid shows it
    assert c.line() == "MBR disk signature 5F1B2C36"
    by_number = {int(p["node"].removeprefix(str(img))): p for p in js["partitions"]}
    assert {p.number: (p.offset // 512, p.size // 512, int(p.type, 16)) for p in c.partitions} \
        == {n: (p["start"], p["size"], int(p["type"], 16)) for n, p in by_number.items()}
    assert [p.csv_id for p in c.volumes()] == [
        "5F1B2C36:1048576", "5F1B2C36:51380224", "5F1B2C36:10485760", "5F1B2C36:19922944"]
    assert 2 not in [p.number for p in c.volumes()]  # the extended container is no volume


def sgdisk_verify(path) -> str:
    """What ``sgdisk -v`` says of the image (the tool's own view of the damage)."""
    p = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True)
    return p.stdout + p.stderr


def _corrupt(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_damaged_primary_header_is_read_from_the_backup(tmp_path, csv_disk):
    img = csv_disk(tmp_path / "csv.img")
    _corrupt(img, 512 + 56)  # a byte of the disk GUID in the primary header
    assert "Main header: ERROR\nBackup header: OK" in sgdisk_verify(img)
    t = ptable.read_table(str(img))
    last = 256 * MiB // 512 - 1
    assert t.damage == (f"GPT header damaged (header CRC wrong): read from the backup header "
                        f"at LBA {last}")
    assert t.disk_id == GUID and [e.offset for e in t.entries] == [1048576, 135266304]
    assert cluster.from_table(t).line().startswith(f"GPT disk GUID {GUID} (GPT header damaged")


def test_damaged_primary_entries_are_read_from_the_backup(tmp_path, csv_disk):
    img = csv_disk(tmp_path / "csv.img")
    _corrupt(img, 1024 + 128 + 40)  # partition 2's first LBA in the primary entry array
    assert "Main partition table: ERROR\nBackup partition table: OK" in sgdisk_verify(img)
    t = ptable.read_table(str(img))
    assert t.damage.startswith("GPT partition entries damaged (CRC wrong): read from the "
                               "backup header")
    assert [e.offset for e in t.entries] == [1048576, 135266304]


def test_both_headers_damaged(tmp_path, csv_disk):
    img = csv_disk(tmp_path / "csv.img")
    _corrupt(img, 512 + 56)
    _corrupt(img, 256 * MiB - 512 + 56)
    t = ptable.read_table(str(img))
    assert (t.scheme, t.disk_id, t.entries) == ("gpt", None, [])
    assert "neither the primary nor the backup GPT header is valid" in t.damage
    c = cluster.from_table(t)
    assert c.line() == t.damage and c.volumes_line() == "no volumes"


def test_an_mbr_over_an_old_gpt_is_the_mbr(tmp_path, csv_disk):
    """Repartitioned with MBR, a disk keeps its old GPT's backup at its end: not the table
    (there is no protective MBR and no GPT at LBA 1), as libblkid and sfdisk see it."""
    img = csv_disk(tmp_path / "csv.img")
    with open(img, "r+b") as f:
        f.write(bytes(34 * 512))  # MBR, primary header and entries gone; the backup stays
    subprocess.run(["sfdisk", "-q", "--wipe", "never", str(img)], input=",64M,7\n",
                   text=True, check=True)
    assert sfdisk_json(img)["label"] == "dos"
    t = ptable.read_table(str(img))
    assert (t.scheme, t.damage) == ("mbr", None)
    assert t.disk_id == sfdisk_json(img)["id"].removeprefix("0x").upper()


def test_whole_disk_filesystems_and_blank_disks_hold_no_table(tmp_path):
    fat = make_image(tmp_path / "fat.img", 64 * MiB)
    run("mkfs.vfat", "-n", "ESP", str(fat))  # ends its boot sector with 0x55AA too
    ntfs = make_image(tmp_path / "ntfs.img", 64 * MiB)
    run("mkntfs", "-Q", "-F", "-L", "Vol1", str(ntfs))
    blank = make_image(tmp_path / "blank.img", 8 * MiB)
    for img in (fat, ntfs, blank):
        assert ptable.read_table(str(img)) is None, img
        assert cluster.read_identity(str(img)).line() == "no partition table"


def test_garbage_short_and_implausible_tables_are_no_error(tmp_path, csv_disk):
    import os
    import random
    import struct
    import zlib

    rng = random.Random(14)
    cases = {"tiny": b"\x55\xaa" * 50, "one-sector": bytes(510) + b"\x55\xaa",
             "efi-garbage": bytes(510) + b"\x55\xaa" + b"EFI PART" + os.urandom(4000)}
    for i in range(20):
        raw = bytearray(rng.randbytes(8192))
        raw[510:512] = b"\x55\xaa"
        raw[0x1BE::16] = bytes(len(raw[0x1BE::16]))  # plausible boot flags, random rest
        cases[f"random{i}"] = bytes(raw)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        ptable.read_table(str(tmp_path / name))  # a Table or None, never an exception
    # a header whose CRC is right but whose entry array would be 4 GiB: refused, said
    img = csv_disk(tmp_path / "csv.img")
    with open(img, "r+b") as f:
        f.seek(512)
        header = bytearray(f.read(92))
        struct.pack_into("<I", header, 80, 1 << 25)  # number of entries
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(header))
        f.seek(512)
        f.write(header)
    t = ptable.read_table(str(img))
    assert t.damage.startswith("GPT header damaged (entry array implausible): read from the "
                               "backup")
    assert len(t.entries) == 2


def test_the_statement_before_a_copy(tmp_path, csv_disk):
    vol1 = cluster.read_identity(str(csv_disk(tmp_path / "a.img")),
                                 labels={135266304: ("ntfs", "Vol1")})
    vol2 = cluster.read_identity(str(csv_disk(tmp_path / "b.img", OTHER)),
                                 labels={135266304: ("ntfs", "Vol2")})
    blank = cluster.read_identity(str(make_image(tmp_path / "c.img", 8 * MiB)))
    same = cluster.comparison(vol1, vol1)
    assert same.verdict == cluster.SAME
    assert same.text == (f"this LUN held this cluster disk (disk GUID {GUID}, Vol1): the "
                         "copy puts it back")
    assert cluster.compare(vol1, vol2) == (
        f"you are about to overwrite disk GUID {OTHER} (Vol2, CSV ID {OTHER}:135266304) "
        f"with a copy of disk GUID {GUID} (Vol1)")
    assert cluster.compare(vol1, blank) == (
        f"the target holds no partition table: the copy brings disk GUID {GUID} "
        f"(Vol1, CSV ID {GUID}:135266304)")
    assert cluster.compare(blank, vol2) == (
        f"the source holds no partition table: the copy replaces disk GUID {OTHER} "
        f"(Vol2, CSV ID {OTHER}:135266304) on the target")
    assert cluster.comparison(vol1, None).verdict == cluster.UNKNOWN
    # the JSON forms (a report's) compare the same; one partition of each end
    assert cluster.compare(vol1.to_dict(), vol2.to_dict(), source_offset=135266304,
                           target_offset=135266304) == (
        f"you are about to overwrite partition 2 of disk GUID {OTHER} (Vol2, CSV ID "
        f"{OTHER}:135266304) with a copy of partition 2 of disk GUID {GUID} (Vol1)")


def test_mbr_and_gpt_of_the_same_numbers_are_different_disks(tmp_path):
    gpt = cluster.ClusterIdentity("gpt", GUID, 512)
    mbr = cluster.ClusterIdentity("mbr", "5F1B2C36", 512)
    assert cluster.comparison(mbr, gpt).verdict == cluster.DIFFERENT
    assert cluster.compare(mbr, gpt) == (f"you are about to overwrite disk GUID {GUID} with a "
                                         "copy of MBR disk signature 5F1B2C36")


def test_unreadable_or_hanging_disks_have_no_identity(monkeypatch):
    assert cluster.of_disk(disk("nosuchdisk")) is None  # /dev/nosuchdisk: no error either
    assert cluster.of_disk(disk("sr0", transport="cdrom")) is None

    def hangs(path, sector_size=None):
        time.sleep(5)
    monkeypatch.setattr(ptable, "read_table", hangs)
    monkeypatch.setattr(cluster.os.path, "exists", lambda p: True)
    start = time.monotonic()
    assert cluster.of_disk(disk("sdq"), timeout=0.3) is None
    assert time.monotonic() - start < 2


def test_identity_record_and_report_carry_both_ends(tmp_path, csv_disk):
    from toolkit.copy import report
    from toolkit.copy.result import CopyResult

    a, b = disk("sdb", "SRC1", size=256 * MiB), disk("sdc", "TGT1", size=256 * MiB)
    a.cluster = cluster.read_identity(str(csv_disk(tmp_path / "a.img")),
                                      labels={135266304: ("ntfs", "Vol1")})
    b.cluster = cluster.read_identity(str(csv_disk(tmp_path / "b.img", OTHER)),
                                      labels={135266304: ("ntfs", "Vol2")})
    src, dst = identity_of(a).to_dict(), identity_of(b).to_dict()
    assert src["cluster"]["disk_id"] == GUID
    r = CopyResult(operation="copy", status="ok", message="copied", source=src, target=dst,
                   size=256 * MiB, started=1.0, finished=2.0, algorithm="blake3")
    data = report.report_data(r)
    assert data["cluster"]["verdict"] == cluster.DIFFERENT
    assert data["target"]["cluster"]["partitions"][1]["csv_id"] == f"{OTHER}:135266304"
    text = report.report_text(r)
    assert f"CSV ID {OTHER}:135266304" in text and f"CSV ID {GUID}:135266304" in text
    assert f"you are about to overwrite disk GUID {OTHER}" in text
    r.target = identity_of(disk("sdd")).to_dict()  # an end not read: said, no error
    assert "not read" in report.report_text(r)
    assert report.report_data(r)["cluster"]["verdict"] == cluster.UNKNOWN
