"""The ISO on a server-like machine, one boot: UEFI with Secure Boot enforced, and a disk
on each storage controller servers have.

The machine is a q35 with SMM, OVMF's Secure Boot firmware and the Microsoft keys
enrolled; the ISO boots as on real hardware, through Debian's signed shim and GRUB and
the ISO's own grub.cfg (no ``-kernel``: that would bypass Secure Boot), and the test
reaches a root shell through the menu's Shell entry on the serial console. In the guest:

- Secure Boot is on and the kernel is locked down (integrity), and the lockdown is
  enforced (/dev/mem is refused);
- what the toolkit does that a locked-down kernel could refuse works: BLKROSET (``rtk
  iscsi attach --role source`` makes the LUN read-only in the kernel), ``sg_persist``
  (the reservation check of ``--role target``), SG_IO (GET LBA STATUS of a thin LUN:
  ``rtk copy --skip-zeros`` reads only its mapped blocks), O_DIRECT (the copy's reads and
  writes, onto a virtio disk), efivarfs writes (``efibootmgr``: every restore below
  creates a boot entry);
- a disk on each controller (NVMe, AHCI, MegaRAID, LSI 53C895A, virtio-scsi, VMware
  PVSCSI, USB) is listed by ``rtk disks`` and the Disks screen with its transport, model
  and serial; ``rtk copy`` and ``rtk restore`` onto each succeed and are verified (in the
  guest with O_DIRECT reads, and on the host from the disks' image files);
- a Debian image (tests/linux_images.py) whose initramfs lacks the NVMe module, restored
  onto a second NVMe disk: ``rtk restore`` rebuilds its initramfs in a chroot with the
  image's own update-initramfs, and the new one, read on the host from the disk's image
  file, holds nvme;
- the same image with its root on LVM (a volume group on p2, the fstab naming
  /dev/mapper/rtkvg-root), restored onto a virtio-scsi disk while a copy of that image is
  attached from the boot on: LVM activated neither copy by itself (hook 0220), the
  restore activated the target's group alone, and the rebuilt initramfs holds virtio_scsi
  and LVM's tools; then, on loop devices in the guest, the volume groups the restore
  must not activate are refused and nothing is left active: one that needs a physical
  volume not on the disk, another group of the same name (another UUID) already active;
  and one held open when it is deactivated is named, with the command to run by hand.

The guest's probe is saved as ``guest-probe-controllers.json`` in the test's directory:
the fixture of tests/test_disks_controllers_unit.py is a copy of it. RTK_VM_DEV=1 pushes
this source tree into the guest's shell first (the menu keeps the ISO's code).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import subprocess

import linux_images
import pytest
from conftest import MiB
from vmlab.http import HttpServer
from vmlab.live import BOOT_LIMIT_S  # alone: about 2 min (114-125 s); 265 s beside 2 guests
from vmlab.qemu import Guest
from vmlab.tgt import Tgt

from toolkit.blockio import allocation
from toolkit.disks.inventory import disks_from_probe

pytestmark = pytest.mark.vm

PORT = 3264  # apart from the other VM tests' tgtd
SRC_IQN = "iqn.2026-12.lab.rtk:sb-snapshot"
DST_IQN = "iqn.2026-12.lab.rtk:sb-san"
SRC_SERIAL, DST_SERIAL = "RTKSBSRC01", "RTKSBDST02"
VD_SRC, VD_DST = "RTKVDSRC01", "RTKVDDST02"  # virtio disks: the copies' source, the SG_IO copy's
CONTROLLER_MiB = 32
SOURCE_MiB = 16
# kind (tests/vmlab/qemu.py CONTROLLERS), its disk's serial, and what the toolkit says:
# transport, model, the Disks screen's transport column
KINDS = [
    ("nvme", "RTKNVME01", "nvme", "QEMU NVMe Ctrl", "NVME"),
    ("ahci", "RTKAHCI02", "sata", "QEMU HARDDISK", "SATA"),
    ("megasas", "RTKMEGASAS03", "scsi", "QEMU HARDDISK", "SCSI"),
    ("lsi", "RTKLSI04", "scsi", "QEMU HARDDISK", "SCSI"),
    ("virtio-scsi", "RTKVSCSI05", "virtio", "QEMU HARDDISK", "virtio"),
    ("pvscsi", "RTKPVSCSI06", "scsi", "QEMU HARDDISK", "SCSI"),
    ("usb", "RTKUSB07", "usb", "QEMU HARDDISK", "USB"),
]
# the Linux image's disk: another NVMe controller, large enough for tests/linux_images.py
LINUX_SERIAL, LINUX_MiB = "RTKNVMELX08", 448
# the LVM image's disk, on virtio-scsi; and a copy of that image attached from the boot on,
# as a BDR snapshot of the same node would be: the same volume group, never activated
LVM_SERIAL, LVM_COPY_SERIAL = "RTKVSCSILV09", "RTKVDLVM03"
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
SETUP_MODE_VAR = "/sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def _blank(path, mib: int):
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
    return path


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _restore_image(work) -> tuple:
    """A 16 MiB GPT node image: an ESP (FAT) holding a distribution's shimx64.efi, so a
    restore under UEFI creates a boot entry, and a data partition of random bytes."""
    path, esp = work / "node.img", work / "esp.fat"
    _blank(path, 16)
    _run("sgdisk", "-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:EFI system",
         "-n", "2:0:0", "-t", "2:8300", "-c", "2:data", str(path))
    _blank(esp, 8)
    _run("mkfs.vfat", "-n", "ESP", str(esp))
    loader = work / "loader.efi"
    loader.write_bytes(random.Random(1).randbytes(50000))
    for d in ("::/EFI", "::/EFI/BOOT", "::/EFI/rtklab"):
        _run("mmd", "-i", str(esp), d)
    for name in ("::/EFI/BOOT/BOOTX64.EFI", "::/EFI/rtklab/shimx64.efi"):
        _run("mcopy", "-i", str(esp), str(loader), name)
    with open(path, "r+b") as f:
        f.seek(MiB)
        f.write(esp.read_bytes())
        f.seek(9 * MiB)
        f.write(random.Random(2).randbytes(6 * MiB))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _thin_source(path):
    """The thin snapshot LUN: 16 MiB, data in 3 MiB of it, the rest holes."""
    _blank(path, SOURCE_MiB)
    rnd = random.Random(3)
    with open(path, "r+b") as f:
        for at in (0, 5, 11):
            f.seek(at * MiB)
            f.write(rnd.randbytes(MiB))
    return path


def _linux_images(work):
    """The Debian images of tests/linux_images.py, made before the boot from one pruned
    root: ``linux.img.zst`` (root on p2) and ``lvm.img.zst`` (root on LVM), each with its
    SHA-256, and ``lvm-copy.img`` (attached to the guest); None without the ISO build's
    chroot (the tests that need them say why they skip)."""
    if linux_images.missing():
        return None
    root = work / "linux-root"
    version = linux_images.pruned_root(root)
    images = {"root": root, "version": version}
    for name, make in (("linux", linux_images.disk_image), ("lvm", linux_images.lvm_disk_image)):
        image = make(work / f"{name}.img", root)
        if name == "lvm":
            _run("cp", "--sparse=always", str(image), str(work / "lvm-copy.img"))
        _run("zstd", "-q", "-T0", "--rm", str(image))  # NAME.img.zst
        images[name] = hashlib.sha256((work / f"{name}.img.zst").read_bytes()).hexdigest()
    return images


@pytest.fixture(scope="module")
def lab(tmp_path_factory, need_root, iso):
    work = tmp_path_factory.mktemp("vmhardware")
    linux = _linux_images(work)
    lvm_copy = [(work / "lvm-copy.img", LVM_COPY_SERIAL)] if linux else []
    image, image_sha = _restore_image(work)
    vd_src = work / "vd-src.img"
    vd_src.write_bytes(random.Random(4).randbytes(SOURCE_MiB * MiB))
    tgt = Tgt(work, port=PORT)
    src_lun = _thin_source(work / "snap-lun1.img")
    tgt.add_target(SRC_IQN, [src_lun], serials=[SRC_SERIAL], thin=True)
    tgt.add_target(DST_IQN, [_blank(work / "san-lun1.img", SOURCE_MiB)], serials=[DST_SERIAL])
    http = HttpServer(work)
    http.httpd.handle_error = lambda *a: None  # the inspection reads the head, then hangs up
    controllers = [(kind, _blank(work / f"{kind}.img", CONTROLLER_MiB), serial)
                   for kind, serial, *_ in KINDS]
    guest = Guest(work, iso, secure_boot=True, name="hardware",
                  disks=[(vd_src, VD_SRC), (_blank(work / "vd-dst.img", SOURCE_MiB), VD_DST),
                         *lvm_copy],
                  controller_disks=[*controllers,
                                    ("nvme", _blank(work / "linux-nvme.img", LINUX_MiB),
                                     LINUX_SERIAL),
                                    ("virtio-scsi", _blank(work / "lvm-vscsi.img", LINUX_MiB),
                                     LVM_SERIAL)])
    lab = {"work": work, "guest": guest, "image": image, "image_sha": image_sha,
           "src_lun": src_lun, "vd_src": vd_src, "http": http, "linux": linux}
    try:
        guest.wait_menu(timeout=600)
        lab["boot_s"] = guest.elapsed()
        print(f"Secure Boot, {len(KINDS)} controllers: menu after {lab['boot_s']:.0f} s")
        _shell(guest)
        if os.environ.get("RTK_VM_DEV") == "1":
            guest.install_source_tree(http, work)
        yield lab
    finally:
        guest.stop()
        http.stop()
        tgt.stop()


def _shell(guest: Guest) -> None:
    """The menu's Shell entry; no pager (udevadm, efibootmgr would wait for a key)."""
    guest.open_shell()
    guest.run("export SYSTEMD_PAGER=cat PAGER=cat")


