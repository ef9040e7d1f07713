"""Boot mode, encrypted partitions and the formats' own headers, without a device
(issue 18 items 4-6): which mode an image boots in, from MBR and GPT first MiBs built
here byte by byte; the warnings and refusals against a machine's firmware mode (a
sysfs root of the test's own, with or without firmware/efi); BitLocker and LUKS
signatures; the VHD sizes of the Virtual PC, Hyper-V and Disk2vhd samples (QEMU's,
tests/fixtures/qemu-samples), and the VHDX headers and metadata of the Hyper-V samples,
one of them with a log never replayed; the plan file's boot_mode and vhdx_log."""

from __future__ import annotations

import bz2
import os
import struct
import uuid
import zlib
from pathlib import Path

import pytest
from conftest import FIXTURES, MiB

from toolkit.restore import bootmode, detect, layout, vhdx
from toolkit.unattended import plan as uplan

SAMPLES = FIXTURES / "qemu-samples"
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
MSDATA = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
CODE = bytes((i * 7 + 3) % 251 + 1 for i in range(440))  # boot code: not all zeros


def mbr(parts: list[tuple[int, int, int, bool]], code: bytes = CODE) -> bytearray:
    """A first MiB with an MBR: (type, start LBA, sectors, active) per slot."""
    head = bytearray(MiB)
    head[:440] = code
    for i, (ptype, start, count, active) in enumerate(parts):
        e = 446 + 16 * i
        head[e] = 0x80 if active else 0
        head[e + 4] = ptype
        struct.pack_into("<II", head, e + 8, start, count)
    head[510:512] = b"\x55\xaa"
    return head


def gpt(parts: list[tuple[str, int, int, int]], code: bytes = b"", pmbr_active=False,
        disk_sectors: int = 131072) -> bytes:
    """A first MiB with a protective MBR and a GPT (valid CRCs): (type GUID, first LBA,
    last LBA, attributes) per entry."""
    head = mbr([(0xEE, 1, disk_sectors - 1, pmbr_active)], code=code.ljust(440, b"\0"))
    entries = bytearray(128 * 128)
    for i, (ptype, first, last, attrs) in enumerate(parts):
        e = bytearray(128)
        e[:16] = uuid.UUID(ptype).bytes_le
        e[16:32] = uuid.uuid4().bytes_le
        struct.pack_into("<QQQ", e, 32, first, last, attrs)
        entries[128 * i:128 * (i + 1)] = e
    hdr = bytearray(92)
    hdr[0:8] = b"EFI PART"
    struct.pack_into("<IIIIQQQQ", hdr, 8, 0x10000, 92, 0, 0, 1, disk_sectors - 1, 34,
                     disk_sectors - 34)
    struct.pack_into("<QIII", hdr, 72, 2, 128, 128, zlib.crc32(bytes(entries)))
    struct.pack_into("<I", hdr, 16, zlib.crc32(bytes(hdr)))
    head[512:604] = hdr
    head[1024:1024 + len(entries)] = entries
    return bytes(head)


def sysfs(tmp_path: Path, uefi: bool) -> str:
    root = tmp_path / ("sys-uefi" if uefi else "sys-bios")
    (root / "firmware" / ("efi" if uefi else "acpi")).mkdir(parents=True, exist_ok=True)
    return str(root)


def with_loaders(lay: layout.Layout, loaders: dict[int, list[str]]) -> layout.Layout:
    """``lay`` as read_contents leaves it, the ESPs' files being ``loaders``."""
    layout.read_contents(lay, lambda _o, n: bytes(n),
                         lambda p: loaders.get(p["number"], []))
    return lay


