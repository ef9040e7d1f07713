"""What an image's partitions say before it is written: the facts that decide which
firmware mode it boots in (:mod:`toolkit.restore.bootmode`) and which partitions are
encrypted (restored as they are, never resized: :mod:`toolkit.restore.fit`).

:func:`from_head` needs only the first MiB, which every image gives before writing
(also a compressed or downloaded one): the table, the MBR's boot code (its first 440
bytes), the MBR boot flags and GPT's "legacy BIOS bootable" attribute, the ESP and the
BIOS boot partition by their types. :func:`read_contents` adds what needs the image's
other bytes, when they can be read at random (a local raw image or disk, a local
container through qemu-img, a downloaded or unpacked copy): each partition's first
4 KiB (BitLocker's ``-FVE-FS-`` at byte 3, BitLocker To Go's header, LUKS's
``LUKS\\xba\\xbe`` at byte 0: :func:`encryption`) and the ``.efi`` files of the ESP
(mtools, on the image file at the partition's offset, or on a copy of just that
partition made by qemu-img).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.restore import contents, detect, qemu
from toolkit.system import tools

ESP_GUID = contents.ESP_GUID
BIOS_BOOT_GUID = "21686148-6449-6e6f-744e-656564454649"  # sgdisk's EF02 (GRUB's core)
FAT_MBR = ("0x01", "0x04", "0x06", "0x0b", "0x0c", "0x0e")  # FAT types UEFI can read
ESP_MAX = 2 << 30  # an ESP larger than this is not copied out of a container to list it
_BDE_GUID = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le  # BitLocker's


def encryption(data: bytes) -> str | None:
    """``"BitLocker"`` or ``"LUKS"`` from a partition's first bytes, else None. BitLocker:
    ``-FVE-FS-`` at byte 3 (Vista and later); To Go: ``MSWIN4.1`` at byte 3 with
    BitLocker's GUID at byte 424 (a plain FAT may say MSWIN4.1 too). LUKS 1 and 2:
    ``LUKS\\xba\\xbe`` at byte 0 (libblkid's magics)."""
    if data[3:11] == b"-FVE-FS-":
        return "BitLocker"
    if data[3:11] == b"MSWIN4.1" and data[424:440] == _BDE_GUID:
        return "BitLocker"
    if data[:6] == b"LUKS\xba\xbe":
        return "LUKS"
    return None


@dataclass
class Layout:
    """``partitions``: number, start, size (bytes), type, active, role ("esp", "bios
    boot" or None), encrypted ("BitLocker", "LUKS", None) and loaders (the ESP's
    ``.efi`` files; None: not read). ``read``: the partitions' contents were read."""

    table: str | None
    partitions: list[dict] = field(default_factory=list)
    boot_code: bool = False  # the MBR's first 440 bytes are not all zero
    pmbr_active: bool = False  # GPT: the protective MBR's entry has the boot flag
    hybrid: bool = False  # GPT: the MBR describes partitions too (a hybrid MBR)
    read: bool = False

    def with_role(self, role: str) -> list[dict]:
        return [p for p in self.partitions if p["role"] == role]

    @property
    def encrypted(self) -> list[dict]:
        return [p for p in self.partitions if p.get("encrypted")]


def _role(table: str, e: detect.Entry) -> str | None:
    if e.type in (ESP_GUID, contents.ESP_MBR):
        return "esp"
    if table == "gpt" and e.type == BIOS_BOOT_GUID:
        return "bios boot"
    return None


def from_head(head: bytes) -> Layout | None:
    """The layout the first MiB gives (None: no first MiB)."""
    if len(head) < 512:
        return None
    geo = detect.geometry(head)
    mbr = detect.mbr_entries(head)
    lay = Layout(geo.table, boot_code=head[:440] != bytes(440))
    if geo.table == "gpt":
        lay.pmbr_active = any(e.type == "0xee" and e.active for e in mbr)
        lay.hybrid = any(e.type != "0xee" for e in mbr)
    for e in detect.partition_entries(head) if geo.table else []:
        lay.partitions.append({"number": e.number, "start": e.start, "size": e.size,
                               "type": e.type, "active": e.active,
                               "role": _role(geo.table, e), "encrypted": None,
                               "loaders": None})
    return lay


Reader = Callable[[int, int], bytes]  # (offset, length) -> the image's bytes there
LoaderReader = Callable[[dict], "list[str] | None"]  # partition -> its .efi files


def read_contents(lay: Layout | None, read: Reader, loaders: LoaderReader) -> None:
    """Fill in what the partitions hold: encryption signatures, the ESP's loaders (and a
    FAT partition's on an MBR disk, which UEFI boots too). A part that cannot be read
    stays unknown (None)."""
    if lay is None:
        return
    for p in lay.partitions:
        try:
            p["encrypted"] = encryption(read(p["start"], 4096))
        except OSError:
            continue
        fat_on_mbr = lay.table == "dos" and p["type"] in FAT_MBR
        if p["role"] == "esp" or (fat_on_mbr and not p["encrypted"]):
            try:
                p["loaders"] = loaders(p)
            except OSError:
                p["loaders"] = None
    lay.read = True


def _loaders(spec: str) -> list[str] | None:
    """The ``.efi`` files of the FAT at ``spec`` (mtools' ``FILE`` or ``FILE@@OFFSET``): none
    when it holds no \\EFI (or is no FAT); None when mtools is not installed (unknown)."""
    return contents.esp_loaders(spec) if tools.installed("mdir") else None


def file_readers(path: str) -> tuple[Reader, LoaderReader]:
    """Readers of a raw image file (or a disk given as the image), read in place."""
    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def loaders(p: dict) -> list[str] | None:
        return _loaders(f"{path}@@{p['start']}")
    return read, loaders


def container_readers(path: str, fmt: str) -> tuple[Reader, LoaderReader]:
    """Readers of a local container (qemu-img reads the bytes; the ESP is copied to a
    sparse temporary file for mtools, up to :data:`ESP_MAX`)."""
    def read(offset: int, length: int) -> bytes:
        return qemu.read_range(path, fmt, offset, length)

    def loaders(p: dict) -> list[str] | None:
        if p["size"] > ESP_MAX:
            return None
        with tempfile.TemporaryDirectory(prefix="rtk-esp-") as d:
            out = os.path.join(d, "esp")
            qemu.convert_range_to_file(path, fmt, p["start"], p["size"], out)
            return _loaders(out)
    return read, loaders


def image_layout(location: str, fmt: str, head: bytes, *, random_access: bool
                 ) -> Layout | None:
    """The layout of an image whose first MiB is ``head``; with ``random_access`` (a
    local uncompressed file or disk) its partitions' contents too."""
    lay = from_head(head)
    if lay is not None and random_access and lay.partitions:
        read_contents(lay, *(file_readers(location) if fmt == detect.RAW
                             else container_readers(location, fmt)))
    return lay


def notes(lay: Layout | None, grow: bool) -> list[str]:
    """What the plan says about the encrypted partitions: "partition 3: BitLocker:
    restored as is, not resized"."""
    if lay is None:
        return []
    last = max(lay.partitions, key=lambda p: p["start"] + p["size"], default=None)
    out = []
    for p in lay.encrypted:
        text = f"partition {p['number']}: {p['encrypted']}: restored as is, not resized"
        if grow and p is last:
            text += (" (it ends last: the grow step leaves it and its partition as they "
                     "are; grow it from the restored system once it is unlocked)")
        out.append(text)
    return out
