"""Disk Copy on real loop devices: copies and verifies with odd sizes, every
refusal, kill -9 and resume, a FUSE-backed source with real EIO sectors, a
corrupted target, zero skipping and cancel. Needs root; a few seconds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, RTK, MiB, rtk
from loopdev import fuse_disk, make_image, run

from toolkit.blockio import allocation, blockdev
from toolkit.blockio.hashing import RegionHasher
from toolkit.blockio.mapfile import Mapfile
from toolkit.blockio.verify import verify_against
from toolkit.copy import engine as copymod

pytestmark = pytest.mark.host

ODD = 64 * MiB + 3 * 512  # not a multiple of the chunk, odd sector count


def random_image(path: Path, size: int, seed: int = 1) -> Path:
    import random

    rnd = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rnd.randbytes(n))
            left -= n
    return path


def filled_image(path: Path, size: int, byte: int = 0xA5) -> Path:
    with open(path, "wb") as f:
        f.write(bytes([byte]) * size)
    return path


def same(a: str, b: str, size: int) -> bool:
    return subprocess.run(["cmp", "-n", str(size), a, b], capture_output=True).returncode == 0


def ddrescuelog_ok(mapfile: str) -> str:
    return run("ddrescuelog", "-t", mapfile)


def quick_options(**kw) -> copymod.CopyOptions:
    return copymod.CopyOptions(**{"chunk_size": 4 * MiB, **kw})


# --- copy and verify ---------------------------------------------------------------------


def test_odd_size_copy_is_verified_and_identical(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", ODD))
    dst = loops(filled_image(tmp_path / "dst.img", 80 * MiB))
    events = []
    plan = copymod.plan_copy(src, dst)
    result = copymod.copy(plan, quick_options(), progress=events.append)
    assert result.status == "ok", result.message
    assert result.verify.match and result.verify.method == "read back target"
    assert same(src, dst, ODD)
    with open(tmp_path / "src.img", "rb") as f:
        import blake3

        assert result.source_digest.hexdigest == blake3.blake3(f.read()).hexdigest()
    # the bytes past the source's size are untouched, but the target's last MiB: zeroed
    with open(tmp_path / "dst.img", "rb") as f:
        f.seek(ODD)
        assert f.read() == b"\xa5" * (79 * MiB - ODD) + bytes(MiB)
    assert any("last 1048576 bytes, beyond the copy, were zeroed (they held old data)" in w
               for w in result.warnings), result.warnings
    assert {e.phase for e in events} == {"copy", "verify"}
    assert events[-1].done == events[-1].total == ODD
    data = json.loads(Path(result.report.json).read_text())
    assert data["result"] == "ok" and data["exit_code"] == 0
    assert data["source"]["size"] == ODD and data["target"]["node"] == dst
    assert data["hash"]["source"] == data["hash"]["target"] == result.source_digest.hexdigest
    assert Path(result.report.text).name.startswith("copy-")
    assert "finished" in ddrescuelog_ok(result.mapfile)
    assert Mapfile.load(result.mapfile).blocks == [(0, ODD, "+")]


def test_a_larger_target_keeps_no_old_backup_gpt(tmp_path, loops, log_dir):
    """The old disk's backup GPT at the larger target's end would make gdisk offer the old
    partitions back: it is zeroed, and the copy's own GPT is what the disk shows."""
    src_img, dst_img = tmp_path / "src.img", tmp_path / "dst.img"
    make_image(src_img, 32 * MiB)
    run("sgdisk", "-U", "11111111-2222-3333-4444-555555555555", "-n", "1:2048:+8M",
        str(src_img))
    make_image(dst_img, 64 * MiB)
    run("sgdisk", "-U", "99999999-8888-7777-6666-555555555555", "-n", "1:2048:+40M",
        "-n", "2:0:0", str(dst_img))
    src, dst = loops(src_img), loops(dst_img)
    result = copymod.copy(copymod.plan_copy(src, dst), quick_options())
    assert result.status == "ok", result.message
    with open(dst_img, "rb") as f:
        f.seek(64 * MiB - 512)
        assert f.read(8) != b"EFI PART"  # the old backup header is gone
        f.seek(64 * MiB - MiB)
        assert f.read() == bytes(MiB)
    assert any("an old backup GPT" in w for w in result.warnings), result.warnings
    shown = run("sgdisk", "-p", str(dst_img))
    assert "11111111-2222-3333-4444-555555555555" in shown.upper() and "99999999" not in shown


