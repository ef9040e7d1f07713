"""Small files of an unmounted ext4 or XFS image read by debugfs and xfs_db
(toolkit.restore.fs_files), on filesystems made by mkfs.ext4 -d and mkfs.xfs -p from
plain files (no loop device): symlinks followed inside the image, long ones too (ext
keeps a target over 59 bytes in a block; XFS in the inode), a loop of links, a file
over 1 MiB and a named pipe are "there but not read", never "not there" (review
helper-59: an fstab behind a long or an XFS symlink read as "no /etc/fstab", and with
it /boot unknown to the rebuild)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolkit.restore import fs_files, linux_initramfs
from toolkit.restore.fs_files import Unreadable, read_file

pytestmark = pytest.mark.unit
FSTAB = "UUID=abcd / ext4 defaults 0 1\nUUID=ef01 /boot ext4 defaults 0 2\n"
LONG = "/etc/very/long/directory/name/for/config/management/generated/fstab"  # 67 bytes


def _ext(tmp_path: Path, build) -> str:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    build(root)
    img = tmp_path / "ext.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img)], check=True)
    return str(img)


def _long_link(root: Path) -> None:
    real = root / LONG.lstrip("/")
    real.parent.mkdir(parents=True)
    real.write_text(FSTAB)
    (root / "etc/fstab").symlink_to(LONG)  # absolute: the image's own root
    (root / "etc/loop-a").symlink_to("loop-b")
    (root / "etc/loop-b").symlink_to("/etc/loop-a")
    (root / "etc/big").write_text("#\n" * 600000)
    os.mkfifo(root / "etc/pipe")


def test_ext_follows_a_long_absolute_symlink_and_tells_unread_from_absent(tmp_path):
    img = _ext(tmp_path, _long_link)
    assert read_file(img, "ext4", "/etc/fstab") == FSTAB
    assert read_file(img, "ext4", "/etc/nothing") is None
    with pytest.raises(Unreadable, match=r"^/etc/loop-a: more than 8 symbolic links"):
        read_file(img, "ext4", "/etc/loop-a")
    with pytest.raises(Unreadable, match=r"^/etc/big has 1200000 bytes, more than 1048576"):
        read_file(img, "ext4", "/etc/big")
    with pytest.raises(Unreadable, match=r"^/etc/pipe is not a regular file"):
        read_file(img, "ext4", "/etc/pipe")


def test_xfs_follows_a_symlink_and_refuses_a_file_over_1_mib(tmp_path):
    src = tmp_path / "fstab.real"
    src.write_text(FSTAB)
    big = tmp_path / "big"
    big.write_text("#\n" * 600000)
    proto = tmp_path / "proto"
    proto.write_text(f"/dummy\n0 0\nd--755 0 0\netc d--755 0 0\n"
                     f" fstab.real ---644 0 0 {src}\n fstab l--777 0 0 fstab.real\n"
                     f" abs l--777 0 0 /etc/fstab\n big ---644 0 0 {big}\n $\n$\n")
    img = tmp_path / "xfs.img"
    with open(img, "wb") as f:
        f.truncate(300 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-p", str(proto), str(img)], check=True)
    assert read_file(str(img), "xfs", "/etc/fstab") == FSTAB
    assert read_file(str(img), "xfs", "/etc/abs") == FSTAB  # two links
    assert fs_files.xfs_file(str(img), "/etc/fstab") is None  # the link itself: no file
    with pytest.raises(Unreadable, match=r"^/etc/big has 1200000 bytes"):
        read_file(str(img), "xfs", "/etc/big")


def test_an_fstab_there_but_not_read_stops_the_rebuild_and_says_why(tmp_path):
    """/boot's place comes from fstab: an fstab not read is no reason to write the
    initramfs into the root's own /boot directory."""
    img = _ext(tmp_path, lambda root: (root / "etc/fstab").write_text("#\n" * 600000))
    out = linux_initramfs.fix_root("/dev/loop9", {"node": img, "fstype": "ext4", "number": 2},
                                   [], "nvme")
    assert out.status == "failed" and out.warn
    assert out.message == "/etc/fstab has 1200000 bytes, more than 1048576: not read: where " \
        "/boot is (and the rest of fstab) is unknown: not rebuilt"


@pytest.mark.parametrize("real", ["fstab real", 'fstab"q', "fstab\tt", "fst'ab", "ct;x"])
def test_ext_names_with_spaces_and_quotes_are_given_to_debugfs_whole(tmp_path, real):
    """debugfs splits its request at spaces: a link to "fstab real" read as no fstab at
    all (review helper-60); the name is given in double quotes, a quote doubled."""
    def build(root: Path) -> None:
        (root / "etc" / real).write_text(FSTAB)
        (root / "etc/fstab").symlink_to(real)
    img = _ext(tmp_path, build)
    assert read_file(img, "ext4", "/etc/fstab") == FSTAB
    assert read_file(img, "ext4", f"/etc/{real}") == FSTAB
    assert read_file(img, "ext4", "/etc/fstab real2") is None


def test_dot_dot_in_a_link_is_taken_from_where_the_link_really_is(tmp_path):
    """/etc -> private/etc and /private/etc/fstab -> ../fstab.d/fstab: the kernel reads
    /private/fstab.d/fstab (review helper-60: looked for at /fstab.d/fstab, "no fstab");
    a file where a directory should be is no such path."""
    def build(root: Path) -> None:
        (root / "etc").rmdir()
        (root / "private/etc").mkdir(parents=True)
        (root / "private/fstab.d").mkdir()
        (root / "private/fstab.d/fstab").write_text(FSTAB)
        (root / "private/etc/fstab").symlink_to("../fstab.d/fstab")
        (root / "etc").symlink_to("private/etc")
        (root / "private/etc/os-release").write_text("ID=x\n")
        assert (root / "etc/fstab").read_text() == FSTAB  # as the kernel reads it
    img = _ext(tmp_path, build)
    assert read_file(img, "ext4", "/etc/fstab") == FSTAB
    assert read_file(img, "ext4", "/etc/../fstab.d/fstab") == FSTAB  # /etc/.. is /private
    assert read_file(img, "ext4", "/etc/../private/fstab.d/fstab") is None
    assert read_file(img, "ext4", "/etc/os-release/fstab") is None
