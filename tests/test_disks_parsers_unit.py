"""Parsers of kernel and tool output, fed with real output."""

from __future__ import annotations

from toolkit.disks.mounts import parse_mountinfo, parse_swaps
from toolkit.system.blkid import parse_export as parse_blkid_export
from toolkit.units import human_duration, human_size

# From the live guest (trixie), abridged; line 3 has a mount point with a space.
MOUNTINFO = """\
29 1 0:27 / / rw,noatime - overlay overlay rw,lowerdir=/run/live/rootfs/filesystem.squashfs/
37 29 11:0 / /run/live/medium ro,noatime - iso9660 /dev/sr0 ro,nojoliet,check=s,map=n
41 29 259:2 / /mnt/Cluster\\040Vol1 rw,relatime - ntfs3 /dev/sda2 rw,uid=0
"""

SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/vdb2                               partition\t1048572\t\t0\t\t-2
"""

# blkid -p -o export /dev/loop0p1 /dev/loop0p2 on this host (real output)
BLKID = """\
DEVNAME=/dev/loop0p1
SEC_TYPE=msdos
LABEL_FATBOOT=ESP
LABEL=ESP
UUID=7F3A-19C2
BLOCK_SIZE=512
TYPE=vfat
USAGE=filesystem
PART_ENTRY_SCHEME=gpt
PART_ENTRY_NAME=EFI\\ system
PART_ENTRY_NUMBER=1

DEVNAME=/dev/loop0p2
LABEL=Vol1
UUID=5C0F7C9D3B1E2A44
TYPE=ntfs
PART_ENTRY_NAME=Cluster\\ Vol1
"""


def test_mountinfo():
    mounts = parse_mountinfo(MOUNTINFO)
    assert [(m.devno, m.mountpoint, m.fstype, m.source) for m in mounts] == [
        ("0:27", "/", "overlay", "overlay"),
        ("11:0", "/run/live/medium", "iso9660", "/dev/sr0"),
        ("259:2", "/mnt/Cluster Vol1", "ntfs3", "/dev/sda2"),
    ]


def test_swaps():
    assert parse_swaps(SWAPS) == ["/dev/vdb2"]
    assert parse_swaps("Filename Type Size Used Priority\n") == []


def test_blkid_export_unescapes_and_splits_devices():
    out = parse_blkid_export(BLKID)
    assert out["/dev/loop0p1"]["PART_ENTRY_NAME"] == "EFI system"
    assert out["/dev/loop0p1"]["TYPE"] == "vfat"
    assert out["/dev/loop0p2"] == {"LABEL": "Vol1", "UUID": "5C0F7C9D3B1E2A44", "TYPE": "ntfs",
                                   "PART_ENTRY_NAME": "Cluster Vol1"}


def test_human_units():
    assert human_size(999) == "999 B"
    assert human_size(60_000_000_000) == "60.0 GB"
    assert human_size(16 * 10**12) == "16.0 TB"
    assert human_duration(59) == "0:59"
    assert human_duration(3725) == "1:02:05"