def test_cli_copy_sha256_matches_sha256sum(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", 8 * MiB + 512, seed=2))
    dst = loops(make_image(tmp_path / "dst.img", 9 * MiB))
    p = rtk("copy", src, dst, "--hash", "sha256", "--yes", "--target-id", os.path.basename(dst))
    assert p.returncode == 0, p.stderr
    want = run("sha256sum", str(tmp_path / "src.img")).split()[0]
    assert f"sha256 source: {want}" in p.stdout
    assert "ETA" in p.stderr and "verify" in p.stderr
    assert same(src, dst, 8 * MiB + 512)


def test_cli_confirmation_is_required_and_checked(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", MiB))
    dst = loops(filled_image(tmp_path / "dst.img", MiB))
    for args in ([], ["--yes"], ["--yes", "--target-id", "SOMEONE-ELSES"]):
        p = rtk("copy", src, dst, *args, stdin=subprocess.DEVNULL)
        assert p.returncode == 5, (args, p.stderr)
    assert not same(src, dst, MiB)  # nothing was written


# --- refusals ------------------------------------------------------------------------------


def test_4096_byte_sectors_refused_against_512(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", 4 * MiB))
    dst = loops(make_image(tmp_path / "dst.img", 8 * MiB), sector_size=4096)
    with pytest.raises(copymod.Refused) as e:
        copymod.plan_copy(src, dst)
    assert "512-byte" in str(e.value) and "4096-byte" in str(e.value)
    p = rtk("copy", src, dst, "--yes", "--target-id", os.path.basename(dst))
    assert p.returncode == 5 and "4096-byte" in p.stderr and "512-byte" in p.stderr


def test_smaller_target_refused_with_both_sizes(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", 4 * MiB + 512))
    dst = loops(make_image(tmp_path / "dst.img", 4 * MiB))
    with pytest.raises(copymod.Refused) as e:
        copymod.plan_copy(src, dst)
    assert str(4 * MiB + 512) in str(e.value) and str(4 * MiB) in str(e.value)


def test_source_by_another_path_refused(tmp_path, loops, log_dir):
    img = random_image(tmp_path / "src.img", 4 * MiB)
    src = loops(img)
    link = tmp_path / "also-src"
    link.symlink_to(src)
    with pytest.raises(copymod.Refused, match="target is the source"):
        copymod.plan_copy(src, str(link))
    # a second loop device over the same file is the same disk
    other = loops(img)
    with pytest.raises(copymod.Refused, match="same disk"):
        copymod.plan_copy(src, other)


def test_partition_of_source_and_its_parent_refused(tmp_path, loops, log_dir):
    img = make_image(tmp_path / "src.img", 32 * MiB)
    run("sgdisk", "-o", "-n1:1M:+8M", "-n2:0:+8M", str(img))
    src = loops(img, partitions=True)
    assert os.path.exists(f"{src}p1"), "partx gave no partitions"
    with pytest.raises(copymod.Refused, match="is a partition of the source"):
        copymod.plan_copy(src, f"{src}p1")
    with pytest.raises(copymod.Refused, match="holds the source partition"):
        copymod.plan_copy(f"{src}p1", src)
    copymod.plan_copy(f"{src}p1", f"{src}p2")  # side by side on one disk: allowed


def test_mounted_target_refused(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", 8 * MiB))
    dst = loops(make_image(tmp_path / "dst.img", 16 * MiB))
    run("mkfs.ext4", "-q", dst)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", dst, str(mnt))
    try:
        with pytest.raises(copymod.Refused, match=f"mounted at {mnt}"):
            copymod.plan_copy(src, dst)
    finally:
        run("umount", str(mnt))


def test_target_open_exclusively_elsewhere_refused(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", 4 * MiB))
    dst = loops(filled_image(tmp_path / "dst.img", 4 * MiB))
    holder = os.open(dst, os.O_RDONLY | os.O_EXCL)
    try:
        plan = copymod.plan_copy(src, dst)  # nothing in the inventory says busy
        with pytest.raises(copymod.Refused, match="busy"):
            copymod.copy(plan, quick_options())
        p = rtk("copy", src, dst, "--yes", "--target-id", os.path.basename(dst))
        assert p.returncode == 5 and "busy" in p.stderr
    finally:
        os.close(holder)
    assert not same(src, dst, 4 * MiB)


# --- interruption and resume ------------------------------------------------------------------


def test_kill_9_then_resume_gives_identical_disk(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", ODD, seed=3))
    dst = loops(filled_image(tmp_path / "dst.img", ODD))
    mapfile = str(tmp_path / "copy.map")
    args = ["copy", src, dst, "--yes", "--target-id", os.path.basename(dst),
            "--mapfile", mapfile]
    proc = subprocess.Popen([*RTK, *args, "--max-rate", "32M",
                             "--mapfile-interval", "0.1", "--chunk-size", "1M"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        done = 0
        while time.monotonic() < deadline and done < 16 * MiB:
            time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError, ValueError):
                done = Mapfile.load(mapfile).bytes_with("+")
        assert proc.poll() is None, "the copy ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed = Mapfile.load(mapfile)
    assert 0 < killed.bytes_with("+") < ODD and killed.bytes_with("?") > 0
    ddrescuelog_ok(mapfile)
    p = rtk(*args, "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(src, dst, ODD)
    assert subprocess.run(["ddrescuelog", "-D", mapfile]).returncode == 0  # all finished
    data = json.loads(Path(p.stdout.split("report: ")[1].strip()[:-4] + ".json").read_text())
    assert data["copy"]["resumed"] is True
    assert data["copy"]["copied_bytes"] < ODD
    # the whole disk, again: this run's part read back behind the writer, what the killed
    # run had copied compared with the source after the copy
    v = data["verify"]
    assert v["method"] == "read back target and compared with source"
    assert v["read_back_bytes"] == data["copy"]["copied_bytes"]
    assert v["compared_bytes"] == ODD - data["copy"]["copied_bytes"]
    assert data["verify"]["result"] == "match"


def test_cancel_leaves_a_consistent_mapfile(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", 32 * MiB, seed=4))
    dst = loops(filled_image(tmp_path / "dst.img", 32 * MiB))
    mapfile = str(tmp_path / "c.map")
    cancel = threading.Event()

    def progress(p):
        if p.done >= 8 * MiB:
            cancel.set()

    opts = quick_options(mapfile=mapfile, max_rate=64 * MiB, chunk_size=MiB,
                         progress_interval=0)
    plan = copymod.plan_copy(src, dst)
    result = copymod.copy(plan, opts, progress=progress, cancel=cancel)
    assert result.status == "cancelled" and result.exit_code == 1
    m = Mapfile.load(mapfile)
    assert 8 * MiB <= m.bytes_with("+") < 32 * MiB
    with open(tmp_path / "src.img", "rb") as a, open(tmp_path / "dst.img", "rb") as b:
        for pos, size in m.ranges("+"):  # what the map calls finished is on the target
            a.seek(pos)
            b.seek(pos)
            assert a.read(size) == b.read(size)
    result = copymod.copy(plan, copymod.CopyOptions(mapfile=mapfile, existing="resume"))
    assert result.status == "ok" and result.resumed and same(src, dst, 32 * MiB)


def test_a_hashing_failure_stops_the_copy_at_once(tmp_path, loops, log_dir, hashing_fails_at):
    """Should the hash stage fail (made to here: a bug, memory), the copy stops writing
    at once and raises it, rather than copying the rest of the disk unverifiable."""
    src = loops(random_image(tmp_path / "src.img", 64 * MiB, seed=5))
    dst = loops(filled_image(tmp_path / "dst.img", 64 * MiB))
    hashing_fails_at(8 * MiB)
    events: list = []
    plan = copymod.plan_copy(src, dst)
    with pytest.raises(MemoryError, match="made to fail"):
        copymod.copy(plan, quick_options(chunk_size=MiB, progress_interval=0),
                     progress=events.append)
    assert events and max(e.done for e in events) <= 8 * MiB  # nothing after the failure


# --- bad sectors -------------------------------------------------------------------------------

BAD = [(3 * MiB + 7 * 512, 5 * 512), (9 * MiB + 512, 512), (16 * MiB - 1024, 1024)]


@pytest.fixture
def bad_source(tmp_path, need_root):
    """A loop device over a FUSE file whose reads fail with EIO in :data:`BAD`."""
    backing = random_image(tmp_path / "backing.img", 16 * MiB, seed=5)
    with fuse_disk(backing, tmp_path / "fuse", BAD) as disk:
        dev = run("losetup", "-r", "-f", "--show", str(disk)).strip()
        try:
            yield dev, backing
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)


def test_unreadable_sectors_recorded_exactly(tmp_path, loops, bad_source, log_dir):
    src, backing = bad_source
    fd = os.open(src, os.O_RDONLY | os.O_DIRECT)
    buf = blockdev.AlignedBuffer(512)
    try:  # the source really fails there, and only there
        with pytest.raises(OSError):
            os.preadv(fd, [buf.view], BAD[1][0])
        assert os.preadv(fd, [buf.view], BAD[1][0] + 512) == 512
    finally:
        buf.close()
        os.close(fd)
    dst = loops(filled_image(tmp_path / "dst.img", 16 * MiB))
    mapfile = str(tmp_path / "bad.map")
    p = rtk("copy", src, dst, "--yes", "--target-id", os.path.basename(dst),
            "--mapfile", mapfile)
    assert p.returncode == 3, p.stdout + p.stderr
    assert f"completed with {sum(n for _s, n in BAD)} unreadable bytes" in p.stdout
    m = Mapfile.load(mapfile)
    assert list(m.ranges("-")) == BAD
    assert m.bytes_with("+") == 16 * MiB - sum(n for _s, n in BAD) and m.finished
    bad_bytes = sum(n for _s, n in BAD)
    assert re.search(rf"bad-sector:\s+{bad_bytes} B,\s+in\s+3 area", ddrescuelog_ok(mapfile))
    data = json.loads(Path(p.stdout.split("report: ")[1].strip()[:-4] + ".json").read_text())
    assert [(r["start"], r["size"]) for r in data["unreadable"]["ranges"]] == BAD
    assert data["result"] == "unreadable" and data["verify"]["result"] == "match"
    # the target: the source's data, zeros where it could not be read
    want = bytearray(Path(backing).read_bytes())
    for s, n in BAD:
        want[s:s + n] = bytes(n)
    assert Path(tmp_path / "dst.img").read_bytes() == bytes(want)


# --- verification catches corruption --------------------------------------------------------


def test_corrupted_target_is_caught_with_first_difference(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", ODD, seed=6))
    dst_img = filled_image(tmp_path / "dst.img", ODD)
    dst = loops(dst_img)
    plan = copymod.plan_copy(src, dst)
    result = copymod.copy(plan, quick_options(verify=False))
    assert result.status == "ok" and result.verify is None
    flip = 37 * MiB + 12345
    with open(dst_img, "r+b") as f:
        f.seek(flip)
        old = f.read(1)
        f.seek(flip)
        f.write(bytes([old[0] ^ 0x40]))
        f.flush()
        os.fsync(f.fileno())
    p = rtk("verify", src, dst)
    assert p.returncode == 4, p.stdout + p.stderr
    assert f"first difference at byte {flip}" in p.stdout
    v = copymod.verify_disks(src, dst, write_report=False)
    assert v.verify.first_difference["offset"] == flip
    start, end = v.verify.first_difference["start"], v.verify.first_difference["end"]
    assert start <= flip < end and v.verify.differing_regions == 1
    # against region digests as a copy records them: the region holding the byte is named
    hasher = RegionHasher("blake3", ODD, 4 * MiB)
    with open(tmp_path / "src.img", "rb") as f:
        hasher.update(0, memoryview(f.read()))
    digest = hasher.digest()
    fd = blockdev.open_device(dst)
    try:
        out = verify_against(fd, digest)
    finally:
        os.close(fd)
    assert not out.match and out.differing_regions == 1
    assert out.first_difference == {"start": 36 * MiB, "end": 40 * MiB}
    # and against a recorded hash
    p = rtk("verify", dst, "--hash", digest.hexdigest, "--size", str(ODD))
    assert p.returncode == 4 and "VERIFICATION FAILED" in p.stdout
    p = rtk("verify", src, "--hash", digest.hexdigest, "--size", str(ODD))
    assert p.returncode == 0, p.stdout + p.stderr


def test_verify_during_copy_catches_a_target_that_lies(tmp_path, loops, log_dir):
    """The copy's own read-back: a target whose data is not what was written."""
    src = loops(random_image(tmp_path / "src.img", 8 * MiB, seed=7))
    dst = loops(make_image(tmp_path / "dst.img", 8 * MiB))
    # --skip-zeros on a target that is NOT zero: the read-back must notice
    with open(tmp_path / "src.img", "r+b") as f:
        f.seek(4 * MiB)
        f.write(bytes(4 * MiB))  # the second 4 MiB chunk of the source is all zeros
    filled_image(tmp_path / "dst.img", 8 * MiB, 0x11)
    result = copymod.copy(copymod.plan_copy(src, dst), quick_options(skip_zeros=True))
    assert result.status == "mismatch" and result.exit_code == 4
    fd = result.verify.first_difference
    assert (fd["start"], fd["end"]) == (4 * MiB, 8 * MiB)
    assert result.skipped_zero_bytes == 4 * MiB


# --- zero skipping ----------------------------------------------------------------------------


def test_skip_zeros_writes_only_data_chunks(tmp_path, loops, log_dir):
    size = 40 * MiB
    img = make_image(tmp_path / "src.img", size)  # 90% zeros
    data = os.urandom(4 * MiB)
    with open(img, "r+b") as f:
        f.seek(12 * MiB)
        f.write(data)
    src = loops(img)
    dst = loops(make_image(tmp_path / "dst.img", size))  # reads back zeros
    plan = copymod.plan_copy(src, dst)
    r = copymod.copy(plan, quick_options(skip_zeros=True, mapfile=str(tmp_path / "z.map")))
    assert r.status == "ok" and r.verify.match
    assert r.written_bytes == 4 * MiB and r.write_calls == 1
    assert r.skipped_zero_bytes == size - 4 * MiB
    # the file's holes are not even read
    assert (r.unread_hole_bytes, r.source_map) == (size - 4 * MiB,
                                                   "holes of the loop device's file")
    assert same(src, dst, size)
    # the default writes everything
    r = copymod.copy(plan, quick_options(mapfile=str(tmp_path / "all.map")))
    assert r.written_bytes == size and r.skipped_zero_bytes == 0


def test_skip_zeros_reads_around_holes_and_sees_unsynced_writes(tmp_path, loops, log_dir):
    """A sparse source file: chunks wholly in a hole are not read, chunks partly in
    one are read around it, and what was just written through the loop device
    (still in its cache, not yet in the file) is copied, not taken for a hole."""
    size = 40 * MiB
    img = make_image(tmp_path / "src.img", size)
    part = os.urandom(MiB)
    with open(img, "r+b") as f:
        f.seek(12 * MiB + 512 * 1024)  # inside the chunk [12, 16) MiB, holes around it
        f.write(part)
    src = loops(img)
    late = os.urandom(64 * 1024)
    writer = os.open(src, os.O_RDWR)  # buffered, and kept open (the last close syncs)
    try:
        os.pwrite(writer, late, 30 * MiB)
        holes = allocation.file_holes(str(img), 0, size)  # in the cache, not in the file
        assert any(p <= 30 * MiB and p + n >= 31 * MiB for p, n in holes), holes
        dst = loops(make_image(tmp_path / "dst.img", size))
        r = copymod.copy(copymod.plan_copy(src, dst),
                         quick_options(skip_zeros=True, mapfile=str(tmp_path / "h.map")))
    finally:
        os.close(writer)
    assert r.status == "ok" and r.verify.match, r.message
    assert r.unread_hole_bytes == size - 8 * MiB  # all but [12, 16) and [28, 32)
    assert r.written_bytes == len(part) + len(late)  # not the holes around them either
    with open(dst, "rb") as f:
        f.seek(12 * MiB + 512 * 1024)
        assert f.read(MiB) == part
        f.seek(30 * MiB)
        assert f.read(len(late)) == late
    assert same(src, dst, size)


def test_skip_zeros_maps_the_loops_own_file_not_the_one_now_at_its_path(tmp_path, loops,
                                                                        log_dir):
    """The loop device's file renamed and another, all holes, put at its old path: the
    map is the loop's own file's (the kernel follows the rename; its device and inode
    are checked), so no real data is taken for a hole."""
    size = 16 * MiB
    img = random_image(tmp_path / "src.img", size, seed=9)
    src = loops(img)
    img.rename(tmp_path / "src.old")
    make_image(tmp_path / "src.img", size)  # sparse: one big hole
    dst = loops(make_image(tmp_path / "dst.img", size))
    r = copymod.copy(copymod.plan_copy(src, dst),
                     quick_options(skip_zeros=True, mapfile=str(tmp_path / "r.map")))
    assert r.status == "ok" and r.verify.match, r.message
    assert (r.unread_hole_bytes, r.source_map) == (0, "holes of the loop device's file")
    assert r.written_bytes == size
    assert same(src, dst, size)


def test_skip_zeros_trusts_no_map_when_another_file_is_mounted_over_the_loops(tmp_path,
                                                                              loops, log_dir):
    """Another file, all holes, bind-mounted over the loop device's file: the path in
    sysfs now opens that one. Its device and inode are not the loop's: no map at all,
    every byte read (its holes would have made real data skipped, then "verified")."""
    size = 16 * MiB
    img = random_image(tmp_path / "src.img", size, seed=11)
    src = loops(img)
    other = make_image(tmp_path / "other.img", size)  # sparse: one big hole
    run("mount", "--bind", str(other), str(img))
    try:
        dst = loops(make_image(tmp_path / "dst.img", size))
        r = copymod.copy(copymod.plan_copy(src, dst),
                         quick_options(skip_zeros=True, mapfile=str(tmp_path / "m.map")))
    finally:
        run("umount", str(img))
    assert r.status == "ok" and r.verify.match, r.message
    assert (r.unread_hole_bytes, r.source_map) == (0, None)
    assert r.written_bytes == size and same(src, dst, size)


def test_after_a_copy_the_targets_partitions_show_what_was_copied(tmp_path, loops, log_dir):
    """The TARGET had partition 1 = NTFS "OLD" (30 MiB); the SOURCE's partition 1 is NTFS
    "NEW" (20 MiB) and it has a partition 2. After `rtk copy` the kernel's partitions of
    the target are the copied table's (sizes, partition 2) and a buffered read (blkid, a
    mount) sees the copied bytes, not the page cache of before (a review finding)."""
    def table(img: Path, spec: str) -> str:
        make_image(img, 64 * MiB)
        subprocess.run(["sfdisk", "-q", str(img)], input=spec, text=True, check=True,
                       capture_output=True)
        dev = loops(img)
        subprocess.run(["partx", "-d", dev], capture_output=True)  # a reused loop's leftovers
        run("partx", "-a", dev)
        return dev

    dst = table(tmp_path / "dst.img", "label: gpt\nstart=2048, size=30M\n")
    run("mkntfs", "-Q", "-L", "OLD", f"{dst}p1")
    with open(f"{dst}p1", "rb") as f:  # in the page cache, as a listing leaves it
        f.read(4 * MiB)
    src = table(tmp_path / "src.img", "label: gpt\nstart=2048, size=20M\nsize=20M\n")
    run("mkntfs", "-Q", "-L", "NEW", f"{src}p1")
    p = rtk("copy", src, dst, "--yes", "--target-id", os.path.basename(dst))
    assert p.returncode == 0, p.stdout + p.stderr
    label = subprocess.run(["blkid", "-p", "-s", "LABEL", "-o", "value", f"{dst}p1"],
                           capture_output=True, text=True).stdout.strip()
    sectors = int(Path(f"/sys/class/block/{os.path.basename(dst)}p1/size").read_text())
    assert (label, sectors * 512, os.path.exists(f"{dst}p2")) == ("NEW", 20 * MiB, True)
