"""A copy limited to a domain (CopyOptions.domain: toolkit/copy/scope.py) on real loop
devices: exactly the domain's bytes are read, written and verified; the target's blocks
outside it are freed where it then reads back zeros (a loop device over a file: holes
punched) or left as they were (asked to, or a FUSE file that cannot punch holes), and the
report says which; bad sectors outside the domain are never read; a mapfile of another
domain (or of a whole-disk copy) is not taken; cancel and resume stay within the domain."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import MiB
from loopdev import fuse_disk, loop_device, run
from test_copy_host import ddrescuelog_ok, filled_image, quick_options, random_image

from toolkit.blockio.mapfile import Mapfile
from toolkit.copy import engine as copymod
from toolkit.copy.behind import BOTH
from toolkit.copy.usedblocks import Domain, DomainPart

pytestmark = pytest.mark.host

SIZE = 64 * MiB
RANGES = [(0, MiB), (5 * MiB + 512, 3 * MiB), (20 * MiB, 9 * MiB), (40 * MiB, 4096)]
OLD = 0xA5  # what the target held before


def used(size: int, ranges) -> Domain:
    """A domain as toolkit.copy.usedblocks makes it: one NTFS partition mapped."""
    return Domain(size, 512, ranges, [DomainPart(1, MiB, size - MiB, "ntfs", "Vol1",
                                                 "partclone.ntfs", sum(n for _p, n in ranges)
                                                 - MiB, "")])


def outside(ranges, size):
    out, at = [], 0
    for p, n in ranges:
        if p > at:
            out.append((at, p - at))
        at = p + n
    return out + ([(at, size - at)] if at < size else [])


def check_target(src_img: Path, dst_img: Path, ranges, free_byte: int | None) -> None:
    """Inside the domain the source's bytes; outside, ``free_byte`` (None: zeros)."""
    src, dst = src_img.read_bytes(), dst_img.read_bytes()
    for p, n in ranges:
        assert dst[p:p + n] == src[p:p + n], f"domain range at {p}"
    for p, n in outside(ranges, len(src)):
        assert dst[p:p + n] == bytes([free_byte or 0]) * n, f"free range at {p}"


@pytest.fixture
def pair(tmp_path, loops, log_dir):
    src_img = random_image(tmp_path / "src.img", SIZE, seed=41)
    dst_img = filled_image(tmp_path / "dst.img", SIZE, OLD)
    return src_img, dst_img, copymod.plan_copy(loops(src_img), loops(dst_img))


def test_only_the_domain_is_copied_and_the_free_blocks_are_freed_to_zeros(pair):
    src_img, dst_img, plan = pair
    d = used(SIZE, RANGES)
    events: list = []
    result = copymod.copy(plan, quick_options(domain=d, chunk_size=MiB, progress_interval=0),
                          progress=events.append)
    assert result.status == "ok", result.message
    check_target(src_img, dst_img, RANGES, None)
    assert result.copied_bytes == result.written_bytes == d.bytes()
    assert os.stat(dst_img).st_blocks * 512 < SIZE - 40 * MiB  # holes punched in the file
    assert result.message == (
        f"copied {d.bytes()} bytes, verified: {d.summary()}, identical; "
        "free blocks: discarded, the target reads back zeros")
    v = result.verify
    assert v.method == "read back target" and v.read_back_bytes == d.bytes()
    assert v.covered == d.summary()
    assert {e.total for e in events if e.phase in ("copy", "verify")} == {d.bytes()}
    data = json.loads(Path(result.report.json).read_text())
    assert data["copy"]["domain"]["digest"] == d.digest()
    assert data["copy"]["domain"]["summary"] == d.summary()
    assert data["copy"]["free_blocks"]["action"] == "discarded"
    assert data["copy"]["free_blocks"]["bytes"] == SIZE - d.bytes()
    assert data["verify"]["covered"] == d.summary()
    text = Path(result.report.text).read_text()
    assert "free blocks" in text and "discarded, the target reads back zeros" in text
    m = Mapfile.load(result.mapfile)  # outside the domain: never tried
    assert list(m.ranges("+")) == RANGES and m.bytes_with("?") == SIZE - d.bytes()
    assert json.loads(m.meta["domain"])["digest"] == d.digest()
    ddrescuelog_ok(result.mapfile)


