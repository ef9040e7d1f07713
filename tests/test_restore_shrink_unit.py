"""The smaller-disk plan's arithmetic, the table script and the composed stream."""

from __future__ import annotations

import os

import pytest

from toolkit.restore import shrink_plan
from toolkit.restore.shrink import Composed
from toolkit.restore.shrink_plan import MiB, Part, ShrinkPlan, usable_end

pytestmark = pytest.mark.unit


def parts() -> list[Part]:
    return [Part(1, 1 * MiB, 100 * MiB, 1 * MiB, 100 * MiB, fstype="vfat", fixed="vfat"),
            Part(2, 101 * MiB, 400 * MiB, 101 * MiB, 400 * MiB, fstype="ntfs",
                 minimum=50 * MiB),
            Part(3, 501 * MiB, 200 * MiB, 501 * MiB, 200 * MiB, fstype="ext4",
                 minimum=100 * MiB)]


def test_the_space_comes_from_the_filesystems_in_proportion_to_their_free_room():
    ps = parts()
    # free beyond minimum + margin: NTFS 400 - 66 = 334 MiB, ext4 200 - 116 = 84 MiB
    assert [p.free for p in ps] == [0, 334 * MiB, 84 * MiB]
    assert shrink_plan._fit(ps, 491 * MiB) == 0  # 210 MiB to find
    taken = [p.size - p.new_size for p in ps]
    assert sum(taken) == 210 * MiB and taken[0] == 0
    assert taken[1] // MiB in (167, 168) and taken[2] // MiB in (42, 43)  # 334:84
    assert [p.action for p in ps] == ["kept", "shrunk", "shrunk"]
    assert ps[2].new_start == ps[1].new_start + ps[1].new_size  # moved left
    assert ps[2].new_start + ps[2].new_size == 491 * MiB


def test_only_as_much_as_needed_and_nothing_when_nothing_is_needed():
    ps = parts()
    assert shrink_plan._fit(ps, 701 * MiB) == 0
    assert [p.action for p in ps] == ["kept"] * 3
    ps = parts()
    assert shrink_plan._fit(ps, 700 * MiB) == 0
    assert sum(p.size - p.new_size for p in ps) == 1 * MiB


def test_what_cannot_fit_is_returned_and_fixed_partitions_never_change():
    ps = parts()
    over = shrink_plan._fit(ps, 200 * MiB)
    assert over == (101 + 66 + 116) * MiB - 200 * MiB
    assert ps[0].new_size == 100 * MiB and ps[0].new_start == 1 * MiB
    assert ps[1].new_size == 66 * MiB and ps[2].new_size == 116 * MiB


def test_gaps_are_kept_unless_the_disk_needs_them():
    ps = [Part(1, 1 * MiB, 100 * MiB, 1 * MiB, 100 * MiB, fstype="ext4", minimum=20 * MiB),
          Part(2, 600 * MiB, 50 * MiB, 600 * MiB, 50 * MiB, fstype="vfat", fixed="vfat")]
    assert shrink_plan._fit(ps, 300 * MiB) == 0
    assert ps[1].new_start == 101 * MiB and ps[0].new_size == 100 * MiB  # the gap closed
    ps[0].new_size, ps[1].new_start = 100 * MiB, 600 * MiB
    assert shrink_plan._fit(ps, 700 * MiB) == 0 and ps[1].new_start == 600 * MiB


def test_a_pinned_partition_that_would_move_is_refused():
    from toolkit.errors import Refused
    ps = parts()
    ps[2].pinned = ps[2].fixed = "a BIOS boot partition: it never moves"
    ps[2].minimum = None
    shrink_plan._fit(ps, 600 * MiB)
    with pytest.raises(Refused, match="would move from byte .* BIOS boot"):
        shrink_plan._moves(ShrinkPlan("gpt", 512, 701 * MiB, 601 * MiB, ps))


def test_the_gpt_backup_table_keeps_its_room(tmp_path):
    assert usable_end(256 * MiB, 33 * 512) == 255 * MiB
    assert usable_end(256 * MiB, 0) == 256 * MiB
    img = tmp_path / "gpt.img"
    with open(img, "wb") as f:
        f.truncate(4 * MiB)
    import subprocess
    subprocess.run(["sgdisk", "-S", "256", "-n", "1:2048:+1M", str(img)], check=True,
                   capture_output=True)
    assert shrink_plan.gpt_tail(str(img), 512) == 512 + 256 * 128


