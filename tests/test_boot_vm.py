"""The ISO itself boots under BIOS to the menu, and the Disks view shows a virtio disk
and a real iSCSI LUN logged in from the guest (the UEFI boot's checks are made in
tests/test_restore_vm.py's boot, under OVMF).

Each ISO boot is expensive under software emulation, so one boot carries
several checks."""

from __future__ import annotations

import json
import re

import pytest
from conftest import MiB
from loopdev import loop_device, make_image, run
from vmlab.live import BOOT_LIMIT_S, check_live_system
from vmlab.qemu import Guest
from vmlab.tgt import Tgt

from toolkit.disks.cluster import read_identity
from toolkit.disks.inventory import disks_from_probe

pytestmark = pytest.mark.vm

IQN = "iqn.2026-11.lab.rtk:bdr1"
VIRTIO_SERIAL = "RTKVIRTIO0001"


def _ntfs_disk(path, size, label):
    """A GPT disk with an ESP and an NTFS volume, as a cluster node's disks are."""
    make_image(path, size)
    run("sgdisk", "-o", "-n1:1M:+8M", "-t1:ef00", "-n2:0:0", "-t2:0700", "-c2:Basic data",
        str(path))
    with loop_device(path) as dev:
        run("mkfs.vfat", "-n", "ESP", f"{dev}p1")
        run("mkntfs", "-Q", "-F", "-L", label, f"{dev}p2")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory, need_root):
    work = tmp_path_factory.mktemp("vm")
    tgt = Tgt(work)
    lun = _ntfs_disk(work / "lun1.img", 32 * MiB, "Volume2")
    tgt.add_target(IQN, [lun])
    yield {"work": work, "tgt": tgt}
    tgt.stop()


def _labels_of(disk: dict) -> dict[int, tuple[str | None, str | None]]:
    """What the guest's inventory found on each partition, by byte offset."""
    return {p["start"]: (p["fstype"], p["label"]) for p in disk["partitions"]}


def test_bios_boot_menu_disks_and_iscsi(iso, lab):
    disk = _ntfs_disk(lab["work"] / "virtio0.img", 64 * MiB, "Vol1")
    guest = Guest(lab["work"], iso, disks=[(disk, VIRTIO_SERIAL)], name="bios")
    try:
        screen = guest.wait_menu(timeout=400)
        boot_s = guest.elapsed()
        print(f"BIOS: menu after {boot_s:.0f} s")
        assert boot_s < BOOT_LIMIT_S, f"menu took {boot_s:.0f} s"
        assert re.search(r"Recovery Toolkit \d+\.\d+\.\d+ │ rtk │", screen)
        assert "Enter select" in screen.splitlines()[-1]  # footer key hints
        assert "Disks" in screen and "Power off" in screen

        check_live_system(guest, "bios")
        # A test command logs in to the host's tgtd LUN. tgtd advertises
        # 127.0.0.1 (the guest's own loopback): use the address we reach it at.
        out = guest.run("iscsiadm -m discovery -t sendtargets -p 10.0.2.2:3260")
        assert IQN in out
        guest.run(f"iscsiadm -m node -o new -T {IQN} -p 10.0.2.2:3260 >/dev/null")
        guest.run(f"iscsiadm -m node -T {IQN} -p 10.0.2.2:3260 --login")
        guest.run("udevadm settle")
        # the LUN's content, read through the by-path name, is the host file's
        lun_head = guest.run(f"od -v -An -tx1 -N 512 -j 512 "
                             f"/dev/disk/by-path/ip-10.0.2.2:3260-iscsi-{IQN}-lun-1")
        with open(lab["work"] / "lun1.img", "rb") as f:
            f.seek(512)
            assert bytes.fromhex(lun_head.replace("\n", " ")) == f.read(512)  # GPT header
        # the guest's probe, replayed on the host, gives the guest's own inventory
        probe = json.loads(guest.run("rtk disks --dump-probe", timeout=120))
        (lab["work"] / "guest-probe-bios-iscsi.json").write_text(json.dumps(probe, indent=1))
        listed = json.loads(guest.run("rtk disks --json", timeout=120))
        # the cluster identity is read from each disk, not a fact of the probe: the
        # LUN's is the host file's own partition table, read here
        by_path = {d["path"]: d for d in listed}
        lun = next(d for d in listed if d["transport"] == "iscsi")
        assert lun["cluster"] == read_identity(str(lab["work"] / "lun1.img"),
                                               labels=_labels_of(lun)).to_dict()
        assert lun["cluster"]["disk_id"] and lun["cluster"]["scheme"] == "gpt"
        assert [d.to_dict() for d in disks_from_probe(probe)] == [
            {**by_path[d["path"]], "cluster": None} for d in listed]
        assert probe["udev_database"] is True
        guest.close_shell()

        guest.wait_menu(timeout=30)
        guest.console.key("d")
        screen = guest.console.wait_screen(r"LUN 1  portal", timeout=30)
        assert "/dev/vda" in screen and VIRTIO_SERIAL in screen
        assert re.search(rf"{re.escape(IQN)}\s+LUN 1\s+portal 10\.0\.2\.2:3260", screen), screen
        assert "67.1 MB" in screen and "33.6 MB" in screen  # 64 MiB and 32 MiB
        assert 'ntfs "Vol1"' in screen and 'ntfs "Volume2"' in screen
        # the iSCSI disk is listed first: its details show the by-path name
        guest.console.key("enter")
        detail = guest.console.wait_screen(r"by-path", timeout=30)
        assert f"ip-10.0.2.2:3260-iscsi-{IQN}-lun-1" in detail.replace("\n", "")
        # the boot medium is marked in use
        guest.console.key("esc", "end")
        screen = guest.console.wait_screen(r"boot medium", timeout=30)

        # Power off through the menu, with its confirmation: QEMU exits.
        guest.console.key("esc", "p")
        guest.console.wait_screen(r"Power off\?", timeout=20)
        guest.console.key("right", "enter")
        assert guest.wait_exit(timeout=120) == 0
    finally:
        guest.stop()