def test_free_blocks_left_as_they_were_when_asked(pair):
    src_img, dst_img, plan = pair
    result = copymod.copy(plan, quick_options(domain=used(SIZE, RANGES), free_blocks="leave"))
    assert result.status == "ok", result.message
    check_target(src_img, dst_img, RANGES, OLD)
    assert result.free_blocks["action"] == "left"
    assert result.message.endswith(
        "free blocks: left as they were on the target (not copied, not verified)")


def test_a_target_that_cannot_free_blocks_keeps_them(tmp_path, loops, log_dir):
    """A loop device over a FUSE file: the loop driver offers write-zeroes, the file
    cannot punch holes: the free blocks stay as they were, and the report says so."""
    src_img = random_image(tmp_path / "src.img", SIZE, seed=42)
    backing = filled_image(tmp_path / "fuse-backing.img", SIZE, OLD)
    with fuse_disk(backing, tmp_path / "fuse", [], writes="lost") as disk, \
            loop_device(disk, partitions=False) as dst:
        result = copymod.copy(copymod.plan_copy(loops(src_img), dst),
                              quick_options(domain=used(SIZE, RANGES)))
    assert result.status == "ok", result.message
    check_target(src_img, backing, RANGES, OLD)
    fb = result.free_blocks
    assert fb["action"] == "left" and "refused to free them" in fb["how"], fb
    assert "left as they were on the target" in result.message


def test_bad_sectors_outside_the_domain_are_never_read(tmp_path, loops, log_dir):
    size = 16 * MiB
    inside, out = (3 * MiB + 7 * 512, 2 * 512), (12 * MiB, 4096)
    backing = random_image(tmp_path / "backing.img", size, seed=43)
    dst_img = filled_image(tmp_path / "dst.img", size, OLD)
    ranges = [(0, 8 * MiB), (14 * MiB, MiB)]
    with fuse_disk(backing, tmp_path / "fuse", [inside, out]) as disk:
        src = run("losetup", "-r", "-f", "--show", str(disk)).strip()
        try:
            result = copymod.copy(copymod.plan_copy(src, loops(dst_img)),
                                  quick_options(domain=used(size, ranges), chunk_size=MiB))
        finally:
            subprocess.run(["losetup", "-d", src], check=False)
    assert result.status == "unreadable", result.message
    assert result.unreadable == [inside]  # the one outside was never read
    assert result.verify.match  # zeros where unreadable, the rest identical
    want = bytearray(backing.read_bytes())
    want[inside[0]:sum(inside)] = bytes(inside[1])
    got = dst_img.read_bytes()
    for p, n in ranges:
        assert got[p:p + n] == want[p:p + n]
    assert "free blocks: discarded" in result.message


def test_a_mapfile_of_another_domain_is_not_taken(pair):
    src_img, dst_img, plan = pair
    mapfile = str(Path(src_img).parent / "d.map")
    first = copymod.copy(plan, quick_options(domain=used(SIZE, RANGES[:2]), mapfile=mapfile,
                                             free_blocks="leave"))
    assert first.status == "ok", first.message
    again = copymod.copy(plan, quick_options(domain=used(SIZE, RANGES[:2]), mapfile=mapfile,
                                             existing="resume", free_blocks="leave"))
    assert again.status == "ok" and not again.copied_bytes, again.message
    assert again.message.startswith("nothing left to copy: this pair was already copied on ")
    assert again.message.endswith(f"verified again: {used(SIZE, RANGES[:2]).summary()}, "
                                  "identical; free blocks: left as they were on the target "
                                  "(not copied, not verified)")
    other = used(SIZE, RANGES)
    for domain in (other, None):  # another domain, or the whole disk
        with pytest.raises(copymod.Refused) as e:
            copymod.copy(plan, quick_options(domain=domain, mapfile=mapfile,
                                             existing="resume"))
        why = str(e.value)
        assert f"it was written for a copy of {used(SIZE, RANGES[:2]).summary()}" in why, why
        assert "--resume is refused" in why and "--restart" in why
    assert dst_img.read_bytes()[20 * MiB:21 * MiB] == bytes([OLD]) * MiB  # nothing written
    again = copymod.copy(plan, quick_options(domain=other, mapfile=mapfile,
                                             existing="restart", free_blocks="leave"))
    assert again.status == "ok" and again.copied_bytes == other.bytes()
    check_target(src_img, dst_img, RANGES, OLD)


