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


def test_an_mbr_with_an_old_gpt_header_left_at_lba_1_is_the_mbr(tmp_path, csv_disk):
    """sfdisk --wipe never with label: dos over a former GPT disk: sector 0 is a plain MBR,
    LBA 1 still holds the old, valid GPT header. libblkid reads the MBR, and so do we,
    saying the old header is there; behind a hybrid MBR (an 0xEE entry among others) or
    with no MBR at all in sector 0, the GPT is the table."""
    img = csv_disk(tmp_path / "csv.img")
    subprocess.run(["sfdisk", "-q", "--wipe", "never", str(img)], text=True, check=True,
                   input="label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=40M, type=83\n")
    with open(img, "rb") as f:
        assert f.read(1024)[512:520] == b"EFI PART"  # the old header is still there
    assert sfdisk_json(img)["label"] == "dos"
    t = ptable.read_table(str(img))
    assert (t.scheme, t.disk_id, [e.offset for e in t.entries]) == ("mbr", "1234ABCD", [MiB])
    assert t.damage == "an old GPT header remains at LBA 1; the disk is MBR"
    assert cluster.from_table(t).line() == (
        "MBR disk signature 1234ABCD (an old GPT header remains at LBA 1; the disk is MBR)")
    hybrid = csv_disk(tmp_path / "hybrid.img")
    run("sgdisk", "-h", "2", str(hybrid))  # partition 2 in the MBR, with an 0xEE entry
    assert "hybrid" in run("gdisk", "-l", str(hybrid)).lower()
    t = ptable.read_table(str(hybrid))
    assert (t.scheme, t.disk_id, t.damage) == ("gpt", GUID, None)
    bare = csv_disk(tmp_path / "bare.img")
    with open(bare, "r+b") as f:
        f.write(bytes(512))  # sector 0 gone: no MBR at all
    assert ptable.read_table(str(bare)).disk_id == GUID


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
        f"you are about to overwrite partition 2 of disk GUID {OTHER} at byte 135266304 "
        f'(ntfs "Vol2", CSV ID {OTHER}:135266304) with a copy of partition 2 of disk GUID '
        f"{GUID} (ntfs \"Vol1\"); the target's partition table stays as it is")


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


# --- issue 14 review: "the copy puts it back" only when it does ---------------------------

def _ident(disk_id, parts, scheme="gpt", fstype="ntfs"):
    """An identity of ``parts``: (number, offset, size, label) basic data partitions."""
    entries = [ptable.Entry(n, off, size, BASIC, "Microsoft basic data")
               for n, off, size, _l in parts]
    labels = {off: (fstype, label) for _n, off, _s, label in parts}
    return cluster.from_table(ptable.Table(scheme, disk_id, 512, entries), 512, labels)


TWO = _ident(GUID, [(1, MiB, 100 * MiB, "Vol1"), (2, 101 * MiB, 100 * MiB, "Vol2")])


def test_a_partition_onto_another_partition_of_the_same_disk_is_not_put_back():
    """rtk copy /dev/sdb1 /dev/sdb2: partition 2 is overwritten, said with what it holds
    (the target's own filesystem and label), at which byte."""
    lx = _ident(GUID, [(1, MiB, 100 * MiB, "Vol1"), (2, 101 * MiB, 100 * MiB, "lx")])
    lx.partitions[1].fstype = "ext4"
    c = cluster.comparison(TWO, lx, source_offset=MiB, target_offset=101 * MiB)
    assert c.verdict == cluster.DIFFERENT
    assert c.text == (f'you are about to overwrite partition 2 of disk GUID {GUID} at byte '
                      f'{101 * MiB} (ext4 "lx", CSV ID {GUID}:{101 * MiB}) with a copy of '
                      f'partition 1 of disk GUID {GUID} (ntfs "Vol1"); the target\'s '
                      "partition table stays as it is")


