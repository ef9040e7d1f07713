"""The image's own partition table, rewritten for the smaller disk.

Not rebuilt from a description: the image's table bytes are kept and only the places
change, so everything else stays exactly as the image had it (GPT: the disk GUID, every
entry's type, GUID, attributes and name, the number and size of entries, the first
usable LBA; MBR: the boot code, the disk signature, types and boot flags). For any
logical sector size (sfdisk and sgdisk read a regular file as 512-byte sectors):

- GPT: each entry's first and last LBA; the primary header's backup LBA and last usable
  LBA for the new disk; the backup entry array and header at the disk's end; both CRCs.
  The protective MBR's 0xEE entry covers the new disk; a hybrid MBR's entries that mirror
  a partition follow it to its new place (else they are left as they were and said), and
  its 0xEE entry keeps the range it protected.
- MBR: each primary entry's start and length (its CHS fields marked "use LBA", as
  partitioners do past 8 GB).

:func:`write_table` writes it into the sparse file of the target's size.
"""

from __future__ import annotations

import os
import struct
import zlib

from toolkit.restore.shrink_plan import ShrinkPlan

_MBR_ENTRIES = 0x1BE
_LBA_ONLY = b"\xfe\xff\xff"  # CHS 1023/254/63: "the LBA fields say"


def _mbr(sector0: bytes, moves: dict[int, tuple[int, int]], sectors: int,
         protective: bool) -> tuple[bytes, list[str]]:
    """Sector 0 with its entries moved (``moves``: old start LBA -> new start, count); a
    protective entry (0xEE) spanning the disk of ``sectors``."""
    out, notes = bytearray(sector0), []
    kinds = [out[_MBR_ENTRIES + 16 * i + 4] for i in range(4)]
    hybrid = protective and any(k not in (0, 0xEE) for k in kinds)
    for i in range(4):
        at = _MBR_ENTRIES + 16 * i
        kind = out[at + 4]
        start, count = struct.unpack_from("<II", out, at + 8)
        if kind == 0:
            continue
        if protective and kind == 0xEE:
            # a plain protective MBR spans the disk; a hybrid's 0xEE entry keeps the range it
            # protected (beside the entries that mirror partitions), within the disk
            count = min(sectors - 1, 0xFFFFFFFF) if not hybrid else \
                max(0, min(count, sectors - start))
        elif start in moves:
            start, count = moves[start]
        elif protective:
            notes.append(f"the hybrid MBR's entry {i + 1} (type {kind:#04x}) points at no "
                         "partition of the image: left as it was")
            continue
        else:
            raise ValueError(f"MBR entry {i + 1} starts at sector {start}, where the image's "
                             "table has no partition")
        struct.pack_into("<II", out, at + 8, start, count)
        out[at + 1:at + 4] = _LBA_ONLY
        out[at + 5:at + 8] = _LBA_ONLY
    return bytes(out), notes


def _header(raw: bytes, *, my: int, alt: int, last_usable: int, entries_lba: int,
            entries_crc: int) -> bytes:
    h = bytearray(raw)
    size = struct.unpack_from("<I", h, 12)[0]
    struct.pack_into("<QQ", h, 24, my, alt)
    struct.pack_into("<Q", h, 48, last_usable)
    struct.pack_into("<Q", h, 72, entries_lba)
    struct.pack_into("<I", h, 88, entries_crc)
    struct.pack_into("<I", h, 16, 0)
    struct.pack_into("<I", h, 16, zlib.crc32(bytes(h[:size])))
    return bytes(h)


def gpt_pieces(read, sp: ShrinkPlan) -> tuple[dict[int, bytes], list[str]]:
    """{byte offset: bytes} of the new GPT (both copies, the protective MBR); what the
    person must know. ``read(offset, n)`` reads the image."""
    ss = sp.sector
    header = read(ss, ss)
    if header[:8] != b"EFI PART":
        raise ValueError("the image's primary GPT header is missing")
    entries_lba, count, esize = struct.unpack_from("<QII", header, 72)
    array = bytearray(read(entries_lba * ss, count * esize))
    by_lba = {p.start // ss: p for p in sp.parts}
    for i in range(count):
        at = i * esize
        first = struct.unpack_from("<Q", array, at + 32)[0]
        p = by_lba.get(first)
        if array[at:at + 16] != bytes(16) and p is not None:
            struct.pack_into("<QQ", array, at + 32, p.new_start // ss,
                             (p.new_start + p.new_size) // ss - 1)
    sectors = sp.size // ss
    last = sectors - 1
    esectors = -(-count * esize // ss)
    crc = zlib.crc32(bytes(array))
    usable = last - esectors - 1
    primary = _header(header, my=1, alt=last, last_usable=usable, entries_lba=entries_lba,
                      entries_crc=crc)
    backup = _header(header, my=last, alt=1, last_usable=usable,
                     entries_lba=last - esectors, entries_crc=crc)
    moves = {p.start // ss: (p.new_start // ss, p.new_size // ss) for p in sp.parts}
    mbr, notes = _mbr(read(0, 512), moves, sectors, protective=True)
    pieces = {0: mbr, ss: primary, entries_lba * ss: bytes(array),
              (last - esectors) * ss: bytes(array), last * ss: backup}
    return pieces, notes


def mbr_pieces(read, sp: ShrinkPlan) -> tuple[dict[int, bytes], list[str]]:
    moves = {p.start // sp.sector: (p.new_start // sp.sector, p.new_size // sp.sector)
             for p in sp.parts}
    mbr, notes = _mbr(read(0, 512), moves, sp.size // sp.sector, protective=False)
    return {0: mbr}, notes


def write_table(image_view: str, sp: ShrinkPlan, path: str) -> list[str]:
    """The new table in ``path`` (a new sparse file of the target's size), with the
    image's bytes before its first partition (boot code, a boot loader in the gap)."""
    first = min((p.start for p in sp.parts), default=1 << 20)
    fd_in = os.open(image_view, os.O_RDONLY)
    try:
        def read(offset: int, n: int) -> bytes:
            data = os.pread(fd_in, n, offset)
            if len(data) != n:
                raise ValueError(f"the image ends before byte {offset + n}")
            return data
        pieces, notes = (gpt_pieces if sp.scheme == "gpt" else mbr_pieces)(read, sp)
        head = read(0, first)
    finally:
        os.close(fd_in)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, sp.size)
        os.pwrite(fd, head, 0)
        for offset, data in sorted(pieces.items()):
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return notes
