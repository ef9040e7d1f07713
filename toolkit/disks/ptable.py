"""A disk's partition table read from the disk itself: GPT or MBR, parsed here in
Python, nothing written and nothing asked of the kernel's view of the partitions.

:func:`read_table` opens a device (or an image file) read-only and returns a
:class:`Table`: the scheme, the disk's identity (the GPT disk GUID, lower case and
dashed; the MBR disk signature, the 32-bit value at byte 0x1B8, in 8 hex digits as
Windows' diskpart shows it, ``5F1B2C36``) and its partitions (number, byte offset,
size, type; for GPT the partition's GUID and name). :func:`parse` is the pure part, fed
by any ``read(offset, length)``.

GPT (UEFI specification, chapter 5): the primary header at LBA 1 of the disk's logical
sector size (byte 512, or 4096 on a 4Kn disk), its CRC32 and its partition entries'
CRC32 checked; when either is wrong the backup header (at the disk's last LBA) is used
if it is valid, and :attr:`Table.damage` says so. A GPT laid out for the other sector
size (512-byte LBAs on a 4Kn disk, or the reverse) is read too, and said.
MBR: the 0x55AA signature, four entries whose boot flags are 0x00 or 0x80 (a
filesystem's boot sector is not a partition table), logical partitions numbered from 5
along the extended partition's chain.

Which of the two, as libblkid decides: the GPT only behind a protective MBR (an 0xEE
entry, alone or in a hybrid MBR) or when sector 0 holds no MBR at all; a plain MBR in
sector 0 is the table even when a valid GPT header is left at LBA 1 (``sfdisk --wipe
never`` over a former GPT disk), and :attr:`Table.damage` says that header is there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.blockio import blockdev

GPT_SIGNATURE = b"EFI PART"
NO_SIGNATURE = "no GPT signature"
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # 92 bytes
_GPT_ENTRY = struct.Struct("<16s16sQQQ72s")  # 128 bytes
MAX_ENTRIES_BYTES = 1 << 20  # more than any real table (128 x 128 B = 16 KiB)
MBR_PROTECTIVE = 0xEE
MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})
MAX_LOGICAL = 128  # logical partitions followed along an extended chain

# The type GUIDs of the partitions a Windows cluster or a Linux server holds
# (sfdisk --label gpt -T; diskpart's HELP SET for the cluster metadata partition).
GPT_TYPES = {
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows Recovery",
    "db97dba9-0840-4bae-97f0-ffb9a327c7e1": "Cluster metadata",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Windows LDM metadata",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": "Windows LDM data",
    "e75caf8f-f680-4cee-afa3-b001e56efc2d": "Windows Storage Spaces",
    "558d43c5-a1ac-43c0-aac8-d1472b2923d1": "Windows Storage Replica",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "aa31e02a-400f-11db-9590-000c2911d1b8": "VMware VMFS",
}
MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16", 0x05: "Extended", 0x06: "FAT16", 0x07: "NTFS/exFAT",
    0x0B: "FAT32", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)", 0x0F: "Extended (LBA)",
    0x11: "Hidden FAT12", 0x17: "Hidden NTFS", 0x1B: "Hidden FAT32", 0x27: "Windows Recovery",
    0x42: "Windows LDM (dynamic disk)", 0x82: "Linux swap", 0x83: "Linux", 0x85:
    "Linux extended", 0x8E: "Linux LVM", 0xEE: "GPT protective", 0xEF: "EFI System",
    0xFB: "VMware VMFS", 0xFD: "Linux RAID",
}


@dataclass
class Entry:
    """One partition of the table. ``type``: the GPT type GUID (lower case) or the MBR
    type byte (``0x07``); ``guid`` and ``name``: GPT only."""

    number: int
    offset: int  # bytes from the start of the disk
    size: int  # bytes
    type: str
    type_name: str | None = None
    guid: str | None = None
    name: str | None = None


@dataclass
class Table:
    """``scheme``: "gpt" or "mbr"; ``disk_id``: the GPT disk GUID or the MBR disk
    signature (None when a GPT is too damaged to give one); ``damage``: what was wrong
    and what was read instead, in words."""

    scheme: str
    disk_id: str | None
    sector_size: int
    entries: list[Entry] = field(default_factory=list)
    damage: str | None = None


Reader = Callable[[int, int], bytes]


def guid_text(raw: bytes) -> str:
    """A GUID as stored on disk (mixed-endian) -> ``41a4e9d6-472e-4777-ad08-...``."""
    return str(uuid.UUID(bytes_le=raw))


def mbr_signature_text(value: int) -> str:
    """The MBR disk signature as Windows shows it: 8 hex digits (``5F1B2C36``)."""
    return f"{value:08X}"


# --- GPT ----------------------------------------------------------------------------------

@dataclass
class _Header:
    my_lba: int
    alternate_lba: int
    disk_guid: str
    entries_lba: int
    count: int
    entry_size: int
    entries_crc: int


def _header(raw: bytes, sector: int, size: int) -> tuple[_Header | None, str | None]:
    """The GPT header in ``raw`` (one sector), or None and what is wrong with it."""
    if raw[:8] != GPT_SIGNATURE:
        return None, NO_SIGNATURE
    if len(raw) < _GPT_HEADER.size:
        return None, "header cut short"
    f = _GPT_HEADER.unpack_from(raw)
    header_size, crc = f[2], f[3]
    if not _GPT_HEADER.size <= header_size <= sector:
        return None, f"header size {header_size} is implausible"
    check = bytearray(raw[:header_size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != crc:
        return None, "header CRC wrong"
    h = _Header(my_lba=f[5], alternate_lba=f[6], disk_guid=guid_text(f[9]), entries_lba=f[10],
                count=f[11], entry_size=f[12], entries_crc=f[13])
    length = h.count * h.entry_size
    if h.entry_size < _GPT_ENTRY.size or length > MAX_ENTRIES_BYTES \
            or h.entries_lba * sector + length > size:
        return None, "entry array implausible"
    return h, None


def _entries(read: Reader, h: _Header, sector: int) -> list[Entry] | None:
    """The used entries of the array ``h`` points to; None when its CRC is wrong."""
    length = h.count * h.entry_size
    raw = read(h.entries_lba * sector, -(-length // sector) * sector)[:length]
    if len(raw) < length or zlib.crc32(raw) != h.entries_crc:
        return None
    out = []
    for i in range(h.count):
        type_raw, part_raw, first, last, _attrs, name = _GPT_ENTRY.unpack_from(
            raw, i * h.entry_size)
        if type_raw == bytes(16):
            continue
        kind = guid_text(type_raw)
        out.append(Entry(number=i + 1, offset=first * sector,
                         size=max(0, last - first + 1) * sector, type=kind,
                         type_name=GPT_TYPES.get(kind), guid=guid_text(part_raw),
                         name=name.decode("utf-16-le", "replace").split("\0", 1)[0] or None))
    return out


def _gpt_at(read: Reader, size: int, sector: int, lba: int):
    """``(header, entries, problem)`` of the GPT header at ``lba`` (entries None: CRC)."""
    if lba < 1 or (lba + 1) * sector > size:
        return None, None, "beyond the end of the disk"
    h, problem = _header(read(lba * sector, sector), sector, size)
    if h is not None and h.my_lba != lba:
        h, problem = None, f"header says it is at LBA {h.my_lba}, not {lba}"
    if h is None:
        return None, None, problem
    return h, _entries(read, h, sector), None


def parse_gpt(read: Reader, size: int, sector: int, protective: bool = False) -> Table | None:
    """The GPT of a disk of ``size`` bytes and ``sector``-byte LBAs; None without one.
    The backup header is looked for only when there is a sign of a GPT (a signature at
    LBA 1, or ``protective``: a protective MBR), as libblkid does: a disk partitioned
    with MBR over an old GPT keeps that GPT's backup at its end, and it is not the table."""
    h, entries, problem = _gpt_at(read, size, sector, 1)
    if h is not None and entries is not None:
        return Table("gpt", h.disk_guid, sector, entries)
    if h is None and problem == NO_SIGNATURE and not protective:
        return None
    last = size // sector - 1
    backup_lba = h.alternate_lba if h is not None and 1 < h.alternate_lba <= last else last
    b, b_entries, _ = _gpt_at(read, size, sector, backup_lba)
    what = ("GPT partition entries damaged (CRC wrong)" if h is not None
            else f"GPT header damaged ({problem})")
    if b is not None and b_entries is not None:
        return Table("gpt", b.disk_guid, sector, b_entries,
                     damage=f"{what}: read from the backup header at LBA {backup_lba}")
    if h is not None:
        return Table("gpt", h.disk_guid, sector, [],
                     damage=f"{what}, and the backup's too: partitions not shown")
    if b is not None:  # the backup header is sound but its entries are not
        return Table("gpt", b.disk_guid, sector, [],
                     damage=f"{what}, and the backup's entries too: partitions not shown")
    return None


