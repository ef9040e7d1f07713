"""The ISO boots under UEFI (OVMF) to the menu (the live system's checks:
:func:`vmlab.live.check_live_system`), then a bare-metal restore through the menu: a
zstd-compressed GPT image (ESP with the Windows boot manager, NTFS, ext4) streamed from
the host's HTTP server onto a larger virtio disk. The guest's NVRAM gets the boot entry;
restored again from the command line, the new entry replaces it (one entry, not two); the
host checks the disk's content.

In the same boot, the live system's own tools fit an image to a smaller disk: a disk
holding a GPT image (ESP, NTFS of 160 MiB with 20 MiB of files) restored with ``rtk
restore`` onto a 128 MiB disk (qemu-storage-daemon's FUSE export, ntfsresize); the
host checks the result (sgdisk -v, ntfsfix -n, every file by hash)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
import restore_images as ri
from conftest import MiB
from loopdev import loop_device
from shrink_images import build_shrink_image, check_small_disk
from vmlab.http import HttpServer
from vmlab.live import BOOT_LIMIT_S, check_live_system
from vmlab.qemu import Guest

pytestmark = pytest.mark.vm

SERIAL = "RTKRESTORE01"
IMAGE_SERIAL, SMALL_SERIAL = "RTKIMAGE01", "RTKSMALL01"
SMALL = 128 * MiB


@pytest.fixture(scope="module")
def lab(tmp_path_factory, need_root):
    work = tmp_path_factory.mktemp("vmrestore")
    image = ri.build_gpt_image(work / "node1.img")
    subprocess.run(["zstd", "-q", "-f", str(image.path), "-o", str(work / "node1.img.zst")],
                   check=True)
    zst_sha256 = hashlib.sha256((work / "node1.img.zst").read_bytes()).hexdigest()
    target = work / "disk.img"
    with open(target, "wb") as f:
        f.truncate(96 * MiB)
    shrinkable = build_shrink_image(work / "shrink.img", "ntfs", part_size=160 * MiB,
                                    data=20 * MiB)
    small = work / "small.img"
    with open(small, "wb") as f:
        f.truncate(SMALL)
    server = HttpServer(work)
    server.httpd.handle_error = lambda *a: None  # the inspection reads the head, then hangs up
    yield {"work": work, "image": image, "sha256": zst_sha256, "target": target,
           "server": server, "shrinkable": shrinkable, "small": small}
    server.stop()


def test_menu_restores_image_from_http_under_uefi(iso, lab):
    guest = Guest(lab["work"], iso, uefi=True, name="restore",
                  disks=[(lab["target"], SERIAL), (lab["shrinkable"].path, IMAGE_SERIAL),
                         (lab["small"], SMALL_SERIAL)])
    con = guest.console
    try:
        screen = guest.wait_menu(timeout=400)
        boot_s = guest.elapsed()
        print(f"UEFI: menu after {boot_s:.0f} s")
        assert boot_s < BOOT_LIMIT_S, f"menu took {boot_s:.0f} s"
        assert "Main menu" in screen
        check_live_system(guest, "uefi")
        guest.close_shell()  # the Shell entry returns to the menu
        guest.wait_menu(timeout=30)
        con.key("b")
        con.wait_screen(r"Restore: where is the image\?", timeout=60)
        con.key("down", "enter")  # the second source: a URL
        con.wait_screen(r"Restore: image from a URL", timeout=30)
        url = lab["server"].url("node1.img.zst", host="10.0.2.2")
        con.key(*url, pause=0.05)
        con.key("down")
        con.key(*lab["sha256"], pause=0.03)
        con.key("enter")
        screen = con.wait_screen(r"Restore: the image", timeout=180)
        assert "zstd" in screen.lower() and "GPT" in screen, screen
        con.key("enter")
        screen = con.wait_screen(r"Restore: choose the TARGET", timeout=60)
        assert "/dev/vda" in screen and SERIAL in screen
        con.key("enter")
        screen = con.start_anyway(r"Restore: confirm", timeout=120)
        assert "TARGET (overwritten)" in screen
        con.key(*SERIAL, pause=0.08)
        con.key("enter")
        screen = con.wait_screen(r"RESTORED AND VERIFIED|FAILED|REFUSED|CANCELLED|MISMATCH",
                                 timeout=900)
        assert "RESTORED AND VERIFIED" in screen, screen
        assert "Windows Boot Manager" in screen
        con.key("enter")
        guest.wait_menu(timeout=60)

        guest.open_shell()
        entries = guest.run("efibootmgr -v")
        assert "Windows Boot Manager" in entries, entries
        assert "\\EFI\\Microsoft\\Boot\\bootmgfw.efi" in entries.replace("/", "\\"), entries
        # restored again (a second attempt, as in the field): its entry replaces the first
        out = guest.run(f"rtk restore {url} /dev/vda --sha256 {lab['sha256']} --yes "
                        f"--target-id {SERIAL}; echo rc=$?", timeout=900)
        assert "rc=0" in out and "(the same loader on a partition of the same GUID" in out, out
        esp = guest.run("blkid -s PARTUUID -o value /dev/vda1").strip().lower()
        again = guest.run("efibootmgr -v")
        assert len([ln for ln in again.lower().splitlines() if esp in ln
                    and "bootmgfw.efi" in ln]) == 1, again
        # the smaller disk: the image is the disk with IMAGE_SERIAL, the target SMALL_SERIAL
        image_dev = guest.run(f"readlink -f /dev/disk/by-id/virtio-{IMAGE_SERIAL}").strip()
        small_dev = guest.run(f"readlink -f /dev/disk/by-id/virtio-{SMALL_SERIAL}").strip()
        out = guest.run(f"rtk restore {image_dev} {small_dev} --yes --target-id "
                        f"{SMALL_SERIAL}; echo rc=$?", timeout=900)
        assert "rc=0" in out, out
        assert 'partition 2 (ntfs "Data") shrinks from' in out, out
        guest.close_shell()
    finally:
        guest.stop()
    # the host confirms the disk's content: the partitions' bytes and the boot code
    # (the GPT headers differ: the backup header moved to the larger disk's end)
    built = lab["image"]
    v = subprocess.run(["sgdisk", "-v", str(lab["target"])], capture_output=True, text=True)
    assert "No problems found" in v.stdout, v.stdout
    with open(built.path, "rb") as a, open(lab["target"], "rb") as b:
        img, disk = a.read(), b.read(built.size)
    assert img[:440] == disk[:440]
    assert img[MiB:built.size - MiB] == disk[MiB:built.size - MiB]
    with loop_device(lab["small"]) as dev:
        check_small_disk(dev, lab["shrinkable"], "ntfs", size=SMALL)
    assert ri.sha256_file(lab["shrinkable"].path) == lab["shrinkable"].sha256
    assert os.path.getsize(lab["small"]) == SMALL
