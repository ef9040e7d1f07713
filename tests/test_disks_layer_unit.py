"""The shared disks layer on inventory objects: may a disk be written
(eligibility), do two ends overlap (overlap), the identity record, and the one
iSCSI portal formatter."""

from __future__ import annotations

import json

import pytest
from conftest import MiB, disk, guest_probe
from conftest import partition as part

from toolkit.disks.eligibility import writable_problems
from toolkit.disks.endpoint import endpoint_from_disk as E
from toolkit.disks.identity import identity_of
from toolkit.disks.inventory import IscsiLocation, Partition, disks_from_probe, find_disk
from toolkit.disks.overlap import overlap_problem
from toolkit.iscsi import parse
from toolkit.iscsi.portal import format_portal, split_portal
from toolkit.iscsi.sessions import Session
from toolkit.restore import checks
from toolkit.unattended.selectors import IscsiLun, describe

pytestmark = pytest.mark.unit


# --- portal ---------------------------------------------------------------------------

@pytest.mark.parametrize("host, port, shown", [
    ("10.0.0.5", 3260, "10.0.0.5:3260"),
    ("fd00::5", 3260, "[fd00::5]:3260"),
    ("[fd00::5]", 3261, "[fd00::5]:3261"),  # already bracketed: not twice
    ("san.example.com", 3262, "san.example.com:3262"),
    ("10.0.2.2", "3260", "10.0.2.2:3260"),  # as sysfs gives it
    (None, None, "?:?"),  # a half-torn session
])
def test_format_portal(host, port, shown):
    assert format_portal(host, port) == shown


@pytest.mark.parametrize("host, port", [("10.0.0.5", 3260), ("fd00::5", 3261),
                                        ("san.example.com", 3262)])
def test_split_portal_reads_what_format_portal_writes(host, port):
    assert split_portal(format_portal(host, port)) == (host, port)


def test_split_portal_defaults_and_errors():
    assert split_portal("fd00::5") == ("fd00::5", 3260)
    assert split_portal("san.example.com", 3262) == ("san.example.com", 3262)
    for bad, why in (("", "no address"), ("host:x", "not a number"), ("h:70000", "outside")):
        with pytest.raises(ValueError, match=why):
            split_portal(bad)


def test_every_portal_keeps_the_brackets_of_ipv6():
    v6 = "[fd00::5]:3260"
    assert Session(1, "session1", "iqn.x:t", "fd00::5", 3260, None, None).portal == v6
    assert IscsiLun("SOURCE", "fd00::5", "iqn.2000-01.com.x:t").portal == v6
    assert parse.parse_portal_records(f"{v6},1 iqn.2000-01.com.x:t")[0].portal == v6
    line = parse.parse_session_list(f"tcp: [3] {v6},1 iqn.2000-01.com.x:t (non-flash)")[0]
    assert (line.sid, line.transport, line.address, line.portal) == (3, "tcp", "fd00::5", v6)
    probe = guest_probe()
    probe["iscsi_sessions"]["session1"]["address"] = "fd00::5"
    assert find_disk(disks_from_probe(probe), "/dev/sda").iscsi.portal == v6


# --- may this disk be written -----------------------------------------------------------

def test_writable_problems_name_the_use():
    assert writable_problems(E(disk(serial="B"))) == []
    for kw, word in (({"mountpoints": ["/mnt"]}, "in use: mounted at /mnt"),
                     ({"swap": True}, "in use: in use as swap"),
                     ({"holders": ["md0"]}, "in use: held by md0"),
                     ({"boot_medium": True}, "in use: boot medium of this live system"),
                     ({"read_only": True}, "is read-only")):
        (msg,) = writable_problems(E(disk(serial="B", **kw)))
        assert msg.startswith("the target /dev/sdb ") and word in msg, (kw, msg)
    d = disk(serial="B", boot_medium=True)
    (msg,) = writable_problems(E(d, part(d, 1, MiB, MiB)))
    assert "partition of /dev/sdb, the boot medium" in msg


def test_a_source_role_disk_is_never_writable():
    snap = disk("sdc", serial="SNAP1", transport="iscsi",
                iscsi=IscsiLocation("iqn.2000-01.bdr:snap", "10.0.0.5:3260", 1, "session1"))
    for role in ({"/dev/sdc"}, {"SNAP1"}, {"iqn.2000-01.bdr:snap:1"}):
        (msg,) = writable_problems(E(snap), role)
        assert "attached as SOURCE" in msg and "serial SNAP1" in msg
    assert writable_problems(E(snap), {"OTHER"}) == []


