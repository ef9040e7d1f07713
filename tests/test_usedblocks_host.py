"""Used blocks (toolkit/copy/usedblocks.py) proved on real filesystems on loop devices.

Each source disk is filled with random data first (its free space full of old data, as
on a real disk), then partitioned (sfdisk) and formatted (mkntfs, mkfs.ext4/ext3,
mkfs.xfs, mkfs.vfat), filled with files (directories, extended attributes, a filler that
takes the free space and is deleted, so that later files land near the filesystem's end),
and unmounted. Its domain is then copied, and ONLY its domain, onto a second loop device
pre-filled with other random data (through the write gate): the target's filesystems must
check clean (ntfsfix -n, e2fsck -fn, xfs_repair -n, fsck.vfat -n) and hold every file equal
by hash; a used block the domain missed would show as a difference, the target's old data
being different. Unknown, encrypted, dirty or journal-pending filesystems are copied in
full, with the reason. Needs root.

The host kernel here has no vfat driver and no ntfs3: FAT is written and read with mtools,
NTFS through ntfs-3g (FUSE).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MiB
from writeguard import write_guard  # noqa: F401  (the runtime write guard, autouse)

from toolkit.copy import usedblocks
from toolkit.disks import gate
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks

pytestmark = pytest.mark.host


def run(*cmd: str, ok=(0,)) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert p.returncode in ok, f"{' '.join(map(str, cmd))}: {p.returncode}\n{p.stdout}{p.stderr}"
    return p


def random_image(path: Path, size: int, seed: int) -> Path:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // (8 * MiB)):
            f.write(rnd.randbytes(8 * MiB))
        f.write(rnd.randbytes(size % (8 * MiB)))
    return path


def table(image: Path, label: str, parts: list[str]) -> None:
    script = f"label: {label}\n" + "".join(p + "\n" for p in parts)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(image)],
                   input=script, text=True, check=True, capture_output=True)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dev_hash(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def read_range(dev: str, pos: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(pos)
        return f.read(length)


# --- filling a filesystem ------------------------------------------------------------------

def populate(root: Path, rnd: random.Random, *, xattrs: bool = True) -> dict[str, str]:
    """Files in directories, xattrs, a filler deleted again (later files land near the
    end); the hash of every file (and xattr) by its path."""
    out: dict[str, str] = {}

    def put(rel: str, size: int) -> None:
        data = rnd.randbytes(size)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        out[rel] = sha(data)

    for d in range(3):
        for i in range(40):  # enough entries for the directories to take blocks of their own
            put(f"dir{d}/sub/file-{i:03d}-with-a-long-name.bin", rnd.randrange(0, 12000))
    put("big.bin", 3 * MiB)
    if xattrs:
        value = rnd.randbytes(180)
        os.setxattr(root / "big.bin", "user.rtk", value)
        out["big.bin@user.rtk"] = sha(value)
    st = os.statvfs(root)
    filler = root / "filler"
    with open(filler, "wb") as f:
        left = st.f_bavail * st.f_frsize - 4 * MiB
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(rnd.randbytes(n))
            left -= n
    os.sync()
    for i in range(6):
        put(f"tail/near-the-end-{i}.bin", 200_000)
    filler.unlink()
    put("after/last.bin", 2 * MiB)
    return out


def read_tree(root: Path, expected: dict[str, str]) -> dict[str, str]:
    got = {}
    for rel in expected:
        path, _, attr = rel.partition("@")
        got[rel] = sha(os.getxattr(root / path, attr) if attr else (root / path).read_bytes())
    return got


def mount(kind: str, dev: str, point: Path, ro: bool = False) -> None:
    point.mkdir(exist_ok=True)
    if kind == "ntfs":
        run("ntfs-3g", *(["-o", "ro"] if ro else []), dev, point)
    else:
        run("mount", "-t", kind, "-o", "ro,norecovery" if ro and kind == "xfs" else
            ("ro,noload" if ro else "rw"), dev, point)


def umount(point: Path, dev: str | None = None) -> None:
    """Unmount; with ``dev``, wait until nothing holds it any more (ntfs-3g, a FUSE
    daemon, lets go of its device a moment after umount returns; a device still held
    would keep its partition, and that partition's cache, past the test)."""
    run("umount", point)
    for _ in range(100 if dev else 0):
        try:
            os.close(os.open(dev, os.O_RDONLY | os.O_EXCL))
            return
        except OSError:
            time.sleep(0.05)


def fill(kind: str, dev: str, point: Path, seed: int) -> dict[str, str]:
    mount(kind, dev, point)
    try:
        return populate(point, random.Random(seed))
    finally:
        umount(point, dev)


def check_clean(kind: str, dev: str) -> None:
    cmd = {"ntfs": ["ntfsfix", "-n"], "ext4": ["e2fsck", "-fn"], "ext3": ["e2fsck", "-fn"],
           "xfs": ["xfs_repair", "-n"], "vfat": ["fsck.vfat", "-n"]}[kind]
    run(*cmd, dev)


def files_equal(kind: str, dev: str, point: Path, expected: dict[str, str]) -> None:
    mount(kind, dev, point, ro=True)
    try:
        assert read_tree(point, expected) == expected
    finally:
        umount(point, dev)


# --- FAT through mtools -----------------------------------------------------------------------

def fat_fill(dev: str, tmp: Path, seed: int) -> dict[str, str]:
    rnd = random.Random(seed)
    out: dict[str, str] = {}
    local = tmp / "fat-local"
    local.mkdir()

    def put(rel: str, size: int) -> None:
        data = rnd.randbytes(size)
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
        out[rel] = sha(data)

    for d in range(3):
        for i in range(40):
            put(f"dir{d}/sub/file-{i:03d}-with-a-long-name.bin", rnd.randrange(0, 12000))
    put("big.bin", 2 * MiB)
    run("mcopy", "-s", "-i", dev, *(str(p) for p in local.iterdir()), "::")
    size = int(run("blockdev", "--getsize64", dev).stdout)
    filler = tmp / "filler"
    filler.write_bytes(rnd.randbytes(size - sum(f.stat().st_size for f in local.rglob("*")
                                                if f.is_file()) - 6 * MiB))
    run("mcopy", "-i", dev, filler, "::filler")
    shutil.rmtree(local)
    local.mkdir()
    for i in range(6):
        put(f"tail/near-the-end-{i}.bin", 150_000)
    run("mcopy", "-s", "-i", dev, local / "tail", "::")
    run("mdel", "-i", dev, "::filler")
    shutil.rmtree(local)
    local.mkdir()
    put("after/last.bin", 1 * MiB)
    run("mcopy", "-s", "-i", dev, local / "after", "::")
    return out


def fat_equal(dev: str, expected: dict[str, str]) -> None:
    got = {}
    for rel in expected:
        p = subprocess.run(["mcopy", "-n", "-i", dev, f"::{rel}", "-"], capture_output=True,
                           check=True)
        got[rel] = sha(p.stdout)
    assert got == expected


# --- the domain, copied through the gate ------------------------------------------------------

def copy_domain(domain: usedblocks.Domain, src: str, dst: str) -> None:
    """Write ``domain``'s ranges of ``src`` onto ``dst`` (through the write gate), nothing
    else; then let the kernel see the target's partitions."""
    target = resolve(dst, list_disks())
    with gate.open_target(target, direct=False) as hold, open(src, "rb", buffering=0) as f:
        for pos, length in domain.ranges:
            done = 0
            while done < length:
                data = os.pread(f.fileno(), min(8 * MiB, length - done), pos + done)
                assert data
                os.pwrite(hold.fd, data, pos + done)
                done += len(data)
        os.fsync(hold.fd)
    subprocess.run(["partx", "-a", dst], capture_output=True, check=False)
    for node in Path("/dev").glob(f"{os.path.basename(dst)}p*"):
        run("blockdev", "--flushbufs", node)  # nothing cached from before the copy


def domain_of(dev: str) -> usedblocks.Domain:
    return usedblocks.used_domain(resolve(dev, list_disks()))


def part(domain: usedblocks.Domain, number: int | None) -> usedblocks.DomainPart:
    return next(p for p in domain.parts if p.number == number and p.size)


def assert_well_formed(domain: usedblocks.Domain) -> None:
    at = -1
    for pos, length in domain.ranges:
        assert length > 0 and pos > at and pos % domain.sector_size == 0
        assert length % domain.sector_size == 0 or pos + length == domain.size
        at = pos + length
    assert at <= domain.size
    assert sum(p.used for p in domain.parts if p.note != "" or p.tool) <= domain.size


@pytest.fixture
def pair(tmp_path, loops):
    """``pair(size, parts, label)``: (source image, source loop, target loop); the
    target is pre-filled with other random data."""
    def make(size: int, parts: list[str], label: str = "gpt", seed: int = 1):
        src_img = random_image(tmp_path / "src.img", size, seed)
        table(src_img, label, parts)
        src = loops(src_img, partitions=True)
        dst = loops(random_image(tmp_path / "dst.img", size, seed + 100), partitions=True)
        return src_img, src, dst
    return make


# --- the tests ---------------------------------------------------------------------------------

def test_ntfs_used_blocks_copy_is_a_whole_ntfs(pair, tmp_path):
    _img, src, dst = pair(96 * MiB, ["start=2048, size=131072"])
    run("mkntfs", "-q", "-f", "-L", "Vol1", f"{src}p1")
    files = fill("ntfs", f"{src}p1", tmp_path / "m", seed=2)
    before = dev_hash(src)
    domain = domain_of(src)
    assert dev_hash(src) == before, "computing the domain wrote to the source"
    assert_well_formed(domain)
    p1 = part(domain, 1)
    assert (p1.fstype, p1.label, p1.tool, p1.note) == ("ntfs", "Vol1", "partclone.ntfs", "")
    assert p1.used < 20 * MiB, domain.summary()  # the filler's 50 MB were skipped
    # the last 4 KiB of the partition (NTFS's backup boot sector) are outside its map
    end = p1.start + p1.size
    assert usedblocks.covered(domain.ranges, end - 4096, end) == 4096
    assert domain.summary().startswith("used blocks of 1 NTFS partition and everything else")
    assert usedblocks.recognised(resolve(src, list_disks())) == ["partition 1 (ntfs)"]
    copy_domain(domain, src, dst)
    check_clean("ntfs", f"{dst}p1")
    files_equal("ntfs", f"{dst}p1", tmp_path / "m", files)
    # the free space was not copied: the target keeps its own old data there
    assert any(read_range(src, pos, 4096) != read_range(dst, pos, 4096)
               for pos in range(p1.start + 8 * MiB, end - 8 * MiB, MiB))


def test_a_missed_used_range_is_caught_by_these_checks(pair, tmp_path):
    """The control: the same copy with the last used range of the filesystem left out
    fails the checks above (so they would catch a map that misses blocks)."""
    _img, src, dst = pair(48 * MiB, ["start=2048, size=65536"])
    run("mkfs.ext4", "-q", "-b", "4096", f"{src}p1")
    files = fill("ext4", f"{src}p1", tmp_path / "m", seed=3)
    domain = domain_of(src)
    p1 = part(domain, 1)
    inside = [r for r in domain.ranges if p1.start + usedblocks.HEAD <= r[0] < p1.start + p1.size]
    broken = usedblocks.Domain(domain.size, domain.sector_size,
                               [r for r in domain.ranges if r not in inside[-3:]], domain.parts)
    copy_domain(broken, src, dst)
    fsck = subprocess.run(["e2fsck", "-fn", f"{dst}p1"], capture_output=True)
    if fsck.returncode == 0:
        mount("ext4", f"{dst}p1", tmp_path / "m", ro=True)
        try:
            assert read_tree(tmp_path / "m", files) != files
        finally:
            umount(tmp_path / "m", f"{dst}p1")


@pytest.mark.parametrize("mkfs", [
    ["mkfs.ext4", "-q", "-b", "1024", "-g", "1024"],  # 64 block groups of 1 MiB
    ["mkfs.ext4", "-q", "-b", "4096"],
    ["mkfs.ext3", "-q"],
], ids=["ext4-1k-64-groups", "ext4-4k", "ext3"])
def test_ext_used_blocks_copy(pair, tmp_path, mkfs):
    _img, src, dst = pair(80 * MiB, ["start=2048, size=131072"])
    run(*mkfs, "-L", "data", f"{src}p1")
    kind = "ext3" if "ext3" in mkfs[0] else "ext4"
    files = fill(kind, f"{src}p1", tmp_path / "m", seed=4)
    domain = domain_of(src)
    assert_well_formed(domain)
    p1 = part(domain, 1)
    assert (p1.fstype, p1.tool, p1.note) == (kind, "partclone.extfs", "")
    assert p1.used < 25 * MiB, domain.summary()
    copy_domain(domain, src, dst)
    check_clean(kind, f"{dst}p1")
    files_equal(kind, f"{dst}p1", tmp_path / "m", files)


def test_xfs_used_blocks_copy_with_its_log(pair, tmp_path):
    _img, src, dst = pair(330 * MiB, ["start=2048, size=655360"])
    run("mkfs.xfs", "-q", "-L", "xdata", f"{src}p1")
    files = fill("xfs", f"{src}p1", tmp_path / "m", seed=5)
    domain = domain_of(src)
    assert_well_formed(domain)
    p1 = part(domain, 1)
    assert (p1.fstype, p1.tool, p1.note) == ("xfs", "partclone.xfs", "")
    assert p1.used < 100 * MiB, domain.summary()  # the 64 MiB internal log is in it
    copy_domain(domain, src, dst)
    check_clean("xfs", f"{dst}p1")
    files_equal("xfs", f"{dst}p1", tmp_path / "m", files)


@pytest.mark.parametrize("fat,size,cluster", [(32, 131072, 1), (16, 65536, 4)],
                         ids=["fat32", "fat16"])
def test_fat_used_blocks_copy(pair, tmp_path, fat, size, cluster):
    _img, src, dst = pair(96 * MiB, [f"start=2048, size={size}"])
    run("mkfs.vfat", "-F", str(fat), "-s", str(cluster), "-n", "FATVOL", f"{src}p1")
    files = fat_fill(f"{src}p1", tmp_path, seed=6)
    domain = domain_of(src)
    assert_well_formed(domain)
    p1 = part(domain, 1)
    assert (p1.fstype, p1.tool, p1.note) == ("vfat", "partclone.fat", "")
    assert p1.used < 20 * MiB, domain.summary()
    copy_domain(domain, src, dst)
    check_clean("vfat", f"{dst}p1")
    fat_equal(f"{dst}p1", files)


def luks_header(rnd: random.Random) -> bytes:
    h = bytearray(rnd.randbytes(4096))
    h[0:8] = b"LUKS\xba\xbe\x00\x01"
    h[8:104] = b"aes".ljust(32, b"\0") + b"xts-plain64".ljust(32, b"\0") + \
        b"sha256".ljust(32, b"\0")
    h[104:112] = struct.pack(">II", 4096, 64)
    h[168:208] = b"0d3e4c52-7c35-4a3b-9a49-3e5d0c4b2f11".ljust(40, b"\0")
    return bytes(h)


def test_mbr_logical_partitions_and_what_is_copied_in_full(pair, tmp_path):
    """An MBR disk: NTFS, an extended partition with a logical ext4 and a logical
    partition of random bytes, a LUKS header, a BitLocker boot sector. The EBRs, the
    unknown, LUKS and BitLocker partitions and the gaps are copied whole."""
    img, src, dst = pair(128 * MiB, [
        "start=2048, size=65536, type=7",
        "start=69632, size=102400, type=5",
        "start=73728, size=40960, type=83",  # logical 5: ext4
        "start=116736, size=16384, type=83",  # logical 6: random bytes
        "start=174080, size=16384, type=83",  # 3: LUKS
        "start=192512, size=16384, type=7",  # 4: BitLocker
    ], label="dos")
    rnd = random.Random(9)
    with open(img, "r+b") as f:
        f.seek(174080 * 512)
        f.write(luks_header(rnd))
        f.seek(192512 * 512)
        f.write(b"\xeb\x58\x90-FVE-FS-" + rnd.randbytes(501))
    run("mkntfs", "-q", "-f", f"{src}p1")
    run("mkfs.ext4", "-q", f"{src}p5")
    ntfs_files = fill("ntfs", f"{src}p1", tmp_path / "m", seed=10)
    ext_files = fill("ext4", f"{src}p5", tmp_path / "m", seed=11)
    domain = domain_of(src)
    assert_well_formed(domain)
    notes = {p.number: (p.fstype, p.tool, p.note) for p in domain.parts if p.number}
    assert notes[1][:2] == ("ntfs", "partclone.ntfs") and notes[5][:2] == ("ext4",
                                                                          "partclone.extfs")
    assert notes[2][2].startswith("extended partition")
    assert notes[6] == (None, None, "unknown filesystem: copied in full")
    assert notes[3] == ("crypto_LUKS", None, "LUKS: encrypted, copied in full")
    assert notes[4] == ("BitLocker", None, "BitLocker: encrypted, copied in full")
    for n in (3, 4, 6):
        p = part(domain, n)
        assert p.used == p.size and usedblocks.covered(domain.ranges, p.start,
                                                       p.start + p.size) == p.size
    assert domain.summary().startswith("used blocks of 2 partitions (1 NTFS, 1 ext4) and "
                                       "everything else")
    copy_domain(domain, src, dst)
    assert os.path.exists(f"{dst}p6"), "the EBRs were not copied"
    check_clean("ntfs", f"{dst}p1")
    check_clean("ext4", f"{dst}p5")
    files_equal("ntfs", f"{dst}p1", tmp_path / "m", ntfs_files)
    files_equal("ext4", f"{dst}p5", tmp_path / "m", ext_files)
    for n in (3, 4, 6):
        assert dev_hash(f"{src}p{n}") == dev_hash(f"{dst}p{n}")


def set_ntfs_dirty(path: Path, offset: int) -> None:
    """Set VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION (MFT record 3, and its copy in
    $MFTMirr), as Windows does when it schedules a check."""
    with open(path, "r+b") as f:
        f.seek(offset)
        boot = f.read(512)
        cluster = struct.unpack_from("<H", boot, 0x0B)[0] * boot[0x0D]
        mft, mirror = struct.unpack_from("<QQ", boot, 0x30)
        c = struct.unpack_from("<b", boot, 0x40)[0]
        record = 1 << -c if c < 0 else c * cluster
        for lcn in (mft, mirror):
            at = offset + lcn * cluster + 3 * record
            f.seek(at)
            r = bytearray(f.read(record))
            assert r[:4] == b"FILE"
            a = struct.unpack_from("<H", r, 0x14)[0]
            while struct.unpack_from("<I", r, a)[0] != 0x70:
                a += struct.unpack_from("<I", r, a + 4)[0]
            v = a + struct.unpack_from("<H", r, a + 0x14)[0]
            struct.pack_into("<H", r, v + 0x0A, struct.unpack_from("<H", r, v + 0x0A)[0] | 1)
            f.seek(at)
            f.write(r)


def test_unsettled_filesystems_are_copied_in_full(pair, tmp_path):
    """A dirty NTFS (ntfs-3g's tools then refuse it), an ext4 and an XFS shut down with
    their journals holding changes (xfs_io's shutdown: what a snapshot of a mounted
    volume looks like) are copied in full, each with the reason."""
    _img, src, _dst = pair(400 * MiB, ["start=2048, size=65536", "start=67584, size=65536",
                                       "start=133120, size=655360"])
    run("mkntfs", "-q", "-f", f"{src}p1")
    run("mkfs.ext4", "-q", f"{src}p2")
    run("mkfs.xfs", "-q", f"{src}p3")
    for n, kind in ((2, "ext4"), (3, "xfs")):
        mount(kind, f"{src}p{n}", tmp_path / "m")
        (tmp_path / "m" / "a").write_bytes(os.urandom(MiB))
        os.sync()
        (tmp_path / "m" / "b").write_bytes(os.urandom(MiB))
        run("xfs_io", "-x", "-c", "shutdown", tmp_path / "m")
        umount(tmp_path / "m", f"{src}p{n}")
    set_ntfs_dirty(Path(f"{src}p1"), 0)  # through the node mkntfs wrote (its page cache)
    os.sync()
    refused = subprocess.run(["ntfsinfo", "-m", f"{src}p1"], capture_output=True, text=True)
    assert refused.returncode != 0 and "scheduled for check" in refused.stderr
    domain = domain_of(src)
    assert [p.tool for p in domain.parts] == [None] * len(domain.parts)
    assert domain.ranges == [(0, domain.size)]
    assert "NTFS volume marked dirty" in part(domain, 1).note
    assert "ext4 journal needs recovery" in part(domain, 2).note
    assert "XFS log not clean" in part(domain, 3).note
    assert domain.summary().startswith("everything (no filesystem mapped)")
    assert usedblocks.recognised(resolve(src, list_disks())) == []


def test_a_partition_endpoint_and_a_disk_the_kernel_shows_no_partitions_of(tmp_path, loops):
    """The domain of partition 2 as an endpoint is the disk's domain of it, shifted; a
    disk whose partitions the kernel does not know (an iSCSI LUN before partx) gets the
    same domain, the table being read from the disk itself."""
    img = random_image(tmp_path / "d.img", 80 * MiB, 12)
    table(img, "gpt", ["start=2048, size=32768", "start=34816, size=98304"])
    dev = loops(img, partitions=True)
    run("mkfs.ext4", "-q", f"{dev}p2")
    fill("ext4", f"{dev}p2", tmp_path / "m", seed=13)
    whole = domain_of(dev)
    p2 = part(whole, 2)
    inside = [(max(pos, p2.start) - p2.start, min(pos + n, p2.start + p2.size)
               - max(pos, p2.start)) for pos, n in whole.ranges
              if pos < p2.start + p2.size and pos + n > p2.start]
    alone = domain_of(f"{dev}p2")
    assert alone.size == p2.size and alone.ranges == inside
    assert part(alone, 2).tool == "partclone.extfs"
    assert usedblocks.recognised(resolve(f"{dev}p2", list_disks())) == ["partition 2 (ext4)"]
    bare = loops(img, partitions=False)  # a second loop device over the image, no partitions
    assert not os.path.exists(f"{bare}p2")
    assert domain_of(bare).ranges == whole.ranges


def test_a_whole_disk_filesystem_is_mapped_and_random_bytes_are_not(tmp_path, loops):
    img = random_image(tmp_path / "d.img", 48 * MiB, 14)
    dev = loops(img)
    run("mkfs.ext4", "-q", "-F", dev)
    domain = domain_of(dev)
    assert [(p.number, p.fstype, p.tool) for p in domain.parts] == [(None, "ext4",
                                                                    "partclone.extfs")]
    assert domain.bytes() < 16 * MiB
    assert domain.summary().startswith("used blocks of the ext4 filesystem:")
    noise = loops(random_image(tmp_path / "n.img", 16 * MiB, 15))
    full = domain_of(noise)
    assert full.ranges == [(0, 16 * MiB)] and full.parts[0].tool is None
    assert "no partition table or filesystem" in full.parts[0].note
