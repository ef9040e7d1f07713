"""Disk Copy without devices: mapfiles, progress math, the safety checks on
inventory objects, region hashing, reports and the command line's parsing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import blake3
import pytest
from conftest import MiB, disk, partition
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import exitcodes
from toolkit.blockio import blockdev, hashing
from toolkit.blockio import ranges as byte_ranges
from toolkit.blockio.mapfile import Mapfile, MapfileError
from toolkit.cli import common as cli_common
from toolkit.cli.main import build_parser
from toolkit.copy import engine as copymod
from toolkit.copy import plan as copy_plan
from toolkit.disks.inventory import IscsiLocation
from toolkit.jobs import progress, report

pytestmark = pytest.mark.unit


# --- mapfile -------------------------------------------------------------------

DDRESCUE_EXAMPLE = """\
# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -d -c18 /dev/fd0 fdimage mapfile
# Start time:   2015-07-21 09:37:44
# Current time: 2015-07-21 09:38:19
# Copying non-tried blocks... Pass 1 (forwards)
# current_pos  current_status  current_pass
0x00120000     ?               1
#      pos        size  status
0x00000000  0x00117000  +
0x00117000  0x00000200  -
0x00117200  0x00001000  /
0x00118200  0x00007E00  *
0x00120000  0x00048000  ?
"""


def test_parse_ddrescue_example():
    m = Mapfile.parse(DDRESCUE_EXAMPLE)
    assert m.size == 0x168000
    assert (m.current_pos, m.phase, m.current_pass) == (0x120000, "?", 1)
    assert m.blocks == [(0, 0x117000, "+"), (0x117000, 0x200, "-"), (0x117200, 0x1000, "/"),
                        (0x118200, 0x7E00, "*"), (0x120000, 0x48000, "?")]
    assert list(m.ranges("-")) == [(0x117000, 0x200)]
    assert m.bytes_with("+", "-") == 0x117200
    assert not m.finished


def test_round_trip_keeps_blocks_state_and_metadata(tmp_path):
    m = Mapfile(64 * MiB + 3 * 512)
    m.set(0, 8 * MiB, "+")
    m.set(8 * MiB, 512, "-")
    m.set(20 * MiB, 65536, "*")
    m.current_pos, m.phase, m.current_pass = 8 * MiB, "*", 2
    m.meta["source"] = "loop-tmp_a.img"
    path = tmp_path / "x.map"
    m.save(str(path), ["Mapfile. test"])
    back = Mapfile.load(str(path))
    assert back == m
    assert (back.current_pos, back.phase, back.current_pass) == (8 * MiB, "*", 2)
    assert back.meta == {"source": "loop-tmp_a.img"}
    assert not (tmp_path / "x.map.tmp").exists()


def test_parse_decimal_octal_comments_and_merges_equal_neighbours():
    text = "# hi\n10 + 1 # trailing comment\n0 010 +\n8 2 +\n10 5 -\n"
    m = Mapfile.parse(text)
    assert m.blocks == [(0, 10, "+"), (10, 5, "-")]
    assert m.size == 15 and m.current_pos == 10


@pytest.mark.parametrize("text", [
    "",  # no status line
    "0 ? 1\n0 0x10 +\n0x20 0x10 +\n",  # gap
    "0 ? 1\n0 0x10 +\n0x8 0x10 +\n",  # overlap
    "0 ? 1\n0x10 0x10 +\n",  # does not start at 0
    "0 ? 1\n0 0x10 x\n",  # bad status
    "0 Q 1\n",  # bad phase
    "0 ? 1\n0 zz +\n",  # bad number
])
def test_bad_mapfiles_are_rejected(text):
    with pytest.raises(MapfileError):
        Mapfile.parse(text)


def test_set_merges_and_splits():
    m = Mapfile(100)
    m.set(10, 10, "+")
    m.set(20, 10, "+")
    assert m.blocks == [(0, 10, "?"), (10, 20, "+"), (30, 70, "?")]
    m.set(0, 100, "+")
    assert m.blocks == [(0, 100, "+")] and m.finished
    m.set(50, 1, "-")
    assert m.blocks == [(0, 50, "+"), (50, 1, "-"), (51, 49, "+")]
    assert m.status_at(50) == "-" and m.status_at(51) == "+"
    with pytest.raises(MapfileError):
        m.set(90, 20, "+")


_ops = st.lists(st.tuples(st.integers(0, 299), st.integers(0, 300),
                          st.sampled_from(["?", "*", "/", "-", "+"])), max_size=40)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 300), ops=_ops)
def test_blocks_always_tile_the_disk_exactly(size, ops):
    m = Mapfile(size)
    model = ["?"] * size
    for pos, length, status in ops:
        pos = pos % size
        length = min(length, size - pos)
        m.set(pos, length, status)
        model[pos:pos + length] = [status] * length
        # tiling: contiguous from 0 to size, no empty block, neighbours differ
        end = 0
        for i, (p, s, stt) in enumerate(m.blocks):
            assert p == end and s > 0
            assert i == 0 or m.blocks[i - 1][2] != stt
            end = p + s
        assert end == size
    assert [m.status_at(i) for i in range(size)] == model
    assert Mapfile.parse(m.format()) == m


# --- progress ---------------------------------------------------------------------


def test_rate_meter_current_average_and_eta():
    r = progress.RateMeter(total=1000, start_done=100, now=0.0, window=2.0)
    assert r.eta is None  # nothing measured yet
    r.update(200, 1.0)
    assert r.rate == pytest.approx(100.0)
    assert r.average_rate == pytest.approx(100.0)
    assert r.eta == pytest.approx(8.0)
    for t, done in ((2.0, 300), (3.0, 700), (4.0, 900)):
        r.update(done, t)
    # the window keeps the samples of the last 2 s: from t=2 (300) to t=4 (900)
    assert r.rate == pytest.approx(300.0)
    assert r.average_rate == pytest.approx(200.0)  # (900-100)/4
    assert r.eta == pytest.approx(100 / 300)
    r.update(1000, 5.0)
    assert r.eta == 0.0


def test_progress_event_line_and_fraction():
    p = progress.Progress("copy", 250_000_000, 1_000_000_000, 5e8, 4e8, 1.5, 2, 1024)
    assert p.fraction == 0.25
    line = p.line()
    assert "25.0%" in line and "500.0 MB/s" in line and "400.0 MB/s" in line
    assert "ETA 0:02" in line and "read errors 2" in line
    # a step without bytes (restore's "finish": fit, inspection, boot entry)
    assert progress.Progress("finish", 0, 1, 0.0, 0.0, None).line() == "finish working"
    assert progress.Progress("finish", 1, 1, 0.0, 0.0, 0.0).line() == "finish done"


def test_reporter_throttles_callbacks():
    events = []
    r = progress.Reporter(events.append, interval=3600)
    r.start("copy", 100)
    for i in range(50):
        r.update(i)
    r.update(100, force=True)
    assert [e.done for e in events] == [0, 100]


# --- planning refusals on inventory objects ----------------------------------------


def problems(src, dst, **kw):
    return copymod.check_pair(src, dst, **kw)[0]


E = copymod.endpoint_from_disk


def test_good_pair_has_no_problems():
    assert copymod.check_pair(E(disk("sda", serial="A")), E(disk("sdb", serial="B"))) == ([], [])


def test_smaller_target_refused_with_both_sizes():
    msg = problems(E(disk("sda", "A", size=1000 * MiB)), E(disk("sdb", "B", size=999 * MiB)))
    assert len(msg) == 1
    assert str(1000 * MiB) in msg[0] and str(999 * MiB) in msg[0] and "smaller" in msg[0]


def test_sector_size_mismatch_refused_with_both_figures():
    msg = problems(E(disk("sda", serial="A")), E(disk("sdb", sector=4096, serial="B")))
    assert len(msg) == 1 and "512-byte" in msg[0] and "4096-byte" in msg[0]


def test_same_serial_by_another_path_refused():
    # one LUN seen through two paths (multipath): two nodes, one serial
    msg = problems(E(disk("sda", serial="LUN7")), E(disk("sdc", serial="LUN7")))
    assert len(msg) == 1 and "same disk" in msg[0] and "serial" in msg[0]


def test_same_node_refused():
    d = disk("sda", serial="A")
    msg = problems(E(d), E(d, path="/dev/disk/by-id/ata-X"))
    assert len(msg) == 1 and "target is the source" in msg[0]


def test_two_loops_over_one_file_are_one_disk(tmp_path):
    img = tmp_path / "a.img"
    img.write_bytes(b"")
    a = disk("loop0", transport="loop", backing_file=str(img))
    b = disk("loop1", transport="loop", backing_file=str(tmp_path / "." / "a.img"))
    msg = problems(E(a), E(b))
    assert len(msg) == 1 and "same disk" in msg[0] and "file" in msg[0]


def test_partition_of_source_and_parent_of_source_refused():
    src = disk("sda", serial="A")
    p1 = partition(src, 1, MiB, 40 * MiB)
    p2 = partition(src, 2, 41 * MiB, 40 * MiB)
    msg = problems(E(src, size=40 * MiB), E(src, p1))
    assert any("is a partition of the source" in m for m in msg)
    msg = problems(E(src, p1), E(src))
    assert msg == [msg[0]] and "holds the source partition" in msg[0]
    # two partitions of one disk that do not overlap may be copied onto each other
    assert problems(E(src, p1), E(src, p2)) == []


def test_target_in_use_refused():
    src = disk("sda", serial="A")
    for kw, word in (({"mountpoints": ["/mnt"]}, "mounted at /mnt"), ({"swap": True}, "swap"),
                     ({"holders": ["md0"]}, "held by md0"), ({"boot_medium": True}, "boot medium"),
                     ({"read_only": True}, "read-only")):
        msg = problems(E(src), E(disk("sdb", serial="B", **kw)))
        assert len(msg) == 1 and word in msg[0], (kw, msg)
    dst = disk("sdb", serial="B")
    p = partition(dst, 1, MiB, 200 * MiB, mountpoints=["/data"])
    assert "mounted at /data" in problems(E(src), E(dst))[0]  # whole disk: a partition mounted
    assert "mounted at /data" in problems(E(src), E(dst, p))[0]


def test_iscsi_source_role_refused_by_path_or_identity():
    src = disk("sda", serial="A")
    snap = disk("sdc", serial="SNAP1", transport="iscsi",
                iscsi=IscsiLocation("iqn.2000-01.bdr:snap", "10.0.0.5:3260", 1, "session1"))
    assert problems(E(src), E(snap)) == []
    for role in ({"/dev/sdc"}, {"SNAP1"}, {"iqn.2000-01.bdr:snap:1"}):
        msg = problems(E(src), E(snap), source_role=role)
        assert len(msg) == 1 and "attached as SOURCE" in msg[0]


def test_mounted_source_only_warns():
    src = disk("sda", serial="A", mountpoints=["/"])
    probs, warns = copymod.check_pair(E(src), E(disk("sdb", serial="B")))
    assert probs == [] and "mounted at /" in warns[0]


def test_endpoint_key_and_default_mapfile(log_dir):
    src = E(disk("sda", serial="WD-ABC 123/x"))
    d = disk("loop3", transport="loop", backing_file="/var/tmp/img one.raw")
    dst = E(d, partition(d, 2, MiB, MiB))
    assert copy_plan.endpoint_key(src) == "WD-ABC_123_x"
    assert copy_plan.endpoint_key(dst) == "loop-var_tmp_img_one.raw-part2"
    plan = copymod.CopyPlan(src, dst)
    assert copymod.default_mapfile(plan) == str(
        log_dir / "copy-WD-ABC_123_x--loop-var_tmp_img_one.raw-part2.map")


# --- hashing ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(size=st.integers(1, 5000), cuts=st.lists(st.integers(1, 5000), max_size=8),
       region=st.integers(1, 700), algo=st.sampled_from(copymod.ALGORITHMS))
def test_region_hasher_does_not_depend_on_how_data_is_split(size, cuts, region, algo):
    data = os.urandom(size)
    h = hashing.RegionHasher(algo, size, region)
    pos = 0
    for c in sorted(set(c % size for c in cuts)) + [size]:
        if c > pos:
            assert h.update(pos, memoryview(data)[pos:c])
            pos = c
    d = h.digest()
    whole = blake3.blake3(data) if algo == "blake3" else hashlib.sha256(data)
    assert d.hexdigest == whole.hexdigest()
    want = b"".join(blake3.blake3(data[i:i + region]).digest(length=16)
                    for i in range(0, size, region))
    assert d.regions == want


def test_region_hasher_refuses_gaps():
    h = hashing.RegionHasher("blake3", 100, 10)
    assert h.update(0, memoryview(b"x" * 10))
    assert not h.update(20, memoryview(b"x" * 10))
    assert h.digest() is None


def test_region_size_bounds_memory():
    assert hashing.region_size_for(64 * MiB, 8 * MiB) == 8 * MiB
    big = 64 << 40  # 64 TiB
    r = hashing.region_size_for(big, 8 * MiB)
    assert r % (8 * MiB) == 0 and -(-big // r) <= hashing.MAX_REGIONS


# --- reports ----------------------------------------------------------------------------


def test_report_files_named_and_never_overwritten(tmp_path):
    when = 1_700_000_000.0
    a = report.write_report("copy", {"x": (1, 2)}, "text\n", directory=str(tmp_path), when=when)
    b = report.write_report("copy", {"x": 3}, "text\n", directory=str(tmp_path), when=when)
    assert os.path.basename(a.json).startswith("copy-2023") and a.json.endswith(".json")
    assert b.json == a.json[:-5] + "-2.json" and b.text.endswith("-2.txt")
    assert json.loads(Path(a.json).read_text()) == {"x": [1, 2]}


def test_render_text_aligns_and_indents_multiline_values():
    text = report.render_text("T", [("S", [("a", 1), ("long key", "x\ny"), ("n", None)])])
    assert text.splitlines() == ["T", "=", "", "S", "  a:        1", "  long key: x",
                                 "            y", "  n:        -"]
    # rows without a key (the warnings): a list, not an empty key and its colon
    text = report.render_text("T", [("Warnings", [("", "w1"), ("", "w2\nmore")])])
    assert text.splitlines()[3:] == ["Warnings", "  - w1", "  - w2", "    more"]


# --- command line --------------------------------------------------------------------------


def test_copy_and_verify_arguments():
    p = build_parser()
    a = p.parse_args(["copy", "/dev/sda", "/dev/sdb", "--no-verify", "--hash", "sha256",
                      "--skip-zeros", "--yes", "--target-id", "X"])
    assert (a.verify, a.algorithm, a.skip_zeros, a.yes, a.target_id) == (
        False, "sha256", True, True, ["X"])  # one --target-id per pair, in pair order
    a = p.parse_args(["copy", "/dev/sda", "/dev/sdb"])
    assert a.verify is True and a.algorithm == "blake3" and a.mapfile is None
    a = p.parse_args(["verify", "/dev/sda", "--hash", "ab12", "--algo", "sha256", "--size", "1M"])
    assert (a.target, a.expected, a.algo, a.size) == (None, "ab12", "sha256", MiB)
    with pytest.raises(SystemExit):
        p.parse_args(["copy", "/dev/sda", "/dev/sdb", "--hash", "md5"])


def test_target_id_must_be_serial_or_wwn_when_there_is_one():
    d = disk("sdb", serial="ZA1", wwn="0x5000c500")
    assert cli_common.accepted_ids(E(d)) == {"ZA1", "0x5000c500"}
    loop = disk("loop4", transport="loop", backing_file="/var/tmp/t.img")
    assert cli_common.accepted_ids(E(loop)) >= {"loop4", "/dev/loop4", "/var/tmp/t.img"}


def test_exit_codes():
    r = copymod.CopyResult("copy", "ok", "", {}, None, 0, 0.0, 0.0, "blake3")
    codes = {}
    for status in ("ok", "unreadable", "mismatch", "failed", "cancelled"):
        r.status = status
        codes[status] = r.exit_code
    assert codes == {"ok": 0, "unreadable": 3, "mismatch": 4, "failed": 1, "cancelled": 1}
    assert exitcodes.EXIT_REFUSED == 5


@pytest.mark.parametrize("memcmp", [True, False], ids=["libc-memcmp", "bytes-compare"])
def test_zero_chunk_detection(memcmp, monkeypatch):
    """--skip-zeros decides per chunk: one non-zero byte anywhere (first, last, middle)
    makes a chunk data; a short last chunk is checked over its own length only."""
    if not memcmp:
        monkeypatch.setattr(blockdev, "_MEMCMP", None)
    else:
        assert blockdev._MEMCMP is not None  # libc's, found in the process's own symbols
    n = 1 << 20
    buf, zeros = blockdev.AlignedBuffer(n), bytes(n)
    try:
        assert buf.is_zero(n, zeros) and buf.is_zero(0, zeros)
        for pos in (0, n // 2 + 1, n - 1):
            buf.view[pos] = 0x80
            assert not buf.is_zero(n, zeros)
            assert buf.is_zero(pos, zeros)  # the bytes before it are zero
            buf.view[pos] = 0
        assert buf.is_zero(n, zeros)
        with pytest.raises(ValueError):
            buf.is_zero(n, zeros[:-1])
    finally:
        buf.close()


def test_gaps_are_what_overlapping_ranges_leave_uncovered():
    ranges = [(0, 10), (5, 10), (30, 5), (50, 100)]  # sorted, overlapping
    assert byte_ranges.gaps(ranges, 0, 60) == [(15, 30), (35, 50)]
    assert byte_ranges.gaps(ranges, 12, 10) == [(15, 22)]
    assert byte_ranges.gaps([], 7, 3) == [(7, 10)]
    assert byte_ranges.gaps(ranges, 50, 20) == []
    rs = byte_ranges.RangeSet([(30, 5), (0, 15)])
    assert rs.covers(2, 8) == 15 and rs.covers(10, 10) == 0
    assert rs.within(12, 20) == [(0, 15), (30, 5)]