def _disks(lab) -> dict[str, dict]:
    """``rtk disks --json`` in the guest, by serial."""
    listed = json.loads(lab["guest"].run("rtk disks --json 2>/dev/null", timeout=180))
    return {d["serial"]: d for d in listed if d["serial"]}


def _by_path(g, iqn: str) -> str:
    return g.run(f"readlink -f /dev/disk/by-path/ip-10.0.2.2:{PORT}-iscsi-{iqn}-lun-1").strip()


def test_secure_boot_enforced_and_kernel_locked_down(lab):
    g = lab["guest"]
    assert lab["boot_s"] < BOOT_LIMIT_S, f"menu took {lab['boot_s']:.0f} s"
    # booted by the ISO's GRUB with its own command line, not by QEMU's -kernel
    assert "-kernel" not in g.cmd
    assert g.run("cat /proc/cmdline").startswith("BOOT_IMAGE=/live/vmlinuz ")
    # efivarfs: 4 bytes of attributes, then the value
    assert g.run(f"od -An -tx1 {SECURE_BOOT_VAR}").split()[-1] == "01"
    assert g.run(f"od -An -tx1 {SETUP_MODE_VAR}").split()[-1] == "00"  # keys enrolled
    assert g.run("cat /sys/kernel/security/lockdown").strip() == \
        "none [integrity] confidentiality"
    kmsg = g.run("dmesg | grep -i -E 'secure ?boot|locked down'")
    assert "Secure boot enabled" in kmsg and "locked down from EFI Secure Boot" in kmsg, kmsg
    # the lockdown is enforced: raw memory is refused even to root
    out = g.run("head -c 16 /dev/mem >/dev/null; echo rc=$?")
    assert "Operation not permitted" in out and "rc=1" in out, out