def test_lines_say_what_shrinks_from_what_to_what():
    ps = parts()
    shrink_plan._fit(ps, 650 * MiB)
    sp = ShrinkPlan("gpt", 512, 701 * MiB, 651 * MiB, ps, overlay_room=164 * MiB, tmpdir="/tmp")
    text = " ".join(sp.lines())
    assert 'partition 2 (ntfs) shrinks from 419.4 MB to' in text
    assert "(its data needs 52.4 MB)" in text
    assert "copy-on-write overlay in /tmp" in text and "partition 1" not in text


def _gpt_image(path) -> None:
    import subprocess
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["sgdisk", "-U", "F03D9905-9EBB-4A03-87ED-D5DD46D83DB7",
                    "-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:EFI system",
                    "-n", "3:0:+40M", "-t", "3:0700", "-c", '3:Data "x"', "-A", "3:set:63",
                    str(path)], check=True, capture_output=True)


def test_the_new_gpt_keeps_every_identity_at_the_new_places(tmp_path):
    import subprocess

    from toolkit.restore import shrink_table
    img, out = tmp_path / "img", tmp_path / "table"
    _gpt_image(img)
    ps = [Part(1, 1 * MiB, 8 * MiB, 1 * MiB, 8 * MiB),
          Part(3, 9 * MiB, 40 * MiB, 9 * MiB, 20 * MiB)]
    notes = shrink_table.write_table(str(img), ShrinkPlan("gpt", 512, 64 * MiB, 32 * MiB, ps),
                                     str(out))
    assert notes == [] and os.path.getsize(out) == 32 * MiB
    v = subprocess.run(["sgdisk", "-v", str(out)], capture_output=True, text=True).stdout
    assert "No problems found" in v, v
    info = subprocess.run(["sgdisk", "-i", "3", str(out)], capture_output=True, text=True).stdout
    before = subprocess.run(["sgdisk", "-i", "3", str(img)], capture_output=True,
                            text=True).stdout
    assert "Last sector: 59391" in info and "Partition name: 'Data \"x\"'" in info, info
    keep = [ln for ln in before.splitlines() if ln.startswith(("Partition GUID code",
            "Partition unique GUID", "Attribute flags", "Partition name"))]
    assert keep and all(ln in info for ln in keep)
    dump = subprocess.run(["sfdisk", "--dump", str(out)], capture_output=True, text=True).stdout
    assert "label-id: F03D9905-9EBB-4A03-87ED-D5DD46D83DB7" in dump
    assert "last-lba: 65502" in dump  # 32 MiB - 33 sectors - 1


def test_the_mbr_keeps_boot_code_signature_and_flags(tmp_path):
    import subprocess

    from toolkit.restore import shrink_table
    img, out = tmp_path / "img", tmp_path / "table"
    with open(img, "wb") as f:
        f.truncate(64 * MiB)
        f.write(b"\xeb\x63BOOTCODE" + bytes(430))
    subprocess.run(["sfdisk", "-q", str(img)], check=True, capture_output=True,
                   input="label: dos\nlabel-id: 0xdeadbeef\n2048,20480,83\n"
                         "40960,40960,7,*\n", text=True)
    ps = [Part(1, 1 * MiB, 10 * MiB, 1 * MiB, 10 * MiB),
          Part(2, 20 * MiB, 20 * MiB, 12 * MiB, 10 * MiB)]
    shrink_table.write_table(str(img), ShrinkPlan("mbr", 512, 64 * MiB, 32 * MiB, ps), str(out))
    dump = subprocess.run(["sfdisk", "--dump", str(out)], capture_output=True, text=True).stdout
    assert "label-id: 0xdeadbeef" in dump
    assert "start=       24576, size=       20480, type=7, bootable" in dump, dump
    assert out.read_bytes()[:10] == b"\xeb\x63BOOTCODE"


def test_composed_reads_the_table_outside_partitions_and_the_view_inside(tmp_path):
    table, view = tmp_path / "t", tmp_path / "v"
    table.write_bytes(b"T" * 100)
    view.write_bytes(bytes(range(100)))
    ps = [Part(1, 10, 20, 10, 20), Part(2, 50, 40, 30, 30)]  # 2 moved left and shrunk
    src = Composed(str(table), str(view), ShrinkPlan("gpt", 512, 100, 70, ps))
    try:
        out = b"".join(iter(lambda: src.read(7), b""))
    finally:
        src.close()
    assert out == b"T" * 10 + bytes(range(10, 30)) + bytes(range(50, 80)) + b"T" * 10
    assert len(out) == 70 and src.pos == 70
    with pytest.raises(OSError):
        os.fstat(src.view)