def test_a_partition_onto_a_whole_disk_replaces_its_partition_table():
    """rtk copy /dev/sdb1 /dev/sdc, sdc of the same disk GUID: its GPT is replaced by a
    bare filesystem at byte 0; nothing is put back."""
    c = cluster.comparison(TWO, TWO, source_offset=MiB, target_offset=None)
    assert c.verdict == cluster.DIFFERENT
    assert c.text == (f"you are about to replace the partition table of disk GUID {GUID} and "
                      f'every volume on it (ntfs "Vol1" at byte {MiB}; ntfs "Vol2" at byte '
                      f"{101 * MiB}) with a copy of partition 1 of disk GUID {GUID} "
                      '(ntfs "Vol1") alone: the target will hold that filesystem at byte 0 '
                      "and no partition table")
    whole = cluster.comparison(TWO, TWO, source_offset=None, target_offset=MiB)
    assert whole.verdict == cluster.DIFFERENT and whole.text.endswith(
        f"with a copy of the whole of disk GUID {GUID} (its partition table and every "
        "partition); the target's partition table stays as it is"), whole.text


def test_a_clone_with_the_same_guid_but_other_partitions_is_said_so():
    """A LUN cloned from the same template (or another cluster's): same disk GUID, other
    layout. Said plainly, with the TARGET's volumes that are lost."""
    other = _ident(GUID, [(1, MiB, 200 * MiB, "Vol9")])
    c = cluster.comparison(TWO, other)
    assert c.verdict == cluster.DIFFERENT
    assert c.text == (
        f"the target has the same disk GUID ({GUID}), but its partitions differ (the "
        f"source's 1 at byte {MiB} (104.9 MB, Microsoft basic data), 2 at byte {101 * MiB} "
        f"(104.9 MB, Microsoft basic data); the target's 1 at byte {MiB} (209.7 MB, "
        "Microsoft basic data)): it is another disk (a clone or a snapshot of it, or another "
        f'cluster\'s). You are about to overwrite its ntfs "Vol9" at byte {MiB} with a copy '
        f"of disk GUID {GUID} (Vol1, Vol2)")


def test_same_guid_and_partitions_but_other_volumes_is_said_so():
    other = _ident(GUID, [(1, MiB, 100 * MiB, "Vol1"), (2, 101 * MiB, 100 * MiB, "other")])
    c = cluster.comparison(TWO, other)
    assert c.verdict == cluster.DIFFERENT
    assert c.text.startswith(f"the target has the same disk GUID ({GUID}) and partitions, "
                             f'but other volumes (ntfs "other" at byte {101 * MiB} where the '
                             'source has ntfs "Vol2"): it is another disk'), c.text
    assert f'overwrite its ntfs "Vol1" at byte {MiB}; ntfs "other" at byte' in c.text


def test_the_same_disk_is_put_back_and_an_unreadable_volume_is_said():
    same = cluster.comparison(TWO, cluster.from_dict(TWO.to_dict()))
    assert same.verdict == cluster.SAME
    assert same.text == (f"this LUN held this cluster disk (disk GUID {GUID}, Vol1, Vol2): the "
                         "copy puts it back")
    damaged = _ident(GUID, [(1, MiB, 100 * MiB, None), (2, 101 * MiB, 100 * MiB, None)],
                     fstype=None)
    c = cluster.comparison(TWO, damaged)  # the volume the copy repairs reads as nothing
    assert c.verdict == cluster.SAME and c.text == (
        f"this LUN held this cluster disk (disk GUID {GUID}): the copy "
        f"puts it back (on the target now, partition 1 at byte {MiB}, partition 2 at byte "
        f"{101 * MiB} hold no filesystem that could be read)"), c.text


def test_mbr_signature_zero_is_no_identity():
    """Two unrelated MBR disks never initialised by Windows: signature 00000000 both."""
    a = _ident("00000000", [(1, MiB, 40 * MiB, "DataA")], scheme="mbr")
    b = _ident("00000000", [(1, MiB, 40 * MiB, "linuxB")], scheme="mbr")
    c = cluster.comparison(a, b)
    assert c.verdict == cluster.DIFFERENT
    assert c.text == ("neither disk has an MBR disk signature (00000000 on both: Windows never "
                      "wrote one), so nothing says they are the same: you are about to "
                      "overwrite MBR disk signature 00000000 (linuxB, CSV ID 00000000:1048576) "
                      "with a copy of MBR disk signature 00000000 (DataA)")
    assert cluster.comparison(a, a).verdict == cluster.DIFFERENT


