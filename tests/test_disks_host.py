"""toolkit.disks on real loop devices, partitioned with sgdisk, formatted with
mkfs.vfat, mkntfs and mkfs.ext4. This host has no udev daemon: the sysfs and
blkid fallback is what runs here (the guest tests cover the udev path)."""

from __future__ import annotations

import json

import pytest
from conftest import MiB
from loopdev import loop_device, make_image, run

from toolkit.cli.main import main as rtk
from toolkit.disks import probe
from toolkit.disks.inventory import find_disk, list_disks

pytestmark = pytest.mark.host


@pytest.fixture
def cluster_disk(tmp_path, need_root):
    """A GPT disk like a cluster node's: ESP, an NTFS volume "Vol1", ext4 "data"."""
    img = make_image(tmp_path / "disk.img", 96 * MiB + 3 * 512)  # odd size on purpose
    run("sgdisk", "-o", "-n1:1M:+16M", "-t1:ef00", "-c1:EFI system",
        "-n2:0:+40M", "-t2:0700", "-c2:Cluster Vol1", "-n3:0:0", "-t3:8300", str(img))
    with loop_device(img) as dev:
        run("mkfs.vfat", "-n", "ESP", f"{dev}p1")
        run("mkntfs", "-Q", "-F", "-L", "Vol1", f"{dev}p2")
        run("mkfs.ext4", "-q", "-L", "data", f"{dev}p3")
        yield dev, img


def test_partitioned_disk_identity_and_filesystems(cluster_disk):
    dev, img = cluster_disk
    disk = find_disk(list_disks(), dev)
    assert disk is not None, f"{dev} not listed"
    assert disk.transport == "loop"
    assert disk.size == 96 * MiB + 3 * 512
    assert disk.logical_sector_size == 512
    assert disk.backing_file == str(img)
    assert disk.partition_table == "gpt"
    got = [(p.number, p.fstype, p.label, p.partlabel) for p in disk.partitions]
    assert got == [
        (1, "vfat", "ESP", "EFI system"),
        (2, "ntfs", "Vol1", "Cluster Vol1"),
        (3, "ext4", "data", None),
    ]
    assert disk.partitions[1].start == 17 * MiB and disk.partitions[1].size == 40 * MiB
    assert disk.in_use == []


def test_a_blank_disk_listed_first_hides_no_filesystem(tmp_path, need_root):
    """An empty disk before a formatted one: ``blkid -p`` given both stops at the
    blank one; the formatted one must still show its filesystem."""
    one = make_image(tmp_path / "one.img", 16 * MiB)
    two = make_image(tmp_path / "two.img", 16 * MiB)
    with loop_device(one, partitions=False) as x, loop_device(two, partitions=False) as y:
        # the kernel may hand out the numbers in either order (other loop devices come
        # and go): format the one listed second
        b, f = sorted((x, y), key=lambda d: int(d.removeprefix("/dev/loop")))
        run("mkfs.ext4", "-q", "-L", "after", f)
        disks = list_disks()
        assert find_disk(disks, b).fstype is None
        assert (find_disk(disks, f).fstype, find_disk(disks, f).label) == ("ext4", "after")


def test_mounted_partition_makes_disk_in_use(cluster_disk, tmp_path):
    dev, _img = cluster_disk
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", "-o", "ro", f"{dev}p3", str(mnt))
    try:
        disk = find_disk(list_disks(), dev)
        assert disk.partitions[2].mountpoints == [str(mnt)]
        assert disk.in_use == [f"{disk.name}p3 mounted at {mnt}"]
    finally:
        run("umount", str(mnt))
    assert find_disk(list_disks(), dev).in_use == []


def test_4096_byte_sectors_reported(tmp_path, need_root):
    img = make_image(tmp_path / "4k.img", 8 * MiB)
    with loop_device(img, sector_size=4096, partitions=False) as dev:
        disk = find_disk(list_disks(), dev)
        assert disk.logical_sector_size == 4096
        assert disk.size == 8 * MiB


def test_whole_disk_filesystem_without_partition_table(tmp_path, need_root):
    img = make_image(tmp_path / "fs.img", 32 * MiB)
    run("mkntfs", "-Q", "-F", "-L", "CSV-Volume2", str(img))
    with loop_device(img, partitions=False) as dev:
        disk = find_disk(list_disks(), dev)
        assert (disk.fstype, disk.label, disk.partitions) == ("ntfs", "CSV-Volume2", [])


NO_BLKID = "blkid is not installed (util-linux): filesystems and labels are not shown"


def test_missing_blkid_is_said_in_rtk_disks_and_the_menu(tmp_path, need_root, monkeypatch,
                                                         capsys):
    """No udev database and no blkid on PATH: the disk list cannot see the ext4
    "MYDATA", and says why: on stderr of ``rtk disks`` (stdout stays the JSON list) and
    as a line of the menu's Disks screen."""
    from screen import press

    from tui.app import App

    monkeypatch.setattr(probe, "UDEV_DATABASE", str(tmp_path / "no-udev"))
    img = make_image(tmp_path / "fs.img", 32 * MiB)
    run("mkfs.ext4", "-q", "-L", "MYDATA", str(img))
    with loop_device(img, partitions=False) as dev:
        disks = list_disks()
        assert find_disk(disks, dev).label == "MYDATA" and disks.warnings == []
        (tmp_path / "bin").mkdir()
        with monkeypatch.context() as m:  # (the loop device's teardown needs PATH back)
            m.setenv("PATH", str(tmp_path / "bin"))  # no blkid, nor anything else
            disks = list_disks()
            assert find_disk(disks, dev).fstype is None and disks.warnings == [NO_BLKID]
            assert rtk(["disks", "--json"]) == 0
            out = capsys.readouterr()
            assert json.loads(out.out)[0]["path"]  # a list, as before
            assert {d["path"]: d for d in json.loads(out.out)}[dev]["label"] is None
            assert out.err == f"warning: {NO_BLKID}\n"
            assert rtk(["disks"]) == 0
            assert capsys.readouterr().err == f"warning: {NO_BLKID}\n"
            app = App(log_dir=str(tmp_path / "log"), list_disks=list_disks)
            screen = press(app, "d")
        assert f"! {NO_BLKID}" in " ".join(screen.split())


def test_cli_lists_disk_as_json(cluster_disk, capsys):
    dev, _img = cluster_disk
    assert rtk(["disks", "--json"]) == 0
    listed = {d["path"]: d for d in json.loads(capsys.readouterr().out)}
    assert [p["label"] for p in listed[dev]["partitions"]] == ["ESP", "Vol1", "data"]
    assert listed[dev]["in_use"] == []


def test_dump_probe_replays_to_same_inventory(cluster_disk, capsys):
    """The probe JSON a technician can send us rebuilds the same inventory."""
    from toolkit.disks.inventory import disks_from_probe

    dev, _img = cluster_disk
    assert rtk(["disks", "--dump-probe"]) == 0
    replayed = find_disk(disks_from_probe(json.loads(capsys.readouterr().out)), dev)
    live = find_disk(list_disks(), dev)
    assert live.cluster is not None  # read from the disk itself, not a fact of the probe
    assert replayed.to_dict() == {**live.to_dict(), "cluster": None}