def test_toolkit_operations_under_lockdown(lab):
    """BLKROSET, sg_persist, SG_IO, O_DIRECT and efivarfs, each through the toolkit."""
    g = lab["guest"]
    # BLKROSET: the SOURCE LUN is read-only in the kernel, a write is refused
    out = g.run(f"rtk iscsi attach 10.0.2.2:{PORT} {SRC_IQN} --role source", timeout=240)
    assert "as SOURCE" in out, out
    src = _by_path(g, SRC_IQN)
    assert g.run(f"blockdev --getro {src}").strip() == "1"
    out = g.run(f"dd if=/dev/zero of={src} bs=4096 count=1 oflag=direct 2>&1; echo rc=$?")
    assert "Operation not permitted" in out and "rc=1" in out, out
    # sg_persist: a cluster node's registration on the TARGET is found and warned about
    g.run(f"rtk iscsi attach 10.0.2.2:{PORT} {DST_IQN} --role target", timeout=240)
    dst = _by_path(g, DST_IQN)
    g.run(f"sg_persist --out --register --param-sark=0x5eb007 {dst} >/dev/null")
    again = json.loads(g.run(f"rtk iscsi attach 10.0.2.2:{PORT} {DST_IQN} --role target "
                             "--json 2>/dev/null", timeout=240))
    assert any("0x5eb007" in w and "cluster node" in w for w in again["warnings"]), again
    # SG_IO (GET LBA STATUS) and O_DIRECT: the thin LUN copied onto a virtio disk, its
    # deallocated blocks not read
    vdst = _disks(lab)[VD_DST]["path"]
    out = g.run(f"rtk copy --skip-zeros --chunk-size 1M --yes --target-id {VD_DST} "
                f"{src} {vdst}; echo rc=$?", timeout=600)
    assert "rc=0" in out and "verified" in out, out
    report = re.search(r"report: (\S+)\.txt", out).group(1) + ".json"
    copy = json.loads(g.run(f"cat {report}"))["copy"]
    assert copy["source_map"] == allocation.SCSI_MAP, copy["source_map"]
    assert copy["unread_hole_bytes"] == (SOURCE_MiB - 3) * MiB, copy["unread_hole_bytes"]
    got = g.run(f"dd if={vdst} iflag=direct bs=1M status=none | sha256sum").split()[0]
    assert got == hashlib.sha256(lab["src_lun"].read_bytes()).hexdigest()
    # efivarfs: efibootmgr reads the boot entries (the restores below write some)
    entries = g.run("efibootmgr")
    assert re.search(r"BootCurrent: [0-9A-F]{4}", entries), entries
    assert "UEFI QEMU DVD-ROM" in entries, entries