def test_the_partitions_of_a_first_mib():
    lay = layout.from_head(gpt([(ESP, 2048, 4095, 0), ("21686148-6449-6e6f-744e-656564454649",
                                                       4096, 6143, 0), (LINUX, 6144, 8191, 4)],
                               code=CODE, pmbr_active=True))
    assert lay.table == "gpt" and lay.boot_code and lay.pmbr_active and not lay.hybrid
    assert [(p["number"], p["start"], p["size"], p["role"], p["active"])
            for p in lay.partitions] == [(1, 2048 * 512, MiB, "esp", False),
                                         (2, 4096 * 512, MiB, "bios boot", False),
                                         (3, 6144 * 512, MiB, None, True)]
    dos = layout.from_head(bytes(mbr([(0x07, 2048, 4096, True), (0xEF, 8192, 2048, False)])))
    assert [(p["type"], p["active"], p["role"]) for p in dos.partitions] == \
        [("0x07", True, None), ("0xef", False, "esp")]
    assert layout.from_head(b"") is None


def test_an_mbr_image_on_a_uefi_machine_is_said_plainly(tmp_path):
    lay = with_loaders(layout.from_head(bytes(mbr([(0x07, 2048, 409600, True)]))), {})
    problems, warnings = bootmode.check(lay, "any", sysfs(tmp_path, uefi=True))
    assert problems == []
    assert len(warnings) == 1 and warnings[0].startswith(
        "this image boots only in legacy BIOS mode (boot code in its MBR, partition 1 active; "
        "no EFI system partition), and this machine runs in UEFI mode (/sys/firmware/efi "
        "exists): enable CSM (legacy boot) in the firmware setup"), warnings
    assert bootmode.check(lay, "any", sysfs(tmp_path, uefi=False)) == ([], [])
    problems, _ = bootmode.check(lay, "uefi", sysfs(tmp_path, uefi=False))
    assert problems == ["the plan requires UEFI mode (boot_mode: uefi), but this image boots "
                        "only in legacy BIOS mode (boot code in its MBR, partition 1 active; no "
                        "EFI system partition); nothing was written (restore an image made "
                        "for UEFI, or plan boot_mode: bios and enable CSM)"]
    assert bootmode.check(lay, "bios", sysfs(tmp_path, uefi=True)) == ([], [])


def test_a_gpt_image_without_an_esp_on_a_uefi_machine(tmp_path):
    uefi = sysfs(tmp_path, uefi=True)
    bios_only = with_loaders(layout.from_head(gpt(
        [("21686148-6449-6e6f-744e-656564454649", 2048, 4095, 0), (LINUX, 4096, 8191, 0)],
        code=CODE)), {})
    _, warnings = bootmode.check(bios_only, "any", uefi)
    assert warnings and warnings[0].startswith(
        "this image boots only in legacy BIOS mode (a BIOS boot partition (partition 1) and "
        "boot code in its protective MBR; no EFI system partition)"), warnings
    neither = with_loaders(layout.from_head(gpt([(LINUX, 2048, 8191, 0)])), {})
    _, warnings = bootmode.check(neither, "any", uefi)
    assert warnings and warnings[0].startswith(
        "this image does not boot in UEFI mode (no EFI system partition) nor in legacy BIOS "
        "mode (no boot code in its protective MBR)"), warnings
    problems, _ = bootmode.check(neither, "uefi", uefi)
    assert problems and "nothing was written" in problems[0]