# --- MBR ----------------------------------------------------------------------------------

def _mbr_entries(sector0: bytes) -> list[tuple[int, int, int, int]] | None:
    """``(status, type, first LBA, sectors)`` of the four entries; None when the sector
    is no MBR (no 0x55AA, a filesystem's boot sector, a boot flag other than 0/0x80)."""
    if len(sector0) < 512 or sector0[510:512] != b"\x55\xaa":
        return None
    if sector0[3:11] in (b"NTFS    ", b"EXFAT   ") or b"FAT" in (sector0[0x36:0x39],
                                                               sector0[0x52:0x55]):
        return None
    entries = [struct.unpack_from("<B3xB3xII", sector0, 0x1BE + 16 * i) for i in range(4)]
    if any(status not in (0x00, 0x80) for status, *_ in entries):
        return None
    return entries


def _mbr_entry(number: int, kind: int, lba: int, count: int, sector: int) -> Entry:
    return Entry(number=number, offset=lba * sector, size=count * sector, type=f"0x{kind:02x}",
                 type_name=MBR_TYPES.get(kind))


def _logical(read: Reader, size: int, sector: int, ext_lba: int) -> list[Entry]:
    """The logical partitions along the extended partition's chain of EBRs at ``ext_lba``."""
    out: list[Entry] = []
    ebr, seen = ext_lba, set()
    while len(out) < MAX_LOGICAL and ebr not in seen and (ebr + 1) * sector <= size:
        seen.add(ebr)
        raw = read(ebr * sector, sector)
        if len(raw) < 512 or raw[510:512] != b"\x55\xaa":
            break
        (_s, kind, rel, count), (_s2, next_kind, next_rel, _n) = (
            struct.unpack_from("<B3xB3xII", raw, 0x1BE + 16 * i) for i in range(2))
        if kind and count:
            out.append(_mbr_entry(5 + len(out), kind, ebr + rel, count, sector))
        if next_kind not in MBR_EXTENDED or not next_rel:
            break
        ebr = ext_lba + next_rel
    return out


