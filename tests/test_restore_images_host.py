"""Images as the field makes them (issue 18 item 6), restored onto real loop devices.

The samples are QEMU's, made by the formats' native tools (tests/fixtures/qemu-samples:
Hyper-V and Disk2vhd VHDX, Virtual PC, Hyper-V and Disk2vhd VHD, a VMware
streamOptimized VMDK): each restores to exactly the bytes ``qemu-img convert -O raw``
makes of it. A VHDX whose log was never replayed (its Hyper-V host stopped) is no
longer refused as damaged: its log is replayed on a copy in the temporary directory
(the file itself unchanged, hashed before and after), or in the file itself only when
asked (``vhdx_log="in-place"``, ``--replay-vhdx-log-in-place``), and a copy that does not
fit is refused with both figures and what to do, nothing written; a compressed one is
replayed on its unpacked copy. Images damaged by a fuzzer are refused in plain words,
the target untouched. The big virtual sizes (127 GiB) cost no space: qemu-img zeroes
the sparse loop devices' backing files by punching holes. Needs root; about 3 minutes
(qemu's VHDX driver reports no allocation: the 10 GiB VHDX is read whole, twice).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB, rtk
from loopdev import marked_image

from toolkit import restore
from toolkit.restore import vhdx

pytestmark = pytest.mark.host

MARKER = b"RTK-MARKER-" * 100
DIRTY = "iotest-dirtylog-10G-4M.vhdx"


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


def unpack(name: str, directory: Path) -> Path:
    return ri.qemu_sample(name, directory)


def reference(image: Path, fmt: str, out: Path) -> Path:
    """qemu-img's own raw image of ``image``."""
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(out)],
                   check=True, capture_output=True)
    return out


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def target(tmp_path, loops):
    """``target(size)`` -> (loop device, its backing file): MARKER in its first MiB and
    in the MiB before its end, the rest holes."""
    made = []

    def make(size: int) -> tuple[str, Path]:
        size = -(-size // MiB) * MiB + MiB
        backing = marked_image(tmp_path / f"target{len(made)}.img", size, MARKER)
        made.append(backing)
        return loops(backing), backing
    return make


def untouched(backing: Path) -> bool:
    size = backing.stat().st_size
    with open(backing, "rb") as f:
        return f.read(len(MARKER)) == MARKER and os.pread(f.fileno(), len(MARKER),
                                                          size - MiB) == MARKER


def _data(path: Path, size: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    with open(path, "rb") as f:
        while pos < size:
            try:
                start = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            end = min(size, os.lseek(f.fileno(), start, os.SEEK_HOLE))
            if start >= size:
                break
            out.append((start, end))
            pos = end
    return out


def assert_same(dev: str, backing: Path, ref: Path, size: int) -> None:
    """The device's first ``size`` bytes are ``ref``'s: compared byte for byte wherever
    the target's backing file or the reference holds data; everywhere else both files are
    holes, which read as zeros (so a 127 GiB disk is compared in a second)."""
    assert ref.stat().st_size == size
    spans = sorted(_data(backing, size) + _data(ref, size))
    subprocess.run(["blockdev", "--flushbufs", dev], check=True)  # read the device itself
    with open(dev, "rb") as d, open(ref, "rb") as r:
        for start, end in spans:
            pos = start
            while pos < end:
                n = min(8 * MiB, end - pos)
                assert os.pread(d.fileno(), n, pos) == os.pread(r.fileno(), n, pos), \
                    f"the restored disk differs from qemu-img's raw image in [{pos}, {pos + n})"
                pos += n


def plan(image: Path, dev: str, **opts) -> restore.RestorePlan:
    return restore.plan_restore(str(image), dev, restore.RestoreOptions(**opts),
                                source_role=())


NATIVE = [  # (sample, qemu-img driver, made by, verified by the restore)
    ("iotest-dynamic-1G.vhdx", "vhdx", "Hyper-V", True),
    ("test-disk2vhd.vhdx", "vhdx", "Disk2vhd", True),
    ("d2v-zerofilled.vhd", "vpc", "Disk2vhd", True),
    ("iotest-version3.vmdk", "vmdk", "VMware", True),
    # 127 GiB each: not read back by the restore (its piecewise compare takes two
    # minutes here); compared below like the others, byte for byte where there is data
    ("virtualpc-dynamic.vhd", "vpc", "Virtual PC", False),
    ("hyperv2012r2-dynamic.vhd", "vpc", "Hyper-V", False),
]


@pytest.mark.parametrize("name, fmt, maker, verify", NATIVE,
                         ids=[f"{n}-{m}" for n, _f, m, _v in NATIVE])
def test_a_native_tool_s_image_restores_as_qemu_img_converts_it(tmp_path, target, name, fmt,
                                                                maker, verify):
    image = unpack(name, tmp_path)
    ref = reference(image, fmt, tmp_path / "ref.raw")
    size = ref.stat().st_size
    dev, backing = target(size)
    p = plan(image, dev, verify=verify)
    assert p.image.format == fmt and p.image.size == size  # qemu-img's size, also for VPC
    res = restore.restore(p)
    assert res.status == "ok", res.message
    assert res.image_size == size and bool(res.verify and res.verify["match"]) == verify
    assert_same(dev, backing, ref, size)


def test_a_vhdx_whose_log_was_never_replayed_is_replayed_on_a_copy(tmp_path, target):
    """The disaster case: refused before as "cannot tell which files the image reads
    (... qemu-img check -r all ...)". Now the plan says what the state is and where the
    copy goes; the file is not changed; the restored disk is the replayed image's."""
    image = unpack(DIRTY, tmp_path)
    before = sha(image)
    replayed = tmp_path / "replayed-by-hand.vhdx"
    subprocess.run(["cp", "--sparse=always", str(image), str(replayed)], check=True)
    subprocess.run(["qemu-img", "check", "-r", "all", "-f", "vhdx", str(replayed)], check=True,
                   capture_output=True)
    ref = reference(replayed, "vhdx", tmp_path / "ref.raw")
    dev, backing = target(10 << 30)
    p = plan(image, dev, tmpdir=str(tmp_path))
    assert p.image.vhdx_log and p.image.size == 10 << 30
    note = next(w for w in p.warnings if "log was never replayed" in w)
    assert f"it is replayed on a copy in {tmp_path} (needs " in note and "free) before " \
        "anything is written" in note and f"{image} is not changed" in note, note
    res = restore.restore(p)
    assert res.status == "ok" and res.verify["match"], res.message
    assert any(f"it was replayed on a copy in {tmp_path} before anything was written" in w
               for w in res.warnings), res.warnings
    assert sha(image) == before and vhdx.needs_replay(str(image))  # the user's file as it was
    assert_same(dev, backing, ref, 10 << 30)
    assert not list(tmp_path.glob("rtk-restore-*"))  # the copy is gone


def small_dirty(directory: Path) -> Path:
    path = ri.small_dirty_vhdx(directory)
    assert vhdx.needs_replay(str(path)) and vhdx.disk_size(str(path)) == (32 * MiB, 512)
    return path


def replayed_reference(image: Path, directory: Path) -> Path:
    ref = ri.replayed_raw(image, directory)
    with open(ref, "rb") as f:  # the log's own change: the disk's 18th MiB mapped
        assert os.pread(f.fileno(), 4, 17 * MiB) == b"\xa5" * 4
    return ref


def test_no_room_for_the_copy_is_refused_with_both_figures_and_what_to_do(tmp_path, target):
    image = small_dirty(tmp_path)
    before = sha(image)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        dev, backing = target(32 * MiB)
        with pytest.raises(vhdx.NoRoomToReplay) as e:
            plan(image, dev, tmpdir=str(small))
        text = e.value.problems[0]
        need = vhdx.space_needed(str(image))
        assert f"{image} is a VHDX whose log was never replayed" in text
        assert f"Replaying it on a copy needs {need} bytes" in text and f"in {small}, which " \
            f"has {e.value.free} bytes" in text and "--tmpdir DIR" in text
        assert "--replay-vhdx-log-in-place" in text and "nothing was written" in text
        cli = rtk("restore", str(image), dev, "--tmpdir", str(small), "--yes", "--target-id",
                  dev)
        assert cli.returncode == 5 and "log was never replayed" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
        assert untouched(backing) and sha(image) == before
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_in_place_only_when_asked(tmp_path, target):
    image = small_dirty(tmp_path)
    ref = replayed_reference(image, tmp_path)
    dev, backing = target(32 * MiB)
    cli = rtk("restore", str(image), dev, "--replay-vhdx-log-in-place", "--yes", "--target-id",
              dev)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"it is replayed in {image} itself before anything is written, as asked" in \
        cli.stderr
    assert not vhdx.needs_replay(str(image))  # the file itself was replayed
    assert_same(dev, backing, ref, 32 * MiB)


def test_in_place_on_a_read_only_filesystem_is_refused(tmp_path, target):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(ro)], check=True)
    try:
        image = small_dirty(ro)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        dev, backing = target(32 * MiB)
        with pytest.raises(restore.Refused) as e:
            plan(image, dev, vhdx_log="in-place")
        assert "It cannot be replayed in" in e.value.problems[0] and "read-only filesystem" \
            in e.value.problems[0]
        assert untouched(backing) and vhdx.needs_replay(str(image))
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_compressed_vhdx_with_a_log_is_replayed_on_its_unpacked_copy(tmp_path, target):
    image = small_dirty(tmp_path)
    ref = replayed_reference(image, tmp_path)
    packed = tmp_path / "dirty.vhdx.zst"
    subprocess.run(["zstd", "-q", "-3", str(image), "-o", str(packed)], check=True)
    before = sha(packed)
    dev, backing = target(32 * MiB)
    res = restore.restore(plan(packed, dev, tmpdir=str(tmp_path)))
    assert res.status == "ok" and res.verify["match"], res.message
    assert any("it was replayed on the unpacked copy before anything was written" in w
               for w in res.warnings), res.warnings
    assert sha(packed) == before
    assert_same(dev, backing, ref, 32 * MiB)


@pytest.mark.parametrize("name, said", [("afl5.img", "Max Table Entries too large"),
                                        ("afl9.vmdk", "L1 size too big")])
def test_a_damaged_image_is_refused_in_plain_words(tmp_path, target, name, said):
    image = unpack(name, tmp_path)
    dev, backing = target(64 * MiB)
    with pytest.raises(restore.Refused) as e:
        plan(image, dev)
    text = "; ".join(e.value.problems)
    assert f"qemu-img cannot open the image {image}" in text and said in text and \
        "damaged or truncated; nothing was written" in text, text
    cli = rtk("restore", str(image), dev, "--yes", "--target-id", dev)
    assert cli.returncode == 5 and said in cli.stderr and "Traceback" not in cli.stderr
    assert untouched(backing)