def test_a_moved_fat32_gets_its_new_start_in_both_boot_sectors(tmp_path):
    import struct
    import subprocess

    from toolkit.restore.shrink import set_hidden_sectors
    fat = tmp_path / "fat"
    with open(fat, "wb") as f:
        f.truncate(40 * MiB)
    subprocess.run(["mkfs.vfat", "-F", "32", "-h", "616448", str(fat)], check=True,
                   capture_output=True)
    assert set_hidden_sectors(str(fat), 409600 * 512, 512)
    data = fat.read_bytes()
    backup = struct.unpack_from("<H", data, 50)[0] * 512
    assert backup > 0
    assert struct.unpack_from("<I", data, 0x1C)[0] == 409600
    assert struct.unpack_from("<I", data, backup + 0x1C)[0] == 409600
    assert subprocess.run(["fsck.vfat", "-n", str(fat)], capture_output=True).returncode == 0
    other = tmp_path / "zero"
    other.write_bytes(bytes(4096))
    assert not set_hidden_sectors(str(other), 0, 512) and other.read_bytes() == bytes(4096)


def test_a_hybrid_mbr_keeps_its_protective_range_and_its_entries_follow():
    import struct

    from toolkit.restore import shrink_table

    def entry(kind: int, start: int, count: int) -> bytes:
        return bytes([0, 0xFE, 0xFF, 0xFF, kind, 0xFE, 0xFF, 0xFF]) + \
            struct.pack("<II", start, count)
    # gdisk's hybrid of partitions 2 and 3: 0xEE first, over the ESP only
    sector0 = bytearray(512)
    sector0[0x1BE:0x1BE + 48] = entry(0xEE, 1, 133119) + entry(0x07, 133120, 409600) + \
        entry(0x83, 542720, 204800)
    sector0[510:] = b"\x55\xaa"
    moves = {133120: (133120, 200704), 542720: (333824, 204800)}
    out, notes = shrink_table._mbr(bytes(sector0), moves, 512000, protective=True)
    got = [struct.unpack_from("<BxxxII", out, 0x1BE + 16 * i + 4)[0:1] +
           struct.unpack_from("<II", out, 0x1BE + 16 * i + 8) for i in range(3)]
    assert got == [(0xEE, 1, 133119), (0x07, 133120, 200704), (0x83, 333824, 204800)]
    assert notes == []
    spans = sorted((s, s + c) for _k, s, c in got)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no overlap
    plain = bytearray(512)
    plain[0x1BE:0x1BE + 16] = entry(0xEE, 1, 1146879)
    out, _ = shrink_table._mbr(bytes(plain), {}, 512000, protective=True)
    assert struct.unpack_from("<II", out, 0x1BE + 8) == (1, 511999)


def test_a_vhdx_with_its_log_unreplayed_larger_than_the_target_says_so(tmp_path):
    """A local, uncompressed VHDX whose Hyper-V host crashed, onto a smaller disk: the
    refusal says its log was never replayed and what to do, not "download or decompress
    it first" (review helper-58; QEMU's own dirty-log sample, 10 GiB, onto 64 MiB)."""
    import bz2

    from conftest import FIXTURES

    from toolkit.errors import Refused
    from toolkit.restore import plan as planmod
    vhdx = tmp_path / "dirty.vhdx"
    vhdx.write_bytes(bz2.decompress((FIXTURES / "qemu-samples" /
                                     "iotest-dirtylog-10G-4M.vhdx.bz2").read_bytes()))
    options = planmod.RestoreOptions(tmpdir=str(tmp_path))
    info = planmod.probe_image(str(vhdx), options)
    assert info.vhdx_log and info.size == 10 << 30
    dst = type("Dst", (), {"node": "/dev/sdz", "size": 64 << 20, "sector_size": 512})()
    before = vhdx.read_bytes()
    with pytest.raises(Refused) as e:
        planmod._shrink_plan(str(vhdx), info, dst, options)
    msg = "; ".join(e.value.problems)
    assert "download or decompress it first" not in msg
    assert f"{vhdx} is a VHDX whose log was never replayed" in msg
    assert "qemu-img check -r all COPY" in msg and f"at least {10 << 30} bytes" in msg
    assert vhdx.read_bytes() == before