def test_each_controller_disk_identity(lab):
    g = lab["guest"]
    probe = json.loads(g.run("rtk disks --dump-probe 2>/dev/null", timeout=180))
    (lab["work"] / "guest-probe-controllers.json").write_text(
        json.dumps(probe, indent=1, sort_keys=True) + "\n")
    listed = json.loads(g.run("rtk disks --json 2>/dev/null", timeout=180))
    # the probe replayed here is the guest's own inventory (but for what is read live,
    # not probed: the iSCSI Manager's roles, the disks' cluster identities)
    live = ("role", "cluster")
    assert [{k: v for k, v in d.to_dict().items() if k not in live}
            for d in disks_from_probe(probe)] == \
        [{k: v for k, v in d.items() if k not in live} for d in listed]
    by_serial = {d["serial"]: d for d in listed if d["serial"]}
    for kind, serial, transport, model, _ in KINDS:
        d = by_serial.get(serial)
        assert d is not None, f"{kind}: no disk with serial {serial}: {sorted(by_serial)}"
        got = (d["transport"], d["model"], d["size"])
        assert got == (transport, model, CONTROLLER_MiB * MiB), f"{kind}: {got}"
        assert not (d["wwn"] or "").startswith("t10."), f"{kind}: WWN {d['wwn']!r}"
        assert d["by_id"], f"{kind}: no /dev/disk/by-id link"
        assert not d["in_use"], f"{kind}: {d['in_use']}"
    assert by_serial["RTKUSB07"]["removable"]
    assert by_serial["RTKAHCI02"]["by_id"] == ["/dev/disk/by-id/ata-QEMU_HARDDISK_RTKAHCI02"]


