"""Boot mode on real images and loop devices (issue 18 item 4).

Images made here by sfdisk and sgdisk with real boot code (GRUB's, from the MBR of a
Linux install in QEMU's samples), an EF02 BIOS boot partition, an ESP made by mkfs.vfat
(loaders copied in with mcopy, or none), raw and as qcow2: before anything is written
the plan says when the image does not boot in the machine's mode (a sysfs root of the
test's own, with or without firmware/efi), a required mode refuses (also in unattended
mode, the plan file's boot_mode, and for a compressed container once it is unpacked),
the target untouched. A GPT disk for BIOS boot keeps its protective MBR (boot code and
boot flag: sfdisk and growpart clear the flag; the old code left it cleared) and its BIOS
boot partition when restored onto a larger disk and grown. Needs root; ~30 s.
"""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import restore_images as ri
from conftest import FIXTURES, MiB, own_disks
from loopdev import marked_image

from toolkit import restore
from toolkit.unattended import Console, RunReporter, run
from toolkit.unattended.cmdline import Cmdline
from toolkit.unattended.plan import read_plan

pytestmark = pytest.mark.host

MARKER = b"RTK-BOOTMODE-MARKER-" * 64
GRUB = bz2.decompress((FIXTURES / "qemu-samples" / "grub_mbr.raw.bz2").read_bytes())[:440]
CORE = bytes(range(256)) * 4096  # 1 MiB standing for GRUB's core.img in the EF02 partition


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture
def sysroot(tmp_path):
    """``sysroot(uefi)``: a sysfs root with (UEFI) or without (BIOS) firmware/efi."""
    def make(uefi: bool) -> str:
        root = tmp_path / ("sys-uefi" if uefi else "sys-bios")
        (root / "firmware" / ("efi" if uefi else "acpi")).mkdir(parents=True, exist_ok=True)
        return str(root)
    return make


@pytest.fixture
def target(tmp_path, loops):
    made = []

    def make(size: int = 128 * MiB) -> str:
        made.append(marked_image(tmp_path / f"t{len(made)}.img", size, MARKER))
        return loops(made[-1])
    return make


def untouched(dev: str) -> bool:
    with open(dev, "rb") as f:
        return f.read(len(MARKER)) == MARKER


def set_mbr(path: Path, code: bytes = GRUB, active: bool | None = None) -> None:
    """Boot code into the first 440 bytes; ``active``: the first entry's boot flag."""
    with open(path, "r+b") as f:
        f.write(code)
        if active is not None:
            f.seek(446)
            f.write(b"\x80" if active else b"\x00")


def mbr_image(path: Path, size: int = 64 * MiB) -> Path:
    """MBR: partition 1 (ext4, active) with GRUB's boot code: a BIOS-only system."""
    with open(path, "wb") as f:
        f.truncate(size)
    ri.run("sfdisk", "-q", str(path), input="label: dos\n2048,,83,*\n")
    ri.run("mkfs.ext4", "-q", "-F", "-E", f"offset={MiB}", str(path), f"{(size - MiB) // 1024}k")
    set_mbr(path)
    return path


def gpt_bios_image(path: Path, size: int = 64 * MiB) -> Path:
    """GPT for BIOS boot: p1 EF02 (1 MiB, CORE), p2 ext4; GRUB's code in the protective
    MBR, its boot flag set (some BIOSes boot a GPT disk only with it)."""
    with open(path, "wb") as f:
        f.truncate(size)
    ri.run("sgdisk", "-n", "1:2048:+1M", "-t", "1:ef02", "-n", "2:0:0", "-t", "2:8300",
           str(path))
    with open(path, "r+b") as f:
        f.seek(MiB)
        f.write(CORE)
    ri.run("mkfs.ext4", "-q", "-F", "-E", f"offset={2 * MiB}", str(path),
           f"{(size - 2 * MiB - MiB) // 1024}k")
    set_mbr(path, active=True)
    return path


