"""What an image is, by its content (never by its name).

:func:`compression` and :func:`container` read magic bytes: gzip ``1f 8b``, xz
``fd 37 7a 58 5a 00``, zstd ``28 b5 2f fd``; qcow2 ``QFI\\xfb``, VHDX
``vhdxfile``, VMDK ``KDMV`` (sparse extent) or ``# Disk DescriptorFile``,
VHD ``conectix`` in the 512-byte footer at the end (a fixed VHD: raw data,
then the footer) or at the start (a dynamic VHD starts with a copy of its
footer). Anything else is a raw disk image.

:func:`geometry` reads the first MiB of a raw disk image: a GPT header
(``EFI PART``) at byte 512 means 512-byte logical sectors, at byte 4096 means
4096-byte sectors, and its backup-header LBA gives the size of the disk the
image was made from; an MBR gives the end of its last partition. Both let a
restore be refused before anything is written, even for a compressed stream
whose decompressed size is unknown. :func:`partition_entries` lists the partitions
it describes (type, start, size, boot flag), for :mod:`toolkit.restore.layout`.

:func:`vhd_size` reads a VHD footer's size as qemu-img does (and Virtual PC: its
CHS geometry; Hyper-V's and Disk2vhd's current size).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

GZIP, XZ, ZSTD = "gzip", "xz", "zstd"
RAW, QCOW2, VPC, VHDX, VMDK = "raw", "qcow2", "vpc", "vhdx", "vmdk"
QEMU_FORMATS = (QCOW2, VPC, VHDX, VMDK)  # qemu-img's driver names (VHD is "vpc")
FORMAT_NAMES = {RAW: "raw disk image", QCOW2: "qcow2", VPC: "VHD", VHDX: "VHDX",
                VMDK: "VMDK"}

_COMPRESSION = ((b"\x1f\x8b", GZIP), (b"\xfd7zXZ\x00", XZ), (b"\x28\xb5\x2f\xfd", ZSTD))


def compression(head: bytes) -> str | None:
    """``gzip``, ``xz``, ``zstd`` or None, from the first bytes."""
    for magic, name in _COMPRESSION:
        if head.startswith(magic):
            return name
    return None


def container(head: bytes, tail: bytes | None = None) -> str:
    """The disk image format (qemu-img driver name, or ``raw``) from its first and last bytes."""
    if head.startswith(b"QFI\xfb"):
        return QCOW2
    if head.startswith(b"vhdxfile"):
        return VHDX
    if head.startswith(b"KDMV") or head.startswith(b"# Disk DescriptorFile"):
        return VMDK
    if head.startswith(b"conectix"):
        return VPC
    if tail is not None and len(tail) >= 512 and tail[-512:].startswith(b"conectix"):
        return VPC
    return RAW


def archive(data: bytes) -> str | None:
    """What a (decompressed) first MiB is when it is an archive, not a disk image: "a tar
    archive", "a zip archive", "a partclone image" (of one partition, as Clonezilla and FOG
    keep them); else None. A single filesystem without a partition table is a raw image."""
    if data[257:262] == b"ustar":
        return "a tar archive"
    if data.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if data.startswith(b"partclone-image"):
        return "a partclone image (of one partition, as Clonezilla and FOG keep them)"
    return None


def not_a_disk_image(location: str, data: bytes) -> str | None:
    """The refusal for an archive given as a disk image (:func:`archive`), else None."""
    what = archive(data)
    return what and (f"{location}: this is {what}, not a disk image: nothing was written "
                     "(restore a raw disk image, plain or gzip/xz/zstd-compressed, or a "
                     "qcow2, VHD, VHDX or VMDK file)")


def virtual_size_hint(fmt: str, head: bytes, tail: bytes | None = None) -> int | None:
    """The virtual disk size from a container's header, where it sits in the first bytes."""
    try:
        if fmt == QCOW2:
            return struct.unpack_from(">Q", head, 24)[0]
        if fmt == VMDK and head.startswith(b"KDMV"):
            return struct.unpack_from("<Q", head, 12)[0] * 512
        if fmt == VPC:
            footer = head[:512] if head.startswith(b"conectix") else (tail or b"")[-512:]
            return vhd_size(footer)
    except struct.error:
        return None
    return None  # VHDX keeps it in its metadata region: toolkit.restore.vhdx reads it


# Creator applications whose VHDs are as large as the footer's current size says; the
# others (Virtual PC's "vpc ", Virtual Server's "vs  ", qemu's old "qemu") are as large as
# their CHS geometry, which is what they read (qemu's vpc driver follows the same table)
_VHD_CURRENT_SIZE = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
_VHD_MAX_CHS = 65535 * 16 * 255


def vhd_size(footer: bytes) -> int:
    """The disk size a VHD footer gives, as qemu-img (and Virtual PC) reads it: the CHS
    geometry for Virtual PC's images (``vpc `` made a 127 GiB disk 136363130880 bytes, 2 MiB
    less than its current size), the current size for Hyper-V's, Disk2vhd's and the rest,
    and for any geometry at its maximum (a disk larger than CHS can say)."""
    current = struct.unpack_from(">Q", footer, 48)[0]
    cyls, heads, secs = struct.unpack_from(">HBB", footer, 56)
    chs = cyls * heads * secs
    if footer[28:32] in _VHD_CURRENT_SIZE or chs == _VHD_MAX_CHS:
        return current
    return chs * 512