def test_disks_screen_shows_each_controller(lab):
    g, con = lab["guest"], lab["guest"].console
    by_serial = _disks(lab)
    g.close_shell()
    try:
        g.wait_menu(timeout=60)
        con.key("d")
        seen = con.wait_screen(r"F5 refresh", timeout=120)
        for _ in range(len(by_serial) + 4):  # down the list, one disk at a time
            con.key("down", pause=0.8)
            seen += "\n" + con.text()
        for kind, serial, _, model, column in KINDS:
            path = by_serial[serial]["path"]
            line = rf"{re.escape(path)}\s+33\.6 MB  {column}\s+{model}\s+{serial}"
            assert re.search(line, seen), f"{kind}: no line like {line!r} in\n{seen}"
        con.key("esc")
    finally:
        g.wait_menu(timeout=60)
        _shell(g)


def test_copy_and_restore_onto_each_controller(lab):
    g, url = lab["guest"], lab["http"].url("node.img", host="10.0.2.2")
    by_serial = _disks(lab)
    src = by_serial[VD_SRC]["path"]
    src_sha = hashlib.sha256(lab["vd_src"].read_bytes()).hexdigest()
    for n, (kind, serial, *_) in enumerate(KINDS):
        dev = by_serial[serial]["path"]
        out = g.run(f"rtk copy {src} {dev} --yes --target-id {serial} 2>/dev/null; "
                    "echo rc=$?", timeout=600)
        assert "rc=0" in out and "verified" in out, f"{kind}: {out}"
        got = g.run(f"dd if={dev} iflag=direct bs=1M count={SOURCE_MiB} status=none | "
                    "sha256sum").split()[0]
        assert got == src_sha, f"{kind}: the copy reads back differently"
        out = g.run(f"rtk restore {url} {dev} --sha256 {lab['image_sha']} --yes "
                    f"--target-id {serial} 2>/dev/null; echo rc=$?", timeout=600)
        assert "rc=0" in out and f"onto {dev}, verified" in out, f"{kind}: {out}"
        assert 'boot entry "rtklab"' in out and "created" in out, f"{kind}: {out}"
        # the same image on each disk: the same ESP partition GUID, which is all the
        # entry's path names; the firmware cannot tell the entries apart, one is kept
        assert n == 0 or "replacing Boot" in out, f"{kind}: {out}"
    entries = g.run("efibootmgr")
    assert len(re.findall(r"Boot[0-9A-F]{4}\* rtklab", entries)) == 1, entries
    g.run("sync")
    # the host reads each disk's image file: the image's boot code and partitions
    # (the GPT headers differ: the backup header moved to the larger disk's end)
    img = lab["image"].read_bytes()
    for kind, *_ in KINDS:
        disk = lab["work"] / f"{kind}.img"
        v = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
        assert "No problems found" in v.stdout, f"{kind}: {v.stdout}"
        with open(disk, "rb") as f:
            data = f.read(len(img))
        assert data[:440] == img[:440], kind
        assert data[MiB:len(img) - MiB] == img[MiB:len(img) - MiB], kind
        assert os.path.getsize(disk) == CONTROLLER_MiB * MiB