def test_ldm_and_reserved_partitions_have_no_csv_id():
    entries = [ptable.Entry(1, MiB, 40 * MiB, "0x42", "Windows LDM (dynamic disk)"),
               ptable.Entry(2, 41 * MiB, 40 * MiB, "0x07", "NTFS/exFAT")]
    c = cluster.from_table(ptable.Table("mbr", "5F1B2C36", 512, entries))
    assert [(p.number, p.csv_id) for p in c.partitions] == [(1, None), (2, "5F1B2C36:42991616")]
    assert "CSV ID" not in c.partitions[0].line() and c.volumes_line() == (
        "partition 2 CSV ID 5F1B2C36:42991616")
    gpt = cluster.from_table(ptable.Table("gpt", GUID, 512, [
        ptable.Entry(1, MiB, MiB, MSR, "Microsoft reserved"),
        ptable.Entry(2, 2 * MiB, MiB, "af9b60a0-1431-4f62-bc68-3311714a69ad", "Windows LDM data")]))
    assert [p.csv_id for p in gpt.partitions] == [None, None]


def test_disks_of_one_guid_are_noted_unless_one_lun_seen_twice():
    a, b = disk("sdb", "SER-A", size=256 * MiB), disk("sdc", "SER-B", size=256 * MiB)
    path2 = disk("sdd", "SER-A", size=256 * MiB)  # a second path to sdb's LUN
    zero_a, zero_b = disk("sde", "SER-E"), disk("sdf", "SER-F")
    for d in (a, b, path2):
        d.cluster = cluster.from_dict(TWO.to_dict())
    for d in (zero_a, zero_b):
        d.cluster = _ident("00000000", [(1, MiB, MiB, None)], scheme="mbr")
    cluster.note_twins([a, b, path2, zero_a, zero_b])
    note = ("another disk ({}) has the same disk GUID (a clone or a snapshot of it): tell "
            "them apart by serial/LUN")
    assert (a.cluster.note, b.cluster.note, path2.cluster.note) == (
        note.format("/dev/sdc"), note.format("/dev/sdb, /dev/sdd"), note.format("/dev/sdc"))
    assert a.cluster.line() == f"GPT disk GUID {GUID}; " + note.format("/dev/sdc")
    assert cluster.from_dict(a.cluster.to_dict()).note == a.cluster.note
    assert zero_a.cluster.note is None and zero_b.cluster.note is None


def test_the_copy_summary_says_it_for_partition_ends():
    """``rtk copy /dev/sdb1 /dev/sdb2`` and ``/dev/sdb1 /dev/sdc``: the summary's sentence
    (toolkit.copy.job.cluster_sentence) is made with both ends' offsets."""
    from conftest import partition

    from toolkit.copy.job import cluster_sentence
    from toolkit.copy.plan import CopyPlan
    from toolkit.disks.endpoint import endpoint_from_disk

    sdb, sdc = disk("sdb", "SER-B", size=256 * MiB), disk("sdc", "SER-C", size=256 * MiB)
    p1, p2 = partition(sdb, 1, MiB, 100 * MiB), partition(sdb, 2, 101 * MiB, 100 * MiB)
    sdb.cluster, sdc.cluster = TWO, cluster.from_dict(TWO.to_dict())
    onto_p2 = cluster_sentence(CopyPlan(endpoint_from_disk(sdb, p1), endpoint_from_disk(sdb, p2)),
                               notable=True)
    assert onto_p2.startswith(f"you are about to overwrite partition 2 of disk GUID {GUID} at "
                              f'byte {101 * MiB} (ntfs "Vol2"'), onto_p2
    onto_disk = cluster_sentence(CopyPlan(endpoint_from_disk(sdb, p1), endpoint_from_disk(sdc)))
    assert onto_disk.startswith(f"you are about to replace the partition table of disk GUID "
                                f"{GUID}"), onto_disk
    assert cluster_sentence(CopyPlan(endpoint_from_disk(sdb), endpoint_from_disk(sdc))) \
        .startswith("this LUN held this cluster disk")