def test_a_uefi_image_on_a_bios_machine_and_the_esp_s_loaders(tmp_path):
    bios = sysfs(tmp_path, uefi=False)
    head = gpt([(ESP, 2048, 4095, 0), (MSDATA, 4096, 8191, 0)], code=CODE)  # Windows: no EF02
    lay = with_loaders(layout.from_head(head), {1: ["\\EFI\\Microsoft\\Boot\\bootmgfw.efi"]})
    _, warnings = bootmode.check(lay, "any", bios)
    assert warnings and warnings[0].startswith(
        "this image boots only in UEFI mode (an EFI system partition with a boot loader "
        "(partition 1); no BIOS boot partition), and this machine runs in legacy BIOS mode "
        "(no /sys/firmware/efi): switch the firmware setup to UEFI boot"), warnings
    problems, _ = bootmode.check(lay, "bios", sysfs(tmp_path, uefi=True))
    assert problems and problems[0].startswith("the plan requires legacy BIOS mode "
                                               "(boot_mode: bios), but this image boots only "
                                               "in UEFI mode")
    assert bootmode.check(lay, "uefi", sysfs(tmp_path, uefi=True)) == ([], [])
    empty = with_loaders(layout.from_head(head), {1: []})  # an ESP that holds no loader
    _, warnings = bootmode.check(empty, "any", sysfs(tmp_path, uefi=True))
    assert warnings and "its EFI system partition (partition 1) holds no boot loader" in \
        warnings[0]
    unread = layout.from_head(head)  # a compressed image: only its first MiB is known
    assert bootmode.check(unread, "uefi", sysfs(tmp_path, uefi=True)) == ([], [])
    _, warnings = bootmode.check(unread, "uefi", bios)
    assert warnings == ["the plan requires UEFI mode, but this system was started in legacy "
                        "BIOS mode: no UEFI boot entry can be made from here (the firmware "
                        "boots \\EFI\\BOOT\\BOOTX64.EFI from the disk if the image has it)"]


def test_a_hybrid_image_boots_either_way_and_no_table_is_not_judged(tmp_path):
    both = with_loaders(layout.from_head(gpt(
        [(ESP, 2048, 4095, 0), ("21686148-6449-6e6f-744e-656564454649", 4096, 6143, 0),
         (LINUX, 6144, 8191, 0)], code=CODE)), {1: ["\\EFI\\BOOT\\BOOTX64.EFI"]})
    for uefi in (True, False):
        for mode in bootmode.MODES:
            assert bootmode.check(both, mode, sysfs(tmp_path, uefi=uefi))[0] == []
    flat = layout.from_head(bytes(MiB))  # a filesystem image, no table
    assert bootmode.check(flat, "any", sysfs(tmp_path, uefi=True)) == ([], [])
    problems, _ = bootmode.check(flat, "bios", sysfs(tmp_path, uefi=False))
    assert problems and "the image has no partition table" in problems[0]
    assert bootmode.check(flat, "efi", "/")[0] == ["boot mode 'efi': expected one of any, "
                                                   "uefi, bios"]
    assert bootmode.firmware_mode(sysfs(tmp_path, uefi=True)) == "uefi"
    assert bootmode.firmware_mode(sysfs(tmp_path, uefi=False)) == "bios"


def test_a_fat_partition_of_an_mbr_disk_may_boot_uefi(tmp_path):
    """UEFI boots \\EFI\\BOOT\\BOOTX64.EFI from a FAT partition of an MBR disk (type 0x0c
    here, no ESP type): unknown until its files are read, a UEFI image once they are."""
    head = bytes(mbr([(0x0C, 2048, 204800, False), (0x83, 206848, 409600, True)], code=bytes(440)))
    unread = layout.from_head(head)
    assert bootmode.check(unread, "any", sysfs(tmp_path, uefi=True)) == ([], [])
    _, warnings = bootmode.check(unread, "any", sysfs(tmp_path, uefi=False))
    assert warnings and warnings[0].startswith(
        "this image does not boot in legacy BIOS mode (no boot code in its MBR; no EFI system "
        "partition; FAT partition 1 may hold UEFI loaders (seen after the restore))"), warnings
    read = with_loaders(layout.from_head(head), {1: ["\\EFI\\BOOT\\BOOTX64.EFI"]})
    assert bootmode.check(read, "uefi", sysfs(tmp_path, uefi=True)) == ([], [])
    _, warnings = bootmode.check(read, "any", sysfs(tmp_path, uefi=False))
    assert warnings and warnings[0].startswith(
        "this image boots only in UEFI mode (a FAT partition with a boot loader (partition 1); "
        "no boot code in its MBR)"), warnings


