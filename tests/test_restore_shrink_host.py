"""Restore onto a disk smaller than the image, on real loop devices.

A GPT disk with an ESP and a 512 MiB data partition holding 60 MiB of files (half of
them written after a filler that was deleted again, so they lie near the partition's
end) is restored onto a 256 MiB disk: NTFS (ntfsresize) and ext4 (resize2fs) are
shrunk on a copy-on-write overlay (qemu-storage-daemon's FUSE export; the image never
changes), the table rewritten for the smaller disk; the filesystems check clean, every
file is equal by hash, ``sgdisk -v`` finds no problem. XFS is refused (it cannot
shrink), and so is an image whose data does not fit, with both sizes; both leave the
target untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB, rtk
from loopdev import loop_device, make_image, marked_image
from shrink_images import SMALL, build_shrink_image, check_small_disk

from toolkit import restore

pytestmark = pytest.mark.host

MARKER = b"RTK-SHRINK-" * 100


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("shrink")
    return {fs: build_shrink_image(d / f"{fs}.img", fs) for fs in ("ntfs", "ext4", "xfs")}


@pytest.fixture
def small(tmp_path, loops):
    def make(size: int = SMALL) -> str:
        return loops(marked_image(tmp_path / f"small{size}.img", size, MARKER))
    return make


@pytest.mark.parametrize("fstype", ["ntfs", "ext4"])
def test_restore_onto_a_smaller_disk_shrinks(images, small, fstype):
    built = images[fstype]
    dev = small()
    r = rtk("restore", str(built.path), dev, "--yes", "--target-id", os.path.basename(dev),
            "--sha256", built.sha256)
    assert r.returncode == 0, r.stderr + r.stdout
    # said before writing: which partition shrinks from what to what
    assert f'partition 2 ({fstype} "' in r.stderr and "shrinks from 536.9 MB to" in r.stderr
    assert "copy-on-write overlay" in r.stderr
    data = check_small_disk(dev, built, fstype)
    assert data["size"] < 256 * MiB
    # the image itself never changed
    assert ri.sha256_file(built.path) == built.sha256
    report = next(Path(os.environ["RTK_LOG_DIR"]).glob("restore-*.json"))
    rec = json.loads(report.read_text())
    assert rec["status"] == "ok" and rec["verify"]["match"] is True
    assert rec["image"]["sha256_match"] is True
    shrunk = [p for p in rec["shrink"]["parts"] if p["action"] == "shrunk"]
    assert [(p["number"], p["size"], p["new_size"]) for p in shrunk] == \
        [(2, 512 * MiB, data["size"])]
    assert any("clean" in d for d in rec["shrink"]["done"])
    text = report.with_suffix(".txt").read_text()  # the image's size and what was written
    assert re.search(rf"^  image size: +{built.size} bytes", text, re.M), text
    assert re.search(rf"^  bytes written: +{rec['image']['written_size']}$", text, re.M), text
    assert rec["image"]["written_size"] < built.size
    assert "shrink: " in r.stdout  # what the shrink did, said after the restore too


def test_restore_a_qcow2_onto_a_smaller_disk(images, small, tmp_path):
    built = images["ntfs"]
    q = ri.convert(built.path, "qcow2", tmp_path / "ntfs.qcow2")
    before = ri.sha256_file(q)
    dev = small()
    plan = restore.plan_restore(str(q), dev, restore.RestoreOptions(), source_role=())
    assert plan.shrink is not None and [p.number for p in plan.shrink.shrunk] == [2]
    res = restore.restore(plan)
    assert res.status == "ok", res.message
    check_small_disk(dev, built, "ntfs")
    assert ri.sha256_file(q) == before


def _untouched(dev: str) -> bool:
    with open(dev, "rb") as f:
        return f.read(len(MARKER)) == MARKER


def test_xfs_is_refused_with_the_reason(images, small):
    dev = small()
    r = rtk("restore", str(images["xfs"].path), dev, "--yes", "--target-id",
            os.path.basename(dev))
    assert r.returncode != 0
    assert "XFS cannot shrink" in r.stderr and "Traceback" not in r.stderr
    assert _untouched(dev)


def test_data_that_does_not_fit_is_refused_with_both_sizes(images, small):
    dev = small(64 * MiB)  # 34 MiB ESP + 60 MiB of files do not fit in 64 MiB
    with pytest.raises(restore.Refused) as e:
        restore.plan_restore(str(images["ntfs"].path), dev, restore.RestoreOptions(),
                             source_role=())
    msg = str(e.value)
    assert "does not fit" in msg and "67108864 bytes" in msg, msg
    assert "partition 2" in msg
    assert _untouched(dev)


def test_a_compressed_image_larger_than_the_target_says_why(images, small, tmp_path):
    z = ri.compress(images["ntfs"].path, "zstd", tmp_path / "ntfs.img.zst")
    dev = small()
    with pytest.raises(restore.Refused, match="smaller than the image.*decompress it first"):
        restore.plan_restore(str(z), dev, restore.RestoreOptions(), source_role=())
    assert _untouched(dev)


def test_an_ntfs_marked_for_a_check_is_not_shrunk(images, small, tmp_path):
    """ntfsresize resets the journal, so an NTFS not shut down cleanly (here: marked for
    chkdsk, as ntfsresize itself leaves it) is never shrunk: refused with the reason."""
    dirty = tmp_path / "dirty.img"
    subprocess.run(["cp", "--sparse=always", str(images["ntfs"].path), str(dirty)], check=True)
    start = 35 * MiB  # partition 2: right after the 34 MiB ESP at 1 MiB
    with loop_device(dirty, partitions=False) as whole:
        part = subprocess.run(["losetup", "-f", "--show", "-o", str(start), "--sizelimit",
                               str(512 * MiB), whole], capture_output=True, text=True,
                              check=True).stdout.strip()
        try:
            subprocess.run(["ntfsresize", "-f", "-s", str(500 * MiB), part], input="y\n",
                           capture_output=True, text=True, check=True)
        finally:
            subprocess.run(["losetup", "-d", part], check=True)
    dev = small()
    with pytest.raises(restore.Refused, match="marked dirty.*shrinking it could lose data"):
        restore.plan_restore(str(dirty), dev, restore.RestoreOptions(), source_role=())
    assert _untouched(dev)


def _daemons(mark: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-storage-daemon" in cmd and mark.encode() in cmd:
            out.append(int(pid))
    return out


def test_a_killed_restore_leaves_no_daemon_mount_or_overlay(images, small, tmp_path):
    """SIGKILL while the overlay is exported: the daemon follows (PR_SET_PDEATHSIG) and
    unmounts; the next restore removes the dead one's work directory, then succeeds."""
    import time

    built, work = images["ntfs"], tmp_path / "work"
    work.mkdir()
    dev = small()
    args = ("restore", str(built.path), dev, "--yes", "--target-id", os.path.basename(dev),
            "--tmpdir", str(work))
    from conftest import RTK
    p = subprocess.Popen([*RTK, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(work.glob("rtk-shrink-*/overlay.qcow2")) or not _daemons(str(work)):
        assert p.poll() is None and time.monotonic() < deadline, "no shrink seen"
        time.sleep(0.01)
    p.kill()
    p.wait()
    deadline = time.monotonic() + 20
    while _daemons(str(work)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _daemons(str(work)) == []
    assert str(work) not in Path("/proc/self/mounts").read_text()
    assert list(work.glob("rtk-shrink-*"))  # left by the killed run...
    r = rtk(*args)
    assert r.returncode == 0, r.stderr
    assert list(work.glob("rtk-shrink-*")) == []  # ...removed by the next one
    check_small_disk(dev, built, "ntfs")


def _ext4_4k_image(path: Path, loops) -> dict[str, str]:
    """A GPT disk of 4096-byte sectors: p1 ext4 (200 MiB, 20 MiB of files)."""
    make_image(path, 204 * MiB)
    dev = loops(path, sector_size=4096, partitions=True)
    subprocess.run(["sgdisk", "-n", "1:256:+200M", "-t", "1:8300", dev], check=True,
                   capture_output=True)
    subprocess.run(["partx", "-u", dev], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "k4", f"{dev}p1"], check=True)
    files = {}
    mnt = path.parent / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", f"{dev}p1", str(mnt)], check=True)
    try:
        for i in range(5):
            data = os.urandom(4 * MiB)
            (mnt / f"f{i}").write_bytes(data)
            files[f"/f{i}"] = hashlib.sha256(data).hexdigest()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return files


def test_an_image_of_4096_byte_sectors_onto_a_smaller_4kn_disk(tmp_path, loops):
    img = tmp_path / "k4.img"
    files = _ext4_4k_image(img, loops)
    before = ri.sha256_file(img)
    target = marked_image(tmp_path / "t4.img", 100 * MiB, MARKER)
    dev = loops(target, sector_size=4096)
    res = restore.restore(restore.plan_restore(str(img), dev, restore.RestoreOptions(),
                                               source_role=()))
    assert res.status == "ok", res.message
    assert ri.sha256_file(img) == before
    out = subprocess.run(["sfdisk", "--dump", dev], capture_output=True, text=True).stdout
    assert "sector-size: 4096" in out and "start=         256" in out, out
    subprocess.run(["partx", "-u", dev], check=False)
    part = f"{dev}p1"
    assert subprocess.run(["e2fsck", "-fn", part], capture_output=True).returncode == 0
    for name, digest in files.items():
        data = subprocess.run(["debugfs", "-R", f"cat {name}", part], capture_output=True,
                              check=True).stdout
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_a_hibernated_windows_is_not_shrunk(images, small, tmp_path):
    """A sleeping Windows (hiberfil.sys starting with HIBR) resumed onto moved clusters
    corrupts its volume: refused with the reason."""
    hib = tmp_path / "hib.img"
    subprocess.run(["cp", "--sparse=always", str(images["ntfs"].path), str(hib)], check=True)
    with loop_device(hib, partitions=False) as whole:
        part = subprocess.run(["losetup", "-f", "--show", "-o", str(35 * MiB), "--sizelimit",
                               str(512 * MiB), whole], capture_output=True, text=True,
                              check=True).stdout.strip()
        try:
            mnt = tmp_path / "m"
            mnt.mkdir()
            subprocess.run(["ntfs-3g", part, str(mnt)], check=True)
            (mnt / "hiberfil.sys").write_bytes(b"HIBR" + bytes(MiB))
            subprocess.run(["umount", str(mnt)], check=True)
        finally:
            subprocess.run(["losetup", "-d", part], check=True)
    dev = small()
    with pytest.raises(restore.Refused, match="hibernated.*resuming it onto a volume moved or "
                       "shrunk corrupts them"):
        restore.plan_restore(str(hib), dev, restore.RestoreOptions(), source_role=())
    assert _untouched(dev)


def test_nothing_moves_or_shrinks_on_the_disk_of_a_hibernated_windows(tmp_path, small):
    """A sleeping Windows on partition 2 holds the disk's volumes in its session: the Data
    NTFS before it is not shrunk and the Windows volume is not moved (review helper-61:
    the plan shrank partition 1, moved partition 2 and said nothing of the hibernation);
    refused, naming the sleeping volume, nothing written."""
    from restore_images import _place
    from shrink_images import _ntfs_fs
    img = tmp_path / "hib.img"
    with open(img, "wb") as f:
        f.truncate(300 * MiB)
    ri.run("sgdisk", "-n", "1:2048:+200M", "-t", "1:0700", "-c", "1:Data",
           "-n", "2:0:+60M", "-t", "2:0700", "-c", "2:Windows", str(img))
    win_start = 2048 + 200 * 2048
    _ntfs_fs(tmp_path / "data.fs", 200 * MiB, {"d/f.bin": os.urandom(MiB)}, 2048)
    _ntfs_fs(tmp_path / "win.fs", 60 * MiB, {"hiberfil.sys": b"HIBR" + bytes(MiB),
                                            "Windows/System32/ntoskrnl.exe": b"MZ" * 99},
             win_start)
    _place(img, tmp_path / "data.fs", MiB)
    _place(img, tmp_path / "win.fs", win_start * 512)
    before = ri.sha256_file(img)
    dev = small(200 * MiB)
    with pytest.raises(restore.Refused) as e:
        restore.plan_restore(str(img), dev, restore.RestoreOptions(), source_role=())
    said = "; ".join(e.value.problems)
    assert 'partition 1 (ntfs "Data"): the Windows on partition 2 (ntfs "Data") is ' \
        "hibernated: no volume of its disk moves or shrinks under its session" in said, said
    assert 'partition 2 (ntfs "Data"): Windows on it is hibernated' in said, said
    assert _untouched(dev) and ri.sha256_file(img) == before


def test_the_size_a_refusal_asks_for_is_the_smallest_disk_that_takes_the_image(tmp_path,
                                                                              loops):
    """"its partitions need at least N bytes": N is the smallest disk that is planned, to
    within a few sectors (review helper-61: about 1 MiB more, the backup table's room and
    the MiB rounding counted twice). A binary search over real loop devices."""
    from restore_images import _place
    img = tmp_path / "i.img"
    with open(img, "wb") as f:
        f.truncate(300 * MiB)
    ri.run("sgdisk", "-n", "2:2048:+250M", "-t", "2:0700", "-n", "1:0:+40M", "-t", "1:ef00",
           str(img))
    ntfs, fat = tmp_path / "ntfs.fs", tmp_path / "fat.fs"
    for path, size in ((ntfs, 250 * MiB), (fat, 40 * MiB)):
        with open(path, "wb") as f:
            f.truncate(size)
    ri.run("mkntfs", "-F", "-Q", "-p", "2048", "-H", "255", "-S", "63", str(ntfs))
    ri.run("mkfs.vfat", "-F", "32", str(fat))
    _place(img, ntfs, MiB)
    _place(img, fat, 514048 * 512)

    def refusal(size: int) -> str | None:
        dev = loops(make_image(tmp_path / f"t{size}.img", size))
        try:
            restore.plan_restore(str(img), dev, restore.RestoreOptions(), source_role=())
        except restore.Refused as e:
            return "; ".join(e.problems)
        return None

    said = refusal(50 * MiB)
    need = int(re.search(r"need at least (\d+) bytes", said).group(1))
    assert refusal(need) is None, f"{need} bytes were asked for and are refused"
    lo, hi = 40 * MiB, need
    while hi - lo > 512:  # the smallest disk that is planned
        mid = (lo + hi) // 2 // 512 * 512
        lo, hi = (lo, mid) if refusal(mid) is None else (mid, hi)
    assert need - hi <= 4096, f"said {need} bytes needed, {hi} bytes are enough"


def test_an_image_changed_while_restored_leaves_no_valid_disk(images, small, tmp_path):
    """The SHA-256 is checked on the image file before writing; a file written since
    (here while it is shrunk) is caught before the first MiB: no table on the disk."""
    img = tmp_path / "changing.img"
    subprocess.run(["cp", "--sparse=always", str(images["ntfs"].path), str(img)], check=True)
    dev = small()
    plan = restore.plan_restore(str(img), dev, restore.RestoreOptions(
        sha256=images["ntfs"].sha256), source_role=())
    tampered = []

    def progress(p):
        if p.phase == "shrink" and not tampered:
            with open(img, "r+b") as f:
                f.seek(MiB)
                f.write(b"TAMPERED")
            tampered.append(True)
    res = restore.restore(plan, progress=progress)
    assert tampered and res.status == "mismatch", res.message
    assert "the image changed while" in res.message
    with open(dev, "rb") as f:
        assert f.read(MiB) == bytes(MiB)  # no partition table


def test_a_compressed_mbr_image_too_large_is_refused_before_writing(small, tmp_path):
    img = tmp_path / "mbr.img"
    with open(img, "wb") as f:
        f.truncate(300 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: dos\n2048,,83\n", text=True,
                   check=True, capture_output=True)
    z = ri.compress(img, "gzip", tmp_path / "mbr.img.gz")
    dev = small()
    with pytest.raises(restore.Refused, match="describes a disk of at least 314572800 bytes"):
        restore.plan_restore(str(z), dev, restore.RestoreOptions(), source_role=())
    assert _untouched(dev)


def test_a_bad_tmpdir_is_refused_at_plan_time(images, small, tmp_path):
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    dev = small()
    with pytest.raises(restore.Refused, match="not a writable directory"):
        restore.plan_restore(str(images["ntfs"].path), dev,
                             restore.RestoreOptions(tmpdir=str(not_dir)), source_role=())
    assert _untouched(dev)


def test_a_backing_file_changed_while_restored_is_caught(images, small, tmp_path):
    base = tmp_path / "base.img"
    subprocess.run(["cp", "--sparse=always", str(images["ntfs"].path), str(base)], check=True)
    child = tmp_path / "child.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base),
                    str(child)], check=True)
    dev = small()
    plan = restore.plan_restore(str(child), dev, restore.RestoreOptions(), source_role=())
    tampered = []

    def progress(p):
        if p.phase == "shrink" and not tampered:
            with open(base, "r+b") as f:
                f.seek(2 * MiB)  # in the ESP, which is written as it is
                f.write(b"TAMPERED")
            tampered.append(True)
    res = restore.restore(plan, progress=progress)
    assert tampered and res.status == "mismatch", res.message
    assert f"backing file {base} changed" in res.message