def test_a_whole_disk_mapfile_is_not_taken_by_a_domain_copy(pair):
    _src, _dst, plan = pair
    mapfile = str(Path(_src).parent / "w.map")
    assert copymod.copy(plan, quick_options(mapfile=mapfile)).status == "ok"
    with pytest.raises(copymod.Refused, match="written for a copy of the whole source"):
        copymod.copy(plan, quick_options(domain=used(SIZE, RANGES), mapfile=mapfile,
                                         existing="resume"))


def test_cancel_and_resume_within_the_domain(pair):
    src_img, dst_img, plan = pair
    ranges = [(0, MiB), (8 * MiB, 40 * MiB)]
    d = used(SIZE, ranges)
    mapfile = str(Path(src_img).parent / "c.map")
    cancel = threading.Event()

    def progress(p):
        assert p.total in (d.bytes(), 0) or p.phase == "discard"
        if p.phase == "copy" and p.done >= 16 * MiB:
            cancel.set()
    first = copymod.copy(plan, quick_options(domain=d, mapfile=mapfile, chunk_size=MiB,
                                             max_rate=48 * MiB, progress_interval=0),
                         progress=progress, cancel=cancel)
    assert first.status == "cancelled" and first.free_blocks is None  # not touched yet
    earlier = Mapfile.load(mapfile).bytes_with("+")
    assert 16 * MiB <= earlier < d.bytes()
    result = copymod.copy(plan, quick_options(domain=d, mapfile=mapfile, existing="resume"))
    assert result.status == "ok" and result.resumed, result.message
    assert result.copied_bytes == d.bytes() - earlier
    assert result.verify.method == BOTH and result.verify.compared_bytes == earlier
    assert result.message.startswith(f"copied {d.bytes() - earlier} bytes in this run (the "
                                     f"mapfile says the other {earlier} were copied before), "
                                     f"verified: {d.summary()}, identical")
    check_target(src_img, dst_img, ranges, None)


def test_a_cancel_while_the_free_blocks_are_freed_is_said_as_a_cancel(pair):
    """Cancelled as the discard phase starts: the target did not refuse anything, the
    free blocks were left as they were."""
    src_img, dst_img, plan = pair
    cancel = threading.Event()

    def progress(p):
        if p.phase == "discard":
            cancel.set()
    result = copymod.copy(plan, quick_options(domain=used(SIZE, RANGES), progress_interval=0),
                          progress=progress, cancel=cancel)
    fb = result.free_blocks
    assert fb["action"] == "left" and fb["how"] == (
        "cancelled before the free blocks were freed: left as they were"), fb
    check_target(src_img, dst_img, RANGES, OLD)


def test_a_domain_of_another_disk_is_refused_and_nothing_is_written(pair):
    _src, dst_img, plan = pair
    with pytest.raises(copymod.Refused, match="worked out for a source of"):
        copymod.copy(plan, quick_options(domain=used(2 * SIZE, RANGES)))
    with pytest.raises(copymod.Refused, match="not on a sector boundary"):
        copymod.copy(plan, quick_options(domain=used(SIZE, [(100, 512)])))
    assert dst_img.read_bytes() == bytes([OLD]) * SIZE


def test_a_used_blocks_resume_of_a_whole_copys_mapfile_is_refused_before_the_question(
        tmp_path, loops, log_dir):
    """`rtk copy --used-blocks --resume` after a whole-disk copy of the pair: its mapfile
    is of another domain. Said before the confirmation, not "resuming" then refused."""
    from conftest import rtk
    img = random_image(tmp_path / "src.img", 48 * MiB, seed=44)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\nstart=2048, size=40M\n",
                   text=True, check=True, capture_output=True)
    src = loops(img, partitions=True)
    run("mkntfs", "-Q", "-L", "Vol1", f"{src}p1")
    dst = loops(random_image(tmp_path / "dst.img", 48 * MiB, seed=45))
    env = {"RTK_LOG_DIR": str(log_dir)}
    ident = os.path.basename(dst)
    p = rtk("copy", src, dst, "--yes", "--target-id", ident, env_extra=env)
    assert p.returncode == 0, p.stdout + p.stderr
    p = rtk("copy", src, dst, "--used-blocks", "--resume", "--yes", "--target-id", ident,
            env_extra=env)
    assert p.returncode == 5, p.stdout + p.stderr
    assert "resuming" not in p.stderr and "written for a copy of the whole source" in \
        p.stderr, p.stderr