def parse_mbr(read: Reader, sector0: bytes, size: int, sector: int) -> Table | None:
    """The MBR in ``sector0``; None when it is none (or only a GPT's protective MBR)."""
    entries = _mbr_entries(sector0)
    if entries is None or any(kind == MBR_PROTECTIVE for _s, kind, _l, _c in entries):
        return None
    (signature,) = struct.unpack_from("<I", sector0, 0x1B8)
    parts = [_mbr_entry(i + 1, kind, lba, count, sector)
             for i, (_s, kind, lba, count) in enumerate(entries) if kind and count]
    for e in list(parts):
        if int(e.type, 16) in MBR_EXTENDED:
            parts += _logical(read, size, sector, e.offset // sector)
    return Table("mbr", mbr_signature_text(signature), sector, parts)


# --- both ---------------------------------------------------------------------------------

def parse(read: Reader, size: int, sector: int, *, guess: bool = False) -> Table | None:
    """The partition table of a disk of ``size`` bytes with ``sector``-byte logical
    sectors, read through ``read(offset, length)``; None when it holds none. A GPT laid
    out for the other sector size (512 or 4096) is read too, and said, unless ``guess``
    (an image file, whose sector size nobody knows: either is taken as it is)."""
    sector0 = read(0, sector)
    mbr = _mbr_entries(sector0)
    protective = mbr is not None and any(k == MBR_PROTECTIVE for _s, k, _l, _c in mbr)
    if mbr is not None and not protective:  # a GPT counts only behind a protective MBR
        table = parse_mbr(read, sector0, size, sector)
        if table is not None and _old_gpt(read, size, sector):
            table.damage = "an old GPT header remains at LBA 1; the disk is MBR"
        return table
    gpt = parse_gpt(read, size, sector, protective)
    if gpt is not None:
        return gpt
    for other in (512, 4096):
        if other != sector and size >= 2 * other:
            gpt = parse_gpt(read, size, other)
            if gpt is not None:
                if not guess:
                    gpt.damage = (f"GPT laid out for {other}-byte sectors on a disk of "
                                  f"{sector}-byte sectors: Windows will not read it")
                return gpt
    if protective:
        return Table("gpt", None, sector, [], damage="GPT damaged: a protective MBR, but "
                     "neither the primary nor the backup GPT header is valid")
    return None


def _old_gpt(read: Reader, size: int, sector: int) -> bool:
    """Whether a valid GPT header (for either sector size) is left at LBA 1 of a disk
    whose sector 0 is a plain MBR: the disk's old table, which nothing reads."""
    sizes = dict.fromkeys((sector, 512, 4096))  # the disk's own first
    return any(_gpt_at(read, size, s, 1)[0] is not None for s in sizes if size >= 2 * s)


class _Source:
    """A device (or file) opened read-only: O_DIRECT when the device takes it (a SAN's
    LUN may have changed behind this machine's page cache), reads sector-aligned."""

    def __init__(self, path: str):
        try:
            self.fd = blockdev.open_device(path, direct=True)
        except OSError as e:
            if e.errno != errno.EINVAL:  # a file on tmpfs takes no O_DIRECT
                raise
            self.fd = blockdev.open_device(path, direct=False)
        self.size = blockdev.device_size(self.fd)
        self.sector = blockdev.logical_sector_size(self.fd)

    def read(self, offset: int, length: int) -> bytes:
        start = offset // 4096 * 4096  # aligned for any sector size up to a page
        end = min(self.size, -(-(offset + length) // 4096) * 4096)
        if end <= start:
            return b""
        buf = blockdev.AlignedBuffer(max(4096, end - start))
        try:
            try:
                blockdev.read_exact(self.fd, buf.view[:end - start], start)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # a filesystem that opens with O_DIRECT but reads without it: plain reads
                fcntl.fcntl(self.fd, fcntl.F_SETFL,
                            fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                blockdev.read_exact(self.fd, buf.view[:end - start], start)
            return bytes(buf.view[offset - start:offset - start + length])
        finally:
            buf.close()

    def close(self) -> None:
        os.close(self.fd)


def read_table(path: str, sector_size: int | None = None) -> Table | None:
    """The partition table on the device or image file at ``path`` (never written);
    None when it holds none. ``sector_size``: the logical sector size (default: the
    device's; 512 for a file, where a GPT for 4096-byte sectors is found too).
    Raises OSError when the device cannot be opened or read."""
    src = _Source(path)
    try:
        guess = sector_size is None and not blockdev.is_block_device(path)
        return parse(src.read, src.size, sector_size or src.sector, guess=guess)
    finally:
        src.close()