# --- do these two overlap -------------------------------------------------------------

def test_overlap_messages_name_the_other_side():
    d = disk("loop1", transport="loop", backing_file="/var/tmp/t.img")
    p2 = part(d, 2, 40 * MiB, 40 * MiB)
    msg = overlap_problem(E(d, p2), E(d), "image")
    assert msg.startswith("the target /dev/loop1 (") and "holds the image partition " \
        "/dev/loop12" in msg and "same " in msg
    msg = overlap_problem(E(d), E(d, p2))
    assert "is a partition of the source /dev/loop1" in msg
    assert "the target is the image" in overlap_problem(E(d), E(d, path="/dev/x"), "image")
    other = disk("loop2", transport="loop", backing_file="/var/tmp/./t.img")
    assert "same disk as the image" in overlap_problem(E(other), E(d), "image")
    assert overlap_problem(E(disk("sda", serial="A")), E(disk("sdb", serial="B"))) is None


def test_partitions_apart_on_one_disk_do_not_overlap():
    d = disk("sda", serial="A")
    p1, p2 = part(d, 1, MiB, 10 * MiB), part(d, 2, 11 * MiB, 10 * MiB)
    assert overlap_problem(E(d, p1), E(d, p2)) is None
    p3 = Partition("sda3", "/dev/sda3", 3, 5 * MiB, 10 * MiB)  # a broken table
    assert "overlaps the source /dev/sda1" in overlap_problem(E(d, p1), E(d, p3))


# --- restore's checks, without a disk made up for the image ------------------------------

def test_restore_onto_the_disk_holding_the_image_device_is_refused():
    d = disk("loop1", serial="L1", transport="loop")
    image = E(d, part(d, 2, 40 * MiB, 40 * MiB))
    problems, _ = checks.check_target(E(d), "/dev/loop1p2", 40 * MiB, 512, image_device=image)
    assert problems == [f"the target {E(d).label()} holds the image partition /dev/loop12 "
                        "(same name, serial)"]


def test_restore_refusals_read_as_before():
    problems, warnings = checks.check_target(E(disk(size=50 * MiB, sector=4096, serial="B")),
                                             "/img/node.raw", 64 * MiB, 512)
    assert problems == [
        f"the target is smaller than the image: target /dev/sdb has {50 * MiB} bytes "
        f"(52.4 MB), image /img/node.raw has {64 * MiB} bytes (67.1 MB)",
        "the logical sector sizes differ: the image was made on a disk with 512-byte sectors "
        "(its GPT header says so), the target /dev/sdb has 4096-byte sectors: partition "
        "offsets and filesystems would be wrong on it"]
    assert warnings == []
    _, warnings = checks.check_target(E(disk(sector=4096)), "/img", None, None)
    assert "sector size is unknown" in warnings[0] and "size is not known" in warnings[1]


# --- the identity record -----------------------------------------------------------------

def test_identity_record_holds_what_the_reports_read():
    sda = find_disk(disks_from_probe(guest_probe()), "/dev/sda")
    rec = identity_of(sda)
    data = rec.to_dict()
    for key in ("name", "path", "node", "kind", "size", "logical_sector_size", "model",
                "vendor", "serial", "wwn", "transport", "by_id", "by_path", "iscsi",
                "backing_file", "partitions", "partition"):
        assert key in data, key
    assert data["iscsi"] == {"target": "iqn.2026-11.lab.rtk:bdr1", "portal": "10.0.2.2:3260",
                             "lun": 1}
    assert [p["label"] for p in data["partitions"]] == ["ESP", "Volume2"]
    assert rec.label() == "/dev/sda (VIRTUAL-DISK, serial beaf11, 33.6 MB)"
    assert rec.summary() == describe(sda) == (
        "sda (iscsi, 33.6 MB, serial beaf11, wwn 0x60000000000000000e00000000010001, "
        "iqn.2026-11.lab.rtk:bdr1 LUN 1)")
    p = identity_of(sda, sda.partitions[1], path="/dev/disk/by-id/x")
    assert (p.kind, p.node, p.path, p.partition["disk"]) == (
        "partition", sda.partitions[1].path, "/dev/disk/by-id/x", "/dev/sda")
    assert E(sda).describe() == data
    json.dumps(data)
