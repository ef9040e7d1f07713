"""The menu shows a cluster disk's CSV ID as the backup appliance and Failover Cluster
Manager do: the Disks screen driven by keys over a real GPT loop device (sgdisk, mkntfs
-L), the CSV ID on screen equal to sgdisk's disk GUID and the partition's byte offset."""

from __future__ import annotations

import re

import pytest
from conftest import MiB, own_disks, words
from loopdev import make_image, run
from screen import press

from tui.app import App

pytestmark = pytest.mark.host

GUID = "5d1e0c3a-7b2f-4e69-9a8d-0c1b2a3f4e5d"


@pytest.fixture
def gpt_loop(tmp_path, loops):
    img = make_image(tmp_path / "csv.img", 256 * MiB)
    run("sgdisk", "-U", GUID, "-n1:1M:+128M", "-t1:0c01", "-n2:0:0", "-t2:0700", str(img))
    dev = loops(img, partitions=True)
    run("mkntfs", "-Q", "-F", "-L", "Vol1", f"{dev}p2")
    printed = run("sgdisk", "-p", dev)
    guid = re.search(r"Disk identifier \(GUID\): (\S+)", printed).group(1).lower()
    first = int(re.search(r"First sector: (\d+)", run("sgdisk", "-i", "2", dev)).group(1))
    return dev, guid, first * 512


def test_disks_view_shows_the_csv_id(gpt_loop, tmp_path):
    dev, guid, offset = gpt_loop
    assert guid == GUID
    app = App(log_dir=str(tmp_path), list_disks=own_disks(dev))
    screen = press(app, "d")
    assert "Disks" in screen.splitlines()[1]
    assert f'CSV ID {guid}:{offset} "Vol1"' in screen, screen
    screen = press(app, "enter")  # the disk in full: its identity and the table's partitions
    assert f"disk identity: GPT disk GUID {guid}" in screen, screen
    screen = press(app, *["down"] * 30)
    assert "Partition table read from the disk (GPT)" in screen, screen
    assert (f'2 at byte {offset}, 133.2 MB, Microsoft basic data, ntfs "Vol1" '
            f"CSV ID {guid}:{offset}") in words(screen), screen