def _initramfs_on_disk(disk, root, version: str) -> str:
    """The initramfs on the /boot partition (p1) of the disk image file ``disk``, read on
    the host (a read-only loop device over p1) and listed by the image's lsinitramfs."""
    name = f"initrd.img-{version}"
    loop = subprocess.run(["losetup", "-r", "-f", "--show", "-o", str(MiB), "--sizelimit",
                           str(64 * MiB), str(disk)], capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        _run("debugfs", "-R", f"dump /{name} {root / 'tmp' / name}", loop)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    try:
        return linux_images.listing(root, f"/tmp/{name}")
    finally:
        (root / "tmp" / name).unlink()


def _linux(lab) -> dict:
    if not lab["linux"]:
        pytest.skip(linux_images.missing())
    return lab["linux"]


def test_linux_image_gets_an_initramfs_with_the_nvme_module(lab):
    linux = _linux(lab)
    g, work, root, version = lab["guest"], lab["work"], linux["root"], linux["version"]
    sha = linux["linux"]
    assert "/nvme.ko" not in linux_images.listing(root, f"/boot/initrd.img-{version}")
    dev = _disks(lab)[LINUX_SERIAL]["path"]
    url = lab["http"].url("linux.img.zst", host="10.0.2.2")
    out = g.run(f"rtk restore {url} {dev} --sha256 {sha} --yes --target-id {LINUX_SERIAL} "
                "2>/dev/null; echo rc=$?", timeout=2400)
    print("\n".join(ln for ln in out.splitlines() if ln.startswith(("linux", "system"))))
    assert "rc=0" in out and f"onto {dev}, verified" in out, out
    assert "system: Debian GNU/Linux" in out, out
    assert f"linux initramfs: partition 2: rebuilt: update-initramfs: {version}: " \
           f"/boot/initrd.img-{version}" in out, out
    assert "holds nvme" in out, out
    assert f"fstab line 5: UUID={linux_images.MISSING_UUID} (/srv/data) is on no " \
           f"partition of this disk ({dev})" in out, out
    assert "rtk-linux-" not in g.run("cat /proc/mounts")  # nothing left mounted
    g.run("sync")
    listing = _initramfs_on_disk(work / "linux-nvme.img", root, version)
    assert "/nvme.ko" in listing, "the rebuilt initramfs on the disk lacks nvme"


def _active(g) -> str:
    """The device-mapper devices of the guest (LVM's active logical volumes)."""
    return g.run("dmsetup ls 2>&1").strip()


def test_linux_root_on_lvm_gets_an_initramfs_with_the_virtio_scsi_module(lab):
    """The root on a logical volume, restored onto a virtio-scsi disk while a copy of the
    same volume group is attached: LVM activated nothing by itself at boot nor when the
    restore wrote the disk; the restore activated the target's volume group alone
    (``--devices``), rebuilt the initramfs, checked the fstab's /dev/mapper root, and left
    nothing active or mounted."""
    linux = _linux(lab)
    g, work, root, version = lab["guest"], lab["work"], linux["root"], linux["version"]
    disks = _disks(lab)
    copy, dev = disks[LVM_COPY_SERIAL]["path"], disks[LVM_SERIAL]["path"]
    vg, lv = linux_images.VG, linux_images.LV
    # the copy's volume group is seen, and was not activated at boot
    seen = g.run(f"lvs --devices {copy}2 --noheadings -o vg_name,lv_name,lv_active 2>&1")
    assert seen.split()[:2] == [vg, lv] and "active" not in seen.split()[2:], seen
    assert _active(g) == "No devices found", _active(g)
    assert "/virtio_scsi.ko" not in linux_images.listing(root, f"/boot/initrd.img-{version}")
    url = lab["http"].url("lvm.img.zst", host="10.0.2.2")
    out = g.run(f"rtk restore {url} {dev} --sha256 {linux['lvm']} --yes --target-id "
                f"{LVM_SERIAL} 2>/dev/null; echo rc=$?", timeout=2400)
    print("\n".join(ln for ln in out.splitlines() if ln.startswith(("linux", "system"))))
    assert "rc=0" in out and f"onto {dev}, verified" in out, out
    assert f"linux initramfs: logical volume {vg}/{lv}: rebuilt: update-initramfs: " \
           f"{version}: /boot/initrd.img-{version}" in out, out
    assert "holds virtio_scsi" in out, out
    assert f"{linux_images.LV_NODE} (/)" not in out, out  # the root's entry resolved
    assert f"fstab line 5: UUID={linux_images.MISSING_UUID} (/srv/data) is on no " \
           f"partition of this disk ({dev})" in out, out
    g.run("udevadm settle")
    # deactivated after; the copy's group untouched; nothing mounted
    assert _active(g) == "No devices found", _active(g)
    assert "rtk-linux-" not in g.run("cat /proc/mounts")
    g.run("sync")
    listing = _initramfs_on_disk(work / "lvm-vscsi.img", root, version)
    assert "/virtio_scsi.ko" in listing, "the rebuilt initramfs on the disk lacks virtio_scsi"
    # what the image needs to find its root: device-mapper, lvm and its udev rules
    for name in ("/dm-mod.ko", "usr/sbin/lvm\n", "/69-lvm.rules"):
        assert name in listing + "\n", f"the rebuilt initramfs lacks {name.strip()}"


# Run in the guest by the toolkit's Python: the volume groups of the Linux step
# (toolkit.restore.linux_mounts.logical_volumes) on loop devices of the guest's tmpfs
LVM_CASES = """
import json, os, subprocess, sys
from toolkit.restore import linux_mounts as lm

def sh(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True).stdout

def loop(name):
    with open(f"/tmp/{name}.img", "wb") as f:
        f.truncate(16 << 20)
    return sh("losetup", "-f", "--show", f"/tmp/{name}.img").strip()

def refusal(pvs):
    try:
        with lm.logical_volumes(pvs):
            return None
    except lm.MountError as e:
        return str(e)

a, b, c = loop("a"), loop("b"), loop("c")
ab = ["--devices", a, "--devices", b]
sh("pvcreate", "-y", *ab, a, b)
sh("vgcreate", *ab, "spanvg", a, b)
sh("lvcreate", *ab, "-an", "-y", "-l", "100%FREE", "-n", "data", "spanvg")
out = {"missing": refusal([a])}
sh("pvcreate", "-y", "--devices", c, c)
sh("vgcreate", "--devices", c, "rtkvg", c)
sh("lvcreate", "--devices", c, "-y", "-L", "8m", "-n", "root", "rtkvg")  # active
out["same_name"], out["c"] = refusal([sys.argv[1]]), c
sh("vgchange", "-an", "--devices", c, "rtkvg")
left = []
with lm.logical_volumes([a, b], left) as vols:
    out["vols"] = [v["lv"] for v in vols]
    fd = os.open(vols[0]["node"], os.O_RDONLY)  # held open: it cannot be deactivated
out["left"], out["dm_held"] = left, sh("dmsetup", "ls").strip()
os.close(fd)
sh("vgchange", "-an", *ab, "spanvg")
out["dm_after"] = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
for d in (a, b, c):
    sh("losetup", "-d", d)
print("LVM=" + json.dumps(out))
"""


def test_lvm_groups_not_safe_to_activate_are_refused_and_one_left_active_is_said(lab):
    """After the LVM restore above, in the same boot: a volume group that also needs a
    physical volume not looked at is not activated; the restored disk's rtkvg is not
    activated while another rtkvg (another UUID) is active; a group held open at the end
    is named as still active with the command, and what was done stands."""
    _linux(lab)  # skipped without the Linux images (and so without the restore above)
    g, dev = lab["guest"], _disks(lab)[LVM_SERIAL]["path"]
    script = base64.b64encode(LVM_CASES.encode()).decode()
    out = g.run(f"echo {script} | base64 -d > /tmp/lvmcases.py; "
                f"/opt/rtk/venv/bin/python /tmp/lvmcases.py {dev}2 2>&1", timeout=600)
    r = json.loads(out.split("LVM=", 1)[1].strip())
    assert r["missing"] == ("the volume group spanvg also needs 1 physical volume that is "
                            "not on this disk: not touched"), r
    assert r["same_name"] == ("another volume group named rtkvg is active in the live "
                              f"system on {r['c']} (its logical volumes would take the same "
                              "names): not touched"), r
    assert r["vols"] == ["spanvg/data"], r
    (left,) = r["left"]
    assert left.startswith("the volume group spanvg could not be deactivated (vgchange "), r
    assert left.endswith("still active (deactivate by hand: vgchange -an spanvg)"), r
    assert r["dm_held"].startswith("spanvg-data"), r
    assert r["dm_after"].strip() in ("", "No devices found"), r
    assert _active(g) == "No devices found", _active(g)