def gpt_esp_image(path: Path, loaders: list[str], size: int = 64 * MiB) -> Path:
    """GPT: p1 ESP (FAT32, 40 MiB) holding ``loaders``, p2 Windows data; no BIOS boot."""
    with open(path, "wb") as f:
        f.truncate(size)
    ri.run("sgdisk", "-n", "1:2048:+40M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:0700",
           str(path))
    ri.run("mkfs.vfat", "-F", "32", "--offset", "2048", str(path), str(40 * 1024))
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    fat = f"{path}@@{MiB}"
    for loader in loaders:
        parts = loader.strip("\\").split("\\")
        for i in range(1, len(parts)):
            subprocess.run(["mmd", "-D", "s", "-i", fat, "::/" + "/".join(parts[:i])], env=env,
                           capture_output=True)
        local = path.parent / "loader.efi"
        local.write_bytes(b"MZ" + bytes(4094))
        subprocess.run(["mcopy", "-o", "-i", fat, str(local), "::/" + "/".join(parts)], env=env,
                       check=True)
    set_mbr(path, code=GRUB)  # Windows writes boot code into the protective MBR too
    return path


def plan(image: Path, dev: str, **opts) -> restore.RestorePlan:
    return restore.plan_restore(str(image), dev, restore.RestoreOptions(boot=False, **opts),
                                source_role=())


def boot_warnings(p: restore.RestorePlan) -> list[str]:
    return [w for w in p.warnings if "boots only" in w or "does not boot" in w
            or "holds no boot loader" in w]


def test_an_mbr_image_on_a_uefi_machine_is_said_before_writing(tmp_path, target, sysroot):
    image = mbr_image(tmp_path / "mbr.img")
    qcow = ri.convert(image, "qcow2", tmp_path / "mbr.qcow2")
    dev = target()
    for img in (image, qcow):  # raw, and a container read through qemu-img
        p = plan(img, dev, sys_root=sysroot(True))
        assert boot_warnings(p) == [
            "this image boots only in legacy BIOS mode (boot code in its MBR, partition 1 "
            "active; no EFI system partition), and this machine runs in UEFI mode "
            "(/sys/firmware/efi exists): enable CSM (legacy boot) in the firmware setup, or "
            "the restored disk will not boot"], p.warnings
        assert boot_warnings(plan(img, dev, sys_root=sysroot(False))) == []
        with pytest.raises(restore.Refused) as e:
            plan(img, dev, sys_root=sysroot(False), boot_mode="uefi")
        assert e.value.problems[-1].startswith(
            "the plan requires UEFI mode (boot_mode: uefi), but this image boots only in "
            "legacy BIOS mode"), e.value.problems
    assert untouched(dev)
    res = restore.restore(plan(image, dev, sys_root=sysroot(True)))
    assert res.status == "ok", res.message
    assert any("boots only in legacy BIOS mode" in w for w in res.warnings)  # the report's


def test_a_gpt_image_without_an_esp_on_a_uefi_machine(tmp_path, target, sysroot):
    image = gpt_bios_image(tmp_path / "bios.img")
    p = plan(image, target(), sys_root=sysroot(True))
    assert boot_warnings(p) and boot_warnings(p)[0].startswith(
        "this image boots only in legacy BIOS mode (a BIOS boot partition (partition 1) and "
        "boot code in its protective MBR; no EFI system partition), and this machine runs in "
        "UEFI mode"), p.warnings


