"""The copy's verification behind the writer, on real loop devices
(toolkit/blockio/readback.py, toolkit/copy/behind.py): a block that changes on the target
after it was written is found while the copy still runs, with its byte; a target that
drops writes (FUSE) is caught; a copy cancelled and resumed verifies what the first run
copied too (compared with the source), and the read-back thread ends with the copy."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import MiB
from loopdev import fuse_disk, loop_device
from test_copy_host import filled_image, quick_options, random_image, same

from toolkit.blockio.mapfile import Mapfile
from toolkit.copy import engine as copymod
from toolkit.copy.behind import BOTH

pytestmark = pytest.mark.host


def flip(image: Path, pos: int) -> None:
    """Change the byte at ``pos`` of the file under a loop device (the loop device reads
    its file through the page cache: it sees the change at once)."""
    with open(image, "r+b") as f:
        f.seek(pos)
        old = f.read(1)
        f.seek(pos)
        f.write(bytes([old[0] ^ 0xFF]))


def no_read_back_thread() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("rtk-read-back")]


def test_a_block_changed_after_it_was_written_is_found_while_the_copy_runs(
        tmp_path, loops, log_dir, monkeypatch):
    """The target changes a block after it was written and flushed, before it is read
    back (the hook sits between the flush and the hand-over to the read-back: a disk
    whose cache lost or changed what it acknowledged). The read-back, running while the
    copy goes on, finds it, and names the byte."""
    size = 64 * MiB
    src = loops(random_image(tmp_path / "src.img", size, seed=31))
    dst_img = filled_image(tmp_path / "dst.img", size)
    dst = loops(dst_img)
    spot = 20 * MiB + 12345
    real, changed = copymod._Copier.hand_over, []

    def hand_over(self):
        if not changed and any(p <= spot < p + n for p, n, _d in self.pending):
            flip(dst_img, spot)
            changed.append(self.done_bytes())
        real(self)
    monkeypatch.setattr(copymod._Copier, "hand_over", hand_over)
    plan = copymod.plan_copy(src, dst)
    result = copymod.copy(plan, quick_options(chunk_size=MiB, read_back_step=8 * MiB,
                                              max_rate=64 * MiB))
    assert changed and changed[0] < size  # changed while the copy ran
    assert result.status == "mismatch" and result.exit_code == 4, result.message
    v = result.verify
    assert v.method == "read back target" and v.differing_regions == 1
    assert v.first_difference == {"start": 20 * MiB, "end": 21 * MiB, "offset": spot}
    assert f"first difference at byte {spot}" in result.message
    assert spot < v.read_while_writing <= size  # read back before the copy ended
    assert v.read_back_bytes == size and v.compared_bytes == 0
    assert no_read_back_thread()


def test_a_target_that_drops_writes_is_caught_behind_the_writer(tmp_path, loops, log_dir):
    """A loop device over a FUSE file that acknowledges the writes in one range and drops
    them: only reading the device back shows it."""
    size = 48 * MiB
    lost = (30 * MiB + 8192, 4096)
    backing = tmp_path / "lying.img"
    backing.write_bytes(bytes([0x5A]) * size)
    src = loops(random_image(tmp_path / "src.img", size, seed=32))
    with fuse_disk(backing, tmp_path / "fuse", [lost], writes="lost") as disk, \
            loop_device(disk, partitions=False) as dst:
        result = copymod.copy(copymod.plan_copy(src, dst),
                              quick_options(chunk_size=MiB, read_back_step=8 * MiB))
    assert result.status == "mismatch", result.message
    fd = result.verify.first_difference
    assert fd == {"start": 30 * MiB, "end": 31 * MiB, "offset": lost[0]}
    assert result.verify.differing_regions == 1
    assert result.verify.read_while_writing > 0


def _cancelled_copy(tmp_path, loops, size):
    src_img = random_image(tmp_path / "src.img", size, seed=33)
    dst_img = filled_image(tmp_path / "dst.img", size)
    src, dst = loops(src_img), loops(dst_img)
    mapfile = str(tmp_path / "c.map")
    cancel = threading.Event()

    def progress(p):
        if p.phase == "copy" and p.done >= 12 * MiB:
            cancel.set()
    plan = copymod.plan_copy(src, dst)
    first = copymod.copy(plan, quick_options(mapfile=mapfile, chunk_size=MiB, max_rate=48 * MiB,
                                             read_back_step=4 * MiB, progress_interval=0),
                         progress=progress, cancel=cancel)
    assert first.status == "cancelled", first.message
    assert no_read_back_thread()  # the cancelled copy's read-back stopped with it
    earlier = Mapfile.load(mapfile).bytes_with("+")
    assert 12 * MiB <= earlier < size
    return plan, mapfile, earlier, src, dst, dst_img


def test_a_resumed_copy_verifies_what_the_first_run_copied(tmp_path, loops, log_dir):
    size = 32 * MiB
    plan, mapfile, earlier, src, dst, _img = _cancelled_copy(tmp_path, loops, size)
    result = copymod.copy(plan, quick_options(mapfile=mapfile, chunk_size=MiB,
                                              existing="resume"))
    assert result.status == "ok" and result.resumed, result.message
    v = result.verify
    assert v.method == BOTH and v.match
    assert v.read_back_bytes == result.copied_bytes == size - earlier  # this run's
    assert v.compared_bytes == earlier  # the first run's, compared with the source after
    assert same(src, dst, size)


def test_a_change_in_what_the_first_run_copied_is_found_on_resume(tmp_path, loops, log_dir):
    size = 32 * MiB
    plan, mapfile, earlier, _src, _dst, dst_img = _cancelled_copy(tmp_path, loops, size)
    spot = 5 * MiB + 777  # copied by the first run
    flip(dst_img, spot)
    result = copymod.copy(plan, quick_options(mapfile=mapfile, chunk_size=MiB,
                                              existing="resume"))
    assert result.status == "mismatch", result.message
    assert result.verify.method == BOTH
    assert result.verify.first_difference["offset"] == spot
    assert "this copy was resumed" in result.message  # the hint of a resumed mismatch
    again = copymod.copy(plan, quick_options(mapfile=mapfile, existing="restart"))
    assert again.status == "ok" and again.verify.method == "read back target"
    assert again.verify.read_back_bytes == size


def test_without_verification_nothing_is_read_back(tmp_path, loops, log_dir, monkeypatch):
    size = 16 * MiB
    src = loops(random_image(tmp_path / "src.img", size, seed=34))
    dst = loops(filled_image(tmp_path / "dst.img", size))
    started = []
    real = copymod.PieceReadBack.start
    monkeypatch.setattr(copymod.PieceReadBack, "start",
                        lambda self: (started.append(1), real(self))[1])
    result = copymod.copy(copymod.plan_copy(src, dst), quick_options(verify=False,
                                                                     read_back_step=4 * MiB))
    assert result.status == "ok" and result.verify is None and not started
    assert same(src, dst, size)
    assert os.path.exists(result.report.json)
