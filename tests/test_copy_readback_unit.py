"""The read-back behind the writer without devices (regular files stand in for disks):
the source's piece digests (toolkit/blockio/hashing.py: PieceHasher, Walk), the pieces
checked as they are read back (toolkit/blockio/readback.py: PieceReadBack), the flush
step, and a TARGET outage met by the read-back while the copy still writes
(test_outage_unit's fake sysfs)."""

from __future__ import annotations

import errno
import os
import threading

import blake3
import pytest
from conftest import MiB
from test_outage_verify_unit import VerifyLab, _later, _target_down, sysfs  # noqa: F401

from toolkit.blockio.hashing import MISSING, PieceHasher, Walk, piece_digest
from toolkit.blockio.readback import MIN_STEP, SYNC_EVERY, PieceReadBack, step_for
from toolkit.jobs.progress import Reporter

pytestmark = pytest.mark.unit

SIZE = 8 * MiB


@pytest.fixture
def disk(tmp_path):
    data = bytearray(os.urandom(SIZE))
    data[2 * MiB:3 * MiB] = bytes(MiB)  # a MiB of zeros
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    yield fd, bytes(data), path
    os.close(fd)


def _read_back(fd, pieces, data, **kw):
    """Hand ``pieces`` over with the digests of ``data`` (None where ``data`` is zeros),
    then finish."""
    back = PieceReadBack(fd, MiB, **kw)
    back.start()
    try:
        for pos, n in pieces:
            chunk = data[pos:pos + n]
            back.hand_over(pos, n, None if chunk == bytes(n) else piece_digest(chunk))
        return back, back.finish(Reporter(None, 1), threading.Event(), SIZE)
    finally:
        back.stop()


def test_walk_follows_ranges_in_order_only():
    w = Walk([(0, 4), (10, 2)])
    assert w.follows(0, 2) and w.follows(2, 2) and w.follows(10, 2) and w.complete
    w = Walk([(0, 4)])
    assert w.follows(0, 2) and not w.follows(3, 1) and not w.complete  # a gap breaks it
    assert not w.follows(2, 2)  # and it stays broken


def test_piece_hasher_gives_each_piece_its_digest_and_the_whole_stream_hash(disk):
    _fd, data, _path = disk
    h = PieceHasher("blake3", [(0, SIZE)])
    for pos in range(0, SIZE, MiB):
        view = memoryview(data)[pos:pos + MiB]
        if data[pos:pos + MiB] == bytes(MiB):
            h.zero(pos, MiB, bytes(MiB))
        else:
            h.update(pos, view)
    assert h.take(MiB, MiB) == piece_digest(data[MiB:2 * MiB])
    assert h.take(2 * MiB, MiB) is None  # zeros
    assert h.take(2 * MiB, MiB) is MISSING  # taken once
    assert h.source_digest(SIZE).hexdigest == blake3.blake3(data).hexdigest()
    broken = PieceHasher("blake3", [(0, SIZE)])
    broken.update(0, memoryview(data)[:MiB])
    broken.bad(MiB, MiB)
    assert broken.source_digest(SIZE) is None  # a gap: no hash of the whole


def test_pieces_read_back_match_and_their_ranges_are_recorded(disk):
    fd, data, _path = disk
    pieces = [(0, MiB), (MiB, MiB), (2 * MiB, MiB), (5 * MiB + 512, 4096), (6 * MiB, 2 * MiB)]
    back, out = _read_back(fd, pieces, data, algorithm="blake3", ranges=[(0, SIZE)])
    assert out.match and not out.error, out
    assert back.check.checked == [(0, 3 * MiB), (5 * MiB + 512, 4096), (6 * MiB, 2 * MiB)]
    assert out.read_back_bytes == sum(n for _p, n in pieces)
    assert out.target_hash is None  # not the whole disk in order


def test_a_changed_byte_and_a_non_zero_piece_are_found(disk, tmp_path):
    fd, data, path = disk
    changed = bytearray(data)
    changed[4 * MiB + 100] ^= 1
    changed[2 * MiB + 7] = 1  # in the zeros
    (tmp_path / "changed.img").write_bytes(bytes(changed))
    other = os.open(tmp_path / "changed.img", os.O_RDONLY)
    try:
        _back, out = _read_back(other, [(p, MiB) for p in range(0, SIZE, MiB)], data)
    finally:
        os.close(other)
    assert not out.match and not out.error
    assert out.differing_regions == 2
    assert out.first_difference == {"start": 2 * MiB, "end": 3 * MiB}


def test_the_whole_disk_read_back_in_order_has_its_hash(disk):
    fd, data, _path = disk
    _back, out = _read_back(fd, [(p, MiB) for p in range(0, SIZE, MiB)], data,
                            algorithm="blake3", ranges=[(0, SIZE)])
    assert out.match and out.target_hash == blake3.blake3(data).hexdigest()


def test_stop_ends_the_thread_with_nothing_handed_over(disk):
    fd, _data, _path = disk
    back = PieceReadBack(fd, MiB)
    back.start()
    back.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("rtk-read-back")]


def test_the_flush_step():
    assert step_for(4 * MiB, MiB) == MIN_STEP  # small copies: read back at the end
    assert step_for(2 << 30, 8 * MiB) == MIN_STEP  # a 32nd of 2 GiB
    assert step_for(8 << 30, 8 * MiB) == SYNC_EVERY
    assert step_for(1 << 40, 8 * MiB) == SYNC_EVERY
    assert step_for(1 << 40, 7 * MiB) % (7 * MiB) == 0  # whole chunks


def test_a_target_outage_met_by_the_read_back_while_the_copy_writes_is_waited_out(
        tmp_path, sysfs, monkeypatch):  # noqa: F811
    """The read-back (its own thread) reads the TARGET while the copy still writes; the
    path drops: both wait (one at a time), the copy goes on, the result is verified."""
    lab = VerifyLab(tmp_path, sysfs, monkeypatch, read_back_step=512 * 1024,
                    max_rate=2 * MiB)
    fired: list[int] = []

    def trigger(fd, offset):
        if (threading.current_thread().name == "rtk-read-back" and fd == lab.c.dst_fd
                and offset >= MiB and not fired):
            fired.append(offset)
            sysfs.show("up", _target_down)
            _later(0.8, lambda: sysfs.show("back"))
    lab.trigger = trigger
    result = lab.run()
    assert fired, "the read-back never read the target"
    assert result.status == "ok", result.message
    v = result.verify
    assert v.method == "read back target" and v.match and v.read_while_writing > fired[0]
    assert lab.dst.read_bytes() == lab.data
    phases = lab.phases()
    assert "waiting" in phases and phases.index("waiting") < phases.index("verify")
    assert any(w.startswith(f"TARGET path to 10.0.2.2 lost at byte {fired[0]}")
               for w in result.warnings), result.warnings


def test_a_read_error_of_the_read_back_during_the_copy_fails_the_verification(
        tmp_path, sysfs, monkeypatch):  # noqa: F811
    """A media error (the path stays up) while reading back: no verdict on the bytes, a
    failure (exit 1), never a mismatch."""
    lab = VerifyLab(tmp_path, sysfs, monkeypatch, read_back_step=512 * 1024)

    def trigger(fd, offset):
        if threading.current_thread().name == "rtk-read-back" and offset >= MiB:
            raise OSError(errno.EIO, "Input/output error")
    lab.trigger = trigger
    result = lab.run()
    assert result.status == "failed" and result.exit_code == 1, result.message
    assert "cannot read the target back" in result.message
    assert not result.verify.differing_regions
