"""Encrypted volumes in an image (issue 18 item 5), on real loop devices.

A GPT image made by sgdisk with ext4, a BitLocker volume and a LUKS2 volume (made by
cryptsetup) last; an MBR image with a BitLocker volume last. The BitLocker volume's
header is written here as Windows lays it out (``-FVE-FS-`` at byte 3, the FVE metadata
block it points to), since no Linux tool makes one; libblkid takes it for BitLocker, as
it would Windows'. The plan says "partition 3: LUKS: restored as is, not resized" before
writing (raw and qcow2); growing leaves an encrypted last partition and its bytes as
they were (the old code grew the partition); the restored disk's report marks them.
Needs root; ~15 s.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB
from loopdev import marked_image

from toolkit import restore

pytestmark = pytest.mark.host

MARKER = b"RTK-ENCRYPTED-MARKER-" * 64


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture
def target(tmp_path, loops):
    made = []

    def make(size: int = 128 * MiB) -> str:
        made.append(marked_image(tmp_path / f"t{len(made)}.img", size, MARKER))
        return loops(made[-1])
    return make


def bitlocker_volume(size: int) -> bytes:
    """A BitLocker (Windows 7 and later) volume's header: the boot sector with -FVE-FS-
    and BitLocker's GUID, the first FVE metadata block at 1 MiB (version 2); the rest
    stands for the encrypted sectors."""
    b = bytearray(os.urandom(size))
    b[:512] = bytes(512)
    b[:11] = b"\xeb\x58\x90-FVE-FS-"
    b[160:176] = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le
    struct.pack_into("<Q", b, 176, MiB)
    b[510:512] = b"\x55\xaa"
    b[MiB:MiB + 8] = b"-FVE-FS-"
    struct.pack_into("<HH", b, MiB + 8, 0x40, 2)
    return bytes(b)


def luks_volume(directory: Path, size: int) -> bytes:
    path, key = directory / "luks.bin", directory / "key"
    with open(path, "wb") as f:
        f.truncate(size)
    key.write_bytes(b"not a secret")
    ri.run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
           "--pbkdf-force-iterations", "1000", str(path), str(key))
    return path.read_bytes()


def put(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        os.pwrite(f.fileno(), data, offset)


def gpt_image(path: Path) -> Path:
    """GPT: p1 ext4 (8 MiB), p2 BitLocker (8 MiB), p3 LUKS2 (the rest, last)."""
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    ri.run("sgdisk", "-n", "1:2048:+8M", "-t", "1:8300", "-n", "2:0:+8M", "-t", "2:0700",
           "-n", "3:0:0", "-t", "3:8309", str(path))
    ri.run("mkfs.ext4", "-q", "-F", "-E", f"offset={MiB}", str(path), "8192k")
    put(path, 9 * MiB, bitlocker_volume(8 * MiB))
    end = 64 * MiB - 17 * MiB - 34 * 512
    put(path, 17 * MiB, luks_volume(path.parent, end // MiB * MiB))
    return path


def table(path: Path) -> dict[int, tuple[int, int]]:
    """number -> (start, size) in bytes, as partx reads the table."""
    out = {}
    for line in ri.run("partx", "-g", "-b", "-o", "NR,START,SECTORS", str(path)).splitlines():
        nr, start, sectors = map(int, line.split())
        out[nr] = (start * 512, sectors * 512)
    return out


def span(dev: str, start: int, size: int) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(os.pread(f.fileno(), size, start)).hexdigest()


def plan(image: Path, dev: str, **opts) -> restore.RestorePlan:
    return restore.plan_restore(str(image), dev, restore.RestoreOptions(**opts),
                                source_role=())


def test_encrypted_partitions_are_shown_and_never_resized(tmp_path, target):
    image = gpt_image(tmp_path / "enc.img")
    parts = table(image)
    want = {n: span(str(image), *parts[n]) for n in (2, 3)}
    dev = target(128 * MiB)
    for img in (image, ri.convert(image, "qcow2", tmp_path / "enc.qcow2")):
        p = plan(img, dev, grow=True)
        notes = [w for w in p.warnings if "restored as is" in w]
        assert notes == [
            "partition 2: BitLocker: restored as is, not resized",
            "partition 3: LUKS: restored as is, not resized (it ends last: the grow step "
            "leaves it and its partition as they are; grow it from the restored system once "
            "it is unlocked)"], p.warnings
    res = restore.restore(plan(image, dev, grow=True))
    assert res.status == "ok", res.message
    assert "partition 3: LUKS: restored as is, not resized (the grow step leaves an " \
        "encrypted volume and its partition as they are; grow it from the restored system " \
        "once it is unlocked)" in res.fit, res.fit
    found = {p["number"]: p for p in res.contents["partitions"]}
    assert (found[3]["start"], found[3]["size"]) == parts[3]  # not grown
    assert found[2].get("encrypted") == "BitLocker" and found[3].get("encrypted") == "LUKS"
    assert {n: span(dev, *parts[n]) for n in (2, 3)} == want  # their bytes as they were
    v = ri.run("sgdisk", "-v", dev)
    assert "No problems found" in v, v
    assert "partition 2: BitLocker: restored as is, not resized" in res.warnings


def test_a_bitlocker_volume_last_on_an_mbr_disk_is_left_as_it_is(tmp_path, target):
    image = tmp_path / "win.img"
    with open(image, "wb") as f:
        f.truncate(48 * MiB)
    ri.run("sfdisk", "-q", str(image), input="label: dos\n2048,16384,83\n18432,,7\n")
    ri.run("mkfs.ext4", "-q", "-F", "-E", f"offset={MiB}", str(image), "8192k")
    start = 18432 * 512
    put(image, start, bitlocker_volume(48 * MiB - start))
    dev = target(96 * MiB)
    res = restore.restore(plan(image, dev, grow=True))
    assert res.status == "ok", res.message
    assert any(s.startswith("partition 2: BitLocker: restored as is, not resized")
               for s in res.fit), res.fit
    found = {p["number"]: p for p in res.contents["partitions"]}
    assert found[2]["size"] == 48 * MiB - start
    assert span(dev, start, 48 * MiB - start) == span(str(image), start, 48 * MiB - start)
