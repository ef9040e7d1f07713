"""The pure parts of used blocks: partclone's domain mapfile read strictly, range
arithmetic, the partition table from ``partx``, the journal checks on the bytes of
real structures, and a domain assembled from parts (gaps, extended partitions, sector
alignment outwards)."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest

from toolkit.copy import partclone, usedblocks
from toolkit.copy.usedblocks import Domain, DomainPart
from toolkit.system import fsstate

# partclone.ntfs -D of a 64 MiB mkntfs'd loop device (partclone 0.3.23), as written
NTFS_MAP = """\
# Domain logfile created by unset_name v0.3.23
# Source: /dev/loop0
# Offset: 0x00000000
# current_pos  current_status
0x03FFF000     ?
#      pos        size  status
0x00000000  0x00003000  +
0x00003000  0x00001000  ?
0x00004000  0x00007000  +
0x0000B000  0x007F8000  ?
0x00803000  0x00066000  +
0x00869000  0x01796000  ?
0x01FFF000  0x00201000  +
0x02200000  0x01DFF000  ?
"""

# partclone.ntfs's log for a volume with the dirty flag set
DIRTY_LOG = """\
Partclone v0.3.23 http://partclone.org
Starting to map device (/dev/loop3) to domain log (nd.dom)
ntfsclone-ng.c: NTFS Volume '/dev/loop3' is scheduled for a check or it was shutdown
uncleanly. Please boot Windows or fix it by fsck.
Partclone fail, please check nd.log !
"""

# partx -g -b -P -o NR,START,SIZE,TYPE of an MBR disk with an extended partition
MBR = [{"NR": "1", "START": "2048", "SIZE": "33554432", "TYPE": "0x7"},
       {"NR": "2", "START": "69632", "SIZE": "52428800", "TYPE": "0x5"},
       {"NR": "3", "START": "174080", "SIZE": "8388608", "TYPE": "0x83"},
       {"NR": "5", "START": "73728", "SIZE": "20971520", "TYPE": "0x83"},
       {"NR": "6", "START": "116736", "SIZE": "8388608", "TYPE": "0x83"}]

XFS_CLEAN = """xfs_logprint:
    data device: 0x10303
    log device: 0x10303 daddr: 316464 length: 131072

    log tail: 12 head: 12 state: <CLEAN>