def bitlocker_header(togo: bool = False) -> bytes:
    """A volume's first sector as BitLocker writes it (libblkid's layout): Vista/7 put
    -FVE-FS- at byte 3; To Go keeps a FAT's MSWIN4.1 there and its GUID at byte 424."""
    b = bytearray(4096)
    if togo:
        b[:11] = b"\xeb\x58\x90MSWIN4.1"
        b[424:440] = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le
    else:
        b[:11] = b"\xeb\x58\x90-FVE-FS-"
        b[160:176] = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le
    return bytes(b)


def test_encrypted_volumes_by_their_signatures():
    assert layout.encryption(bitlocker_header()) == "BitLocker"
    assert layout.encryption(bitlocker_header(togo=True)) == "BitLocker"
    fat = bytearray(4096)
    fat[:11] = b"\xeb\x58\x90MSWIN4.1"  # a FAT formatted by Windows 9x: not BitLocker
    assert layout.encryption(bytes(fat)) is None
    assert layout.encryption(b"LUKS\xba\xbe\x00\x02" + bytes(4088)) == "LUKS"
    assert layout.encryption(bytes(4096)) is None
    head = gpt([(LINUX, 2048, 4095, 0), (MSDATA, 4096, 8191, 0)])
    lay = layout.from_head(head)
    disk = {2048 * 512: b"LUKS\xba\xbe" + bytes(4090), 4096 * 512: bitlocker_header()}
    layout.read_contents(lay, lambda off, n: disk[off][:n], lambda p: None)
    assert layout.notes(lay, grow=False) == [
        "partition 1: LUKS: restored as is, not resized",
        "partition 2: BitLocker: restored as is, not resized"]
    assert "the grow step leaves it" in layout.notes(lay, grow=True)[1]


def sample(name: str, limit: int = 8 * MiB) -> bytes:
    """The sample's first ``limit`` bytes (its headers, metadata and tables; the rest is
    the disk's data)."""
    return bz2.BZ2Decompressor().decompress((SAMPLES / f"{name}.bz2").read_bytes(), limit)


@pytest.mark.parametrize("name, size", [
    ("virtualpc-dynamic.vhd", 136363130880),  # qemu-img info: the CHS geometry's size
    ("hyperv2012r2-dynamic.vhd", 136365211648),  # the footer's current size
    ("d2v-zerofilled.vhd", 263454720),  # Disk2vhd: the largest CHS: the current size
])
def test_vhd_sizes_as_qemu_img_and_virtual_pc_read_them(name, size):
    """A Virtual PC VHD is as large as its CHS geometry (2 MiB less than its footer's
    current size here): the size a plan checks against the target before downloading
    (the old code said 136365211648 for Virtual PC's, too large for a 127 GiB disk that
    fits)."""
    head = sample(name, MiB)  # a dynamic VHD starts with a copy of its footer
    assert head.startswith(b"conectix")
    assert detect.virtual_size_hint(detect.VPC, head) == size


def test_vhdx_headers_and_metadata_of_the_hyper_v_samples(tmp_path):
    assert vhdx.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    for name, size, dirty in (("iotest-dirtylog-10G-4M.vhdx", 10 << 30, True),
                              ("iotest-dynamic-1G.vhdx", 1 << 30, False),
                              ("test-disk2vhd.vhdx", 256 * MiB, False)):
        path = tmp_path / name
        path.write_bytes(sample(name))
        h = vhdx.header(str(path))
        assert (h["log_guid"] != str(uuid.UUID(int=0))) == dirty
        assert vhdx.disk_size(str(path)) == (size, 512)
    fuzzed = tmp_path / "afl5.img"
    fuzzed.write_bytes(sample("afl5.img"))
    assert vhdx.disk_size(str(fuzzed)) == (None, None)  # no valid region table: no size


def test_plan_file_boot_mode_and_vhdx_log():
    assert uplan.from_file({"mode": "restore", "boot_mode": "uefi", "vhdx_log": "in-place"}) \
        == {"mode": "restore", "boot_mode": "uefi", "vhdx_log": "in-place"}
    assert uplan.Plan().boot_mode == "any" and uplan.Plan().vhdx_log == "copy"
    with pytest.raises(uplan.PlanError, match="plan.boot_mode: expected one of any, uefi, bios"):
        uplan.from_file({"boot_mode": "efi"})
    with pytest.raises(uplan.PlanError, match="plan.vhdx_log: expected one of copy, in-place"):
        uplan.from_file({"vhdx_log": "yes"})