def test_the_esp_s_loaders_are_read_before_writing(tmp_path, target, sysroot):
    dev = target()
    win = gpt_esp_image(tmp_path / "win.img", ["\\EFI\\Microsoft\\Boot\\bootmgfw.efi",
                                               "\\EFI\\BOOT\\BOOTX64.EFI"])
    assert boot_warnings(plan(win, dev, sys_root=sysroot(True))) == []
    p = plan(win, dev, sys_root=sysroot(False))
    assert boot_warnings(p) and boot_warnings(p)[0].startswith(
        "this image boots only in UEFI mode (an EFI system partition with a boot loader "
        "(partition 1); no BIOS boot partition), and this machine runs in legacy BIOS mode"), \
        p.warnings
    res = restore.restore(plan(win, dev, sys_root=sysroot(True)))  # boot=False: no efibootmgr
    assert res.status == "ok", res.message
    assert res.boot.mode == "uefi" and res.boot.action == "create entry" and \
        res.boot.command[-2:] == ["--loader", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"], res.boot
    dev = target()
    empty = gpt_esp_image(tmp_path / "empty.img", [])
    for img in (empty, ri.convert(empty, "vmdk", tmp_path / "empty.vmdk")):
        p = plan(img, dev, sys_root=sysroot(True))
        assert boot_warnings(p) and "its EFI system partition (partition 1) holds no boot " \
            "loader" in boot_warnings(p)[0], p.warnings
    assert untouched(dev)


def test_a_compressed_container_is_checked_once_unpacked(tmp_path, target, sysroot):
    image = mbr_image(tmp_path / "mbr.img")
    packed = ri.compress(ri.convert(image, "qcow2", tmp_path / "mbr.qcow2"), "zstd",
                         tmp_path / "mbr.qcow2.zst")
    dev = target()
    p = plan(packed, dev, sys_root=sysroot(True), boot_mode="uefi", tmpdir=str(tmp_path))
    res = restore.restore(p)  # only its first MiB after unpacking tells the boot mode
    assert res.status == "refused" and "the plan requires UEFI mode (boot_mode: uefi), but " \
        "this image boots only in legacy BIOS mode" in res.message, res.message
    assert untouched(dev) and not res.wiped


def test_a_gpt_disk_for_bios_keeps_its_protective_mbr_and_bios_boot_partition(tmp_path,
                                                                               target):
    image = gpt_bios_image(tmp_path / "bios.img")
    before = image.read_bytes()[:512]
    dev = target(160 * MiB)
    res = restore.restore(plan(image, dev, grow=True))
    assert res.status == "ok", res.message
    with open(dev, "rb") as f:
        mbr, core = f.read(512), os.pread(f.fileno(), MiB, MiB)
    assert mbr[:440] == before[:440] == GRUB  # GRUB's boot code
    assert mbr[446] == 0x80 and mbr[450] == 0xEE and mbr[510:] == b"\x55\xaa"
    assert any("protective MBR's boot flag set again" in s for s in res.fit), res.fit
    assert core == CORE  # the BIOS boot partition's contents
    info = ri.run("sgdisk", "-i", "1", dev)
    assert "21686148-6449-6E6F-744E-656564454649" in info and "First sector: 2048 " in info \
        and "Last sector: 4095 " in info, info
    v = ri.run("sgdisk", "-v", dev)
    assert "No problems found" in v, v
    p2 = next(p for p in res.contents["partitions"] if p["number"] == 2)
    assert p2["start"] + p2["size"] > 150 * MiB  # the last partition grew


def test_an_mbr_disk_keeps_its_boot_code_and_active_partition_when_grown(tmp_path, target):
    image = mbr_image(tmp_path / "mbr.img")
    dev = target(128 * MiB)
    res = restore.restore(plan(image, dev, grow=True))
    assert res.status == "ok", res.message
    with open(dev, "rb") as f:
        mbr = f.read(512)
    assert mbr[:440] == GRUB and mbr[446] == 0x80, res.fit
    assert any("grown" in s for s in res.fit), res.fit


def test_a_hybrid_mbr_is_kept_and_said_when_growing_replaces_it(tmp_path, target):
    image = gpt_bios_image(tmp_path / "hybrid.img")
    ri.run("sgdisk", "-h", "2", str(image))  # partition 2 in the MBR too
    table = image.read_bytes()[446:512]
    dev = target(160 * MiB)
    res = restore.restore(plan(image, dev))  # the backup GPT moved: sfdisk keeps a hybrid
    assert res.status == "ok", res.message
    with open(dev, "rb") as f:
        assert os.pread(f.fileno(), 66, 446) == table, res.fit
    res = restore.restore(plan(image, dev, grow=True))  # growpart replaces it
    assert res.status == "ok", res.message
    assert any(s.startswith("the image's hybrid MBR (MBR entries 2 besides the protective "
                            "one) was replaced by a protective MBR") for s in res.fit), res.fit


def test_an_unattended_plan_requiring_uefi_refuses_an_mbr_image(tmp_path, loops):
    mbr_image(tmp_path / "node.img")
    srv = ri.RangeServer(tmp_path)
    size = 96 * MiB + 4321 * 512
    dev = loops(marked_image(tmp_path / "disk.img", size, MARKER))
    try:
        text = (f"rtk.mode=restore rtk.image={srv.url('node.img')} rtk.disk=rule:transport="
                f"loop,size={size} rtk.consent=serial:RTK-LOOP-1 rtk.done=menu")
        planned = dataclasses.replace(read_plan(Cmdline(text)), boot_mode="uefi")
        before = hashlib.sha256(Path(tmp_path / "disk.img").read_bytes()).hexdigest()
        out = run(planned, console=Console(streams=[io.StringIO()]), power=lambda a: None,
                  list_disks=own_disks(dev, serials={dev: "RTK-LOOP-1"}),
                  reporter=RunReporter(None))
        assert out.status == "refused" and out.phase == "check" and not out.written
        assert "the plan requires UEFI mode (boot_mode: uefi), but this image boots only in " \
            "legacy BIOS mode" in out.message, out.message
        assert hashlib.sha256(Path(tmp_path / "disk.img").read_bytes()).hexdigest() == before
    finally:
        srv.stop()


def test_a_multicast_plan_leaves_the_boot_mode_to_the_stream_s_first_mib(target, sysroot):
    """A udpcast:// stream is read once: its first MiB (and so its boot mode) is known only
    when it arrives, where the restore checks it before writing; the plan does not refuse
    it for want of a partition table."""
    from toolkit.restore import multicast

    nics = multicast.interfaces()  # a NIC of this machine: a missing one is refused
    if not nics:
        pytest.skip("this machine has no NIC but loopback")
    url = f"udpcast://{nics[0]}@9000?sha256={'ab' * 32}"
    p = plan(url, target(), sys_root=sysroot(True), boot_mode="bios")
    assert not any("boot_mode" in w or "partition table" in w for w in p.warnings), p.warnings


def test_an_image_without_bios_boot_code_restored_in_bios_mode_is_said_not_to_boot(
        tmp_path, target, sysroot):
    """A UEFI-only GPT image (an ESP, no boot code in its protective MBR) restored on a
    machine in BIOS mode: the boot line after the restore says it will not boot here, as
    the plan did, never "the image's own boot code ... is used" (review helper-59)."""
    image = gpt_esp_image(tmp_path / "uefi.img", ["\\EFI\\BOOT\\BOOTX64.EFI"])
    set_mbr(image, code=bytes(440))  # no boot code at all
    dev = target()
    p = plan(image, dev, sys_root=sysroot(False))
    assert any("no boot code in its protective MBR" in w for w in p.warnings), p.warnings
    res = restore.restore(p)
    assert res.status == "ok", res.message
    assert res.boot.mode == "bios" and res.boot.action == "none"
    assert res.boot.message == "BIOS, but the image does not boot in legacy BIOS mode (no " \
        "boot code in its protective MBR): it will not boot on this machine in BIOS mode"
    image = gpt_bios_image(tmp_path / "bios.img")  # one that does: its own code is used
    res = restore.restore(plan(image, target(), sys_root=sysroot(False)))
    assert res.boot.message.startswith("BIOS boot: the image's own boot code"), res.boot