"""
XFS_DIRTY = XFS_CLEAN.replace("tail: 12 head: 12 state: <CLEAN>",
                              "tail: 2 head: 8 state: <DIRTY>")


def test_partclone_domain_map_is_read_exactly():
    m = partclone.parse_domain(NTFS_MAP)
    assert m.extent == 0x3FFF000  # the backup boot sector's last 4 KiB are not in it
    assert m.used == ((0, 0x3000), (0x4000, 0x7000), (0x803000, 0x66000),
                      (0x1FFF000, 0x201000))
    assert m.free() == [(0x3000, 0x1000), (0xB000, 0x7F8000), (0x869000, 0x1796000),
                        (0x2200000, 0x1DFF000)]


@pytest.mark.parametrize("bad", [
    NTFS_MAP.replace("0x00003000  0x00001000  ?", "0x00003000  0x00000800  ?"),  # a hole
    NTFS_MAP.replace("0x00004000  0x00007000  +", "0x00004000  0x00007000"),  # truncated
    NTFS_MAP.replace("0x03FFF000     ?\n", ""),  # no status line
    NTFS_MAP.replace("0x00000000  0x00003000  +", "0x00000000  0x00000000  +"),
    "# nothing\n",
    "",
])
def test_a_garbled_domain_map_is_refused(bad):
    with pytest.raises(partclone.MapError):
        partclone.parse_domain(bad)


def test_any_status_but_free_counts_as_used():
    m = partclone.parse_domain("0x3000 ?\n0x0 0x1000 +\n0x1000 0x1000 -\n0x2000 0x1000 ?\n")
    assert m.used == ((0, 0x2000),) and m.extent == 0x3000


def test_partclone_reason_is_its_own_words():
    assert partclone.reason(DIRTY_LOG, "/dev/loop3", "partition 2") == (
        "NTFS Volume 'partition 2' is scheduled for a check or it was shutdown uncleanly. "
        "Please boot Windows or fix it by fsck.")


def test_range_arithmetic():
    assert usedblocks.merge([(10, 5), (0, 10), (20, 1), (21, 0), (18, 3)]) == [(0, 15),
                                                                               (18, 3)]
    assert usedblocks.complement([(0, 10), (50, 10)], 100) == [(10, 40), (60, 40)]
    assert usedblocks.complement([(90, 50)], 100) == [(0, 90)]
    assert usedblocks.complement([], 7) == [(0, 7)]
    # free ranges shrink to whole sectors, so the domain grows outwards
    assert usedblocks.shrink([(100, 1000), (1024, 100)], 512) == [(512, 512)]
    ranges = [(0, 10), (20, 10), (40, 10)]
    assert usedblocks.covered(ranges, 5, 45) == 5 + 10 + 5
    assert usedblocks.covered(ranges, 10, 20) == 0 and usedblocks.covered(ranges, 0, 99) == 30


def test_mbr_table_with_logical_partitions():
    slots = usedblocks.slots_from_partx(MBR, 128 << 20, "dos")
    assert [(s.number, s.start // 512, s.container) for s in slots] == [
        (1, 2048, False), (2, 69632, True), (5, 73728, False), (6, 116736, False),
        (3, 174080, False)]
    assert not any(s.problem for s in slots)


def test_overlapping_and_truncated_partitions_are_copied_in_full():
    rows = [{"NR": "1", "START": "2048", "SIZE": str(4096 * 512), "TYPE": "0x83"},
            {"NR": "2", "START": "4096", "SIZE": str(4096 * 512), "TYPE": "0x83"},
            {"NR": "3", "START": "12288", "SIZE": str(1 << 30), "TYPE": "0x83"},
            {"NR": "4", "START": str(1 << 20), "SIZE": "1048576", "TYPE": "0x83"}]
    slots = usedblocks.slots_from_partx(rows, 8 << 20, "dos")
    assert [s.problem.split(":")[0] for s in slots] == [
        "overlaps partition 2", "overlaps partition 1", "extends past the end of the disk"]
    assert slots[2].size == (8 << 20) - 12288 * 512 and len(slots) == 3


def test_4k_sectors_partx_counts_512_byte_units():
    # a GPT partition at LBA 256 of a 4096-byte-sector disk, as partx prints it
    rows = [{"NR": "1", "START": "2048", "SIZE": "4194304",
             "TYPE": "0fc63daf-8483-4772-8e79-3d69d8477de4"}]
    [s] = usedblocks.slots_from_partx(rows, 1 << 30, "gpt")
    assert (s.number, s.start, s.size, s.container) == (1, 1 << 20, 4 << 20, False)


def restart_page(*, in_use: int, flags: int, lsn: int, magic: bytes = b"RSTR") -> bytes:
    page = bytearray(b"\0" * 4096)
    page[0:4] = magic
    struct.pack_into("<HHqIIHhh", page, 4, 0x1E, 9, 0, 4096, 4096, 0x30, 1, 1)
    struct.pack_into("<qHHHH", page, 0x30, lsn, 1, NO_CLIENT_FREE, in_use, flags)
    return bytes(page)


NO_CLIENT_FREE = 0xFFFF


def test_ntfs_journal_states():
    assert fsstate.logfile_state(b"\xff" * 65536) is None  # emptied by ntfs-3g or mkntfs
    clean = restart_page(in_use=0, flags=fsstate.RESTART_CLEAN, lsn=5)
    dirty = restart_page(in_use=0, flags=0, lsn=9)
    closed = restart_page(in_use=0xFFFF, flags=0, lsn=9)
    assert fsstate.logfile_state(clean + clean) is None
    assert fsstate.logfile_state(closed + closed) is None
    assert "not clean" in fsstate.logfile_state(dirty + dirty)
    # the more recent restart area decides
    assert "not clean" in fsstate.logfile_state(clean + dirty)
    assert fsstate.logfile_state(restart_page(in_use=0, flags=0, lsn=1) + clean) is None
    assert fsstate.logfile_state(restart_page(in_use=0, flags=2, lsn=1, magic=b"CHKD")
                                 + b"\0" * 4096) is None
    assert "not recognised" in fsstate.logfile_state(b"\0" * 65536)
    assert "not recognised" in fsstate.logfile_state(b"RSTR" + b"\0" * 100)


def ext_superblock(state: int, incompat: int, magic: int = 0xEF53) -> bytes:
    sb = bytearray(1024)
    struct.pack_into("<HH", sb, 0x38, magic, state)
    struct.pack_into("<I", sb, 0x60, incompat)
    return bytes(sb)


def test_ext_superblock_states():
    assert fsstate.ext_state(ext_superblock(1, 0x2C2)) is None  # clean, extents, 64bit...
    assert "needs recovery" in fsstate.ext_state(ext_superblock(1, 0x2C2 | 4))
    assert "errors" in fsstate.ext_state(ext_superblock(3, 0x2C2))
    assert "not cleanly unmounted" in fsstate.ext_state(ext_superblock(0, 0), "ext2")
    assert "no ext4 superblock" in fsstate.ext_state(ext_superblock(1, 0, magic=0))


def test_xfs_log_states():
    assert fsstate.xfs_log_state(XFS_CLEAN) is None
    assert "XFS log not clean" in fsstate.xfs_log_state(XFS_DIRTY)
    assert "unreadable" in fsstate.xfs_log_state("xfs_logprint: unknown log device\n")


def fake_source(size: int, sector: int = 512):
    return SimpleNamespace(size=size, sector_size=sector, node="/dev/sdz", is_partition=False)


def test_a_domain_from_parts(monkeypatch):
    """Gaps, an extended partition and mapped parts: the domain is everything but the
    vouched free ranges, those cut to whole sectors (the domain rounded outwards)."""
    mib = 1 << 20
    slots = usedblocks.slots_from_partx(MBR, 128 * mib, "dos")

    def fake_map(source, slot, in_use):
        fields = {"number": slot.number, "start": slot.start, "size": slot.size,
                  "fstype": "ntfs" if slot.number == 1 else None, "label": None,
                  "tool": "partclone.ntfs" if slot.number == 1 else None,
                  "note": "" if slot.number == 1 else "unknown filesystem: copied in full"}
        free = [(slot.start + 2 * mib + 100, 20 * mib)] if slot.number == 1 else []
        return fields, free

    monkeypatch.setattr(usedblocks, "_map", fake_map)
    d = usedblocks._assemble(fake_source(128 * mib), slots, "dos", 512)
    hole_start = -(-(mib + 2 * mib + 100) // 512) * 512
    hole_end = (mib + 2 * mib + 100 + 20 * mib) // 512 * 512
    assert d.ranges == [(0, hole_start), (hole_end, 128 * mib - hole_end)]
    assert d.bytes() == 128 * mib - (hole_end - hole_start)
    by = {(p.number, p.start): p for p in d.parts}
    assert by[(None, 0)].note.startswith("partition table")
    assert by[(1, mib)].used == 32 * mib - (hole_end - hole_start)
    extended = by[(2, 69632 * 512)]
    assert extended.note.startswith("extended partition")
    assert extended.used == (2 + 1 + 19) * mib  # its EBRs and gaps, not its logical ones
    assert [p.note for p in d.parts if p.number is None][-1] == "after the last partition"
    assert d.summary() == "used blocks of 1 NTFS partition and everything else: " \
        "113.2 MB of 134.2 MB"


def test_domain_digest_json_and_full():
    d = Domain(1 << 20, 512, [(0, 4096), (8192, 512)],
               [DomainPart(None, 0, 1 << 20, "ext4", "x", "partclone.extfs", 4608, "")])
    again = Domain.from_dict(json.loads(json.dumps(d.as_dict())))
    assert again == d and again.digest() == d.digest()
    other = Domain(1 << 20, 512, [(0, 4096), (8192, 1024)], d.parts)
    assert other.digest() != d.digest()
    assert d.as_dict()["bytes"] == 4608
    assert d.summary() == "used blocks of the ext4 filesystem: 4.6 kB of 1.0 MB"
    full = Domain.full(1 << 20, 512, "unknown filesystem: copied in full")
    assert full.ranges == [(0, 1 << 20)] and full.summary().startswith("everything")


def test_a_layout_that_cannot_be_read_is_copied_in_full(monkeypatch):
    def broken(source):
        raise OSError("sfdisk failed: /dev/sdz: cannot open (exit 1)")
    monkeypatch.setattr(usedblocks, "layout", broken)
    d = usedblocks.used_domain(fake_source(10 << 20))
    assert d.ranges == [(0, 10 << 20)] and "sfdisk failed" in d.parts[0].note
    assert usedblocks.recognised(fake_source(10 << 20)) == []


def test_what_is_copied_in_full_by_type(monkeypatch):
    monkeypatch.setattr(usedblocks.tools, "installed", lambda tool: tool != "partclone.xfs")
    assert usedblocks._why_full(None) == "unknown filesystem: copied in full"
    assert usedblocks._why_full("BitLocker") == "BitLocker: encrypted, copied in full"
    assert usedblocks._why_full("crypto_LUKS") == "LUKS: encrypted, copied in full"
    assert usedblocks._why_full("ReFS").startswith("ReFS")
    assert usedblocks._why_full("swap") == "swap: copied in full"
    assert usedblocks._why_full("btrfs") == "btrfs: no tool here maps it, copied in full"
    assert "partclone.xfs is not installed" in usedblocks._why_full("xfs")
    assert usedblocks._why_full("ntfs") == ""


def test_only_partition_types_made_for_one_filesystem_are_mapped():
    """A dynamic disk's (LDM), LVM's, RAID's or Storage Spaces' partition may hold a
    volume in pieces anywhere: whatever blkid finds at its start, it is copied in full."""
    mib = 1 << 20

    def row(n, kind):
        return {"NR": str(n), "START": str(2048 * n), "SIZE": str(mib), "TYPE": kind}
    dos = usedblocks.slots_from_partx(
        [row(1, "0x7"), row(2, "0x42"), row(3, "0x8e"), row(4, "0xfd")], 64 * mib, "dos")
    assert [s.problem for s in dos] == [
        "", "a dynamic disk (LDM) partition: its volumes may span partitions: copied in full",
        "an LVM physical volume: its logical volumes may span partitions: copied in full",
        "a RAID member: copied in full"]
    gpt = usedblocks.slots_from_partx([
        row(1, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"),  # basic data
        row(2, "af9b60a0-1431-4f62-bc68-3311714a69ad"),  # LDM data
        row(3, "e75caf8f-f680-4cee-afa3-b001e56efc2d"),  # Storage Spaces
        row(4, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),  # EFI System
        row(5, "48465300-0000-11aa-aa11-00306543ecac"),  # HFS+: not in the list
        row(6, "")], 64 * mib, "gpt")
    assert [s.problem.split(":")[0] for s in gpt] == [
        "", "a dynamic disk (LDM) partition", "a Storage Spaces partition", "",
        "partition type 48465300-0000-11aa-aa11-00306543ecac is not known to hold exactly "
        "one filesystem", "its partition type could not be read"]


def test_a_partclone_failure_without_words_says_its_logs_last_lines(monkeypatch):
    """Its log is in a temporary directory, gone once it returns: the reason has the
    log's last lines, never its path."""
    import subprocess

    def fake_run(argv, **_kw):
        with open(argv[argv.index("-L") + 1], "w") as f:
            f.write("Partclone v0.3.23 http://partclone.org\nStarting to map device "
                    f"({argv[argv.index('-s') + 1]}) to domain log (x.dom)\n"
                    f"Partclone fail, please check {argv[argv.index('-L') + 1]} !\n")
        return subprocess.CompletedProcess(argv, 1, "", "")
    monkeypatch.setattr(partclone.tools, "run", fake_run)
    with pytest.raises(OSError) as e:
        partclone.allocation_map("ntfs", "/dev/loop9", shown="partition 2")
    said = str(e.value)
    assert "partclone.log" not in said and "rtk-partclone-" not in said, said
    assert said.startswith("partclone.ntfs: failed (exit 1); its log ends: ") and \
        "Starting to map device (partition 2)" in said, said