def test_the_bios_boot_line_of_an_image_without_a_partition_table():
    """In BIOS mode an image with no partition table is not said to use "its own boot
    code" unless its first sector has some (review helper-60: a zero first MiB, a data
    disk, was); with a first sector of code, that sector is what the firmware starts."""
    from toolkit.restore import boot
    blank = boot.plan_boot("/dev/sdz", {"partitions": []}, mode="bios",
                           layout=layout.from_head(bytes(MiB)))
    assert blank.message == "BIOS, but the image has no partition table and no boot code " \
        "in its first sector: it will not boot on this machine in BIOS mode"
    code = boot.plan_boot("/dev/sdz", {"partitions": []}, mode="bios",
                          layout=layout.from_head(b"\xeb\x3c\x90MSWIN4.1" + bytes(MiB - 11)))
    assert code.message.startswith("BIOS boot: the image has no partition table; its first "
                                   "sector (restored as it was)"), code.message
    unknown = boot.plan_boot("/dev/sdz", {"partitions": []}, mode="bios", layout=None)
    assert unknown.message.startswith("BIOS boot: the image's own boot code")


def test_the_entries_an_earlier_restore_left_are_found_by_partition_and_loader():
    """efibootmgr -v after two `efibootmgr --create` of the same loader on the same ESP
    (captured in a guest, efibootmgr 18): both entries are found by the partition's GUID
    and the loader's path, case-insensitively; nothing else (the firmware's own entries,
    another partition, another loader) is."""
    from toolkit.restore import boot
    listing = (FIXTURES / "efibootmgr" / "two-same-entries-v.txt").read_text()
    guid = "efef219b-cf42-473b-8f62-c76d45ccce84"
    assert boot.same_entries(listing, guid, boot.WINDOWS) == ["000A", "000B"]
    assert boot.same_entries(listing, guid.upper(), boot.WINDOWS.upper()) == ["000A", "000B"]
    assert boot.same_entries(listing, guid, "\\EFI\\debian\\shimx64.efi") == []
    assert boot.same_entries(listing, "00000000-cf42-473b-8f62-c76d45ccce84",
                             boot.WINDOWS) == []
    assert boot.same_entries(listing, None, boot.WINDOWS) == []


def test_the_new_entry_replaces_the_ones_for_the_same_loader(tmp_path, monkeypatch):
    """apply_boot deletes the earlier entries before it creates its own. efibootmgr is
    replaced by a script replaying the guest's captured listing (the host has no UEFI
    variables) and writing down its other calls; the VM lab runs the real one."""
    from toolkit.restore import boot
    calls = tmp_path / "calls"
    (tmp_path / "efibootmgr").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -v ]; then cat {FIXTURES / "efibootmgr" / "two-same-entries-v.txt"}; '
        f"else printf '%s\\n' \"$*\" >> {calls}; fi\n")
    (tmp_path / "efibootmgr").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    plan = boot.plan_boot("/dev/vda", {"partitions": [
        {"number": 1, "uuid": "EFEF219B-CF42-473B-8F62-C76D45CCCE84",
         "efi_loaders": [boot.WINDOWS, boot.FALLBACK]}]}, mode="uefi")
    done = boot.apply_boot(plan)
    assert done.done and done.replaced == ["000A", "000B"]
    assert calls.read_text().splitlines() == [
        "--bootnum 000A --delete-bootnum", "--bootnum 000B --delete-bootnum",
        "--create --disk /dev/vda --part 1 --label Windows Boot Manager --loader "
        "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"]
    assert done.message.endswith("created, replacing Boot000A, Boot000B (the same loader on "
                                 "a partition of the same GUID: an earlier restore of this "
                                 "image, which the firmware cannot tell from this one)")