@dataclass(frozen=True)
class Geometry:
    """What the first MiB of a raw disk image says about the disk it came from."""

    table: str | None  # "gpt", "dos" or None
    sector_size: int | None  # logical sector size, when a GPT header shows it
    disk_size: int | None  # GPT: (backup header LBA + 1) * sector size
    min_size: int | None  # MBR: end of the last partition (a lower bound)
    # the partition that ends last (GPT or MBR): its number and the byte it ends at; an
    # image that ends before it is truncated (:func:`truncation`)
    last_partition: int | None = None
    parts_end: int | None = None


def _gpt_parts_end(head: bytes, sector: int) -> tuple[int | None, int | None]:
    """(number, end byte) of the GPT partition that ends last, from the entries in ``head``
    (the array read where the header says; None when it lies past ``head``)."""
    h = head[sector:sector + 92]
    start_lba, count, esize = struct.unpack_from("<QII", h, 72)
    if esize < 128 or count > 4096:
        return None, None
    best: tuple[int | None, int | None] = (None, None)
    for i in range(count):
        off = start_lba * sector + i * esize
        entry = head[off:off + esize]
        if len(entry) < 128:
            return None, None
        if entry[:16] == b"\0" * 16:
            continue
        end = (struct.unpack_from("<Q", entry, 40)[0] + 1) * sector
        if best[1] is None or end > best[1]:
            best = (i + 1, end)
    return best


def truncation(size: int | None, geo: Geometry) -> str | None:
    """Why an image of ``size`` bytes is truncated by its own partition table, else None."""
    if size is None or geo.parts_end is None or size >= geo.parts_end:
        return None
    disk = geo.disk_size or geo.min_size or geo.parts_end
    return (f"the image ends at byte {size} but its partition table describes a disk of "
            f"{disk} bytes (partition {geo.last_partition} ends at byte {geo.parts_end}): "
            "truncated")


def _gpt_header(head: bytes, sector: int) -> int | None:
    """The backup-header LBA of a valid GPT header at LBA 1, or None."""
    h = head[sector:sector + 92]
    if len(h) < 92 or not h.startswith(b"EFI PART"):
        return None
    size = struct.unpack_from("<I", h, 12)[0]
    if not 92 <= size <= sector:
        return None
    hdr = bytearray(head[sector:sector + size])
    crc = struct.unpack_from("<I", hdr, 16)[0]
    hdr[16:20] = b"\0\0\0\0"
    if zlib.crc32(bytes(hdr)) != crc:
        return None
    return struct.unpack_from("<Q", h, 32)[0]


def geometry(head: bytes) -> Geometry:
    """Partition table type, sector size and source disk size from the image's first bytes."""
    for sector in (512, 4096):
        backup = _gpt_header(head, sector)
        if backup is not None:
            number, end = _gpt_parts_end(head, sector)
            return Geometry("gpt", sector, (backup + 1) * sector, None, number, end)
    if len(head) >= 512 and head[510:512] == b"\x55\xaa":
        ends = []
        for i in range(4):
            entry = head[446 + 16 * i:462 + 16 * i]
            ptype = entry[4]
            start, count = struct.unpack_from("<II", entry, 8)
            if ptype and count:
                ends.append(((start + count) * 512, i + 1))
        if ends:
            end, number = max(ends)
            return Geometry("dos", None, None, end, number, end)
    return Geometry(None, None, None, None)


@dataclass(frozen=True)
class Entry:
    """A partition as the image's first MiB describes it. ``type``: the GPT type GUID
    (lower case) or the MBR type (``0x83``); ``active``: the MBR boot flag, or GPT's
    "legacy BIOS bootable" attribute (bit 2)."""

    number: int
    start: int  # bytes
    size: int
    type: str
    active: bool = False


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def mbr_entries(head: bytes) -> list[Entry]:
    """The four MBR slots in use (a protective MBR's 0xEE one too)."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return []
    out = []
    for i in range(4):
        e = head[446 + 16 * i:462 + 16 * i]
        start, count = struct.unpack_from("<II", e, 8)
        if e[4] and count:
            out.append(Entry(i + 1, start * 512, count * 512, f"0x{e[4]:02x}", e[0] == 0x80))
    return out


def partition_entries(head: bytes) -> list[Entry]:
    """The partitions of a GPT (its entries within ``head``) or else of an MBR."""
    for sector in (512, 4096):
        if _gpt_header(head, sector) is None:
            continue
        start_lba, count, esize = struct.unpack_from("<QII", head, sector + 72)
        out = []
        for i in range(min(count, 4096) if esize >= 128 else 0):
            e = head[start_lba * sector + i * esize:start_lba * sector + (i + 1) * esize]
            if len(e) < 128:
                break
            if e[:16] == b"\0" * 16:
                continue
            first, last, attrs = struct.unpack_from("<QQQ", e, 32)
            out.append(Entry(i + 1, first * sector, (last - first + 1) * sector, _guid(e[:16]),
                             bool(attrs & 4)))
        return out
    return mbr_entries(head)
