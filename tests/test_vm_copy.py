"""Disk Copy through the menu in the live guest: an iSCSI SOURCE LUN (a BDR
snapshot) onto an iSCSI TARGET LUN (a SAN volume), both served by a real tgtd
on the host. The host then compares the two backing files."""

from __future__ import annotations

import os
import re

import pytest
from loopdev import loop_device, make_image, run
from vmlab.qemu import Guest
from vmlab.tgt import Tgt

pytestmark = pytest.mark.vm

MiB = 1024 * 1024
BDR = "iqn.2026-11.lab.rtk:bdr-snap"
SAN = "iqn.2026-11.lab.rtk:san-csv"
PORT = 3261  # apart from the boot test's tgtd
SIZE = 24 * MiB + 3 * 512  # odd size: not a multiple of the copy's chunk


@pytest.fixture(scope="module")
def lab(tmp_path_factory, need_root):
    work = tmp_path_factory.mktemp("vmcopy")
    # The snapshot: a GPT disk with an NTFS cluster volume, the rest random data.
    src = make_image(work / "bdr-lun1.img", SIZE)
    with open(src, "r+b") as f:
        f.seek(16 * MiB)
        f.write(os.urandom(SIZE - 16 * MiB))
    run("sgdisk", "-o", "-n1:1M:+12M", "-t1:0700", "-c1:Cluster Disk 1", str(src))
    with loop_device(src) as dev:
        run("mkntfs", "-Q", "-F", "-L", "CSV-Vol1", f"{dev}p1")
    dst = make_image(work / "san-lun1.img", 32 * MiB)
    tgt = Tgt(work, port=PORT)
    tgt.add_target(BDR, [src])
    tgt.add_target(SAN, [dst])
    yield {"work": work, "src": src, "dst": dst}
    tgt.stop()


def test_menu_copies_source_lun_onto_target_lun(iso, lab):
    guest = Guest(lab["work"], iso, name="copy")
    try:
        guest.wait_menu(timeout=400)
        guest.open_shell()
        portal = f"10.0.2.2:{PORT}"
        for iqn in (BDR, SAN):  # the BDR first: it becomes sda
            guest.run(f"iscsiadm -m node -o new -T {iqn} -p {portal} >/dev/null")
            guest.run(f"iscsiadm -m node -T {iqn} -p {portal} --login")
            guest.run("udevadm settle")
        serial = guest.run(f"lsblk -dno SERIAL /dev/disk/by-path/ip-{portal}-iscsi-{SAN}-lun-1")
        serial = serial.strip()
        guest.close_shell()

        con = guest.console
        guest.wait_menu(timeout=30)
        con.key("c")
        screen = con.wait_screen(r"choose the SOURCE", timeout=60)
        assert "iqn.2026-11.lab.rtk:bdr-snap  LUN 1" in screen
        con.key("enter")  # the BDR LUN: listed first
        screen = con.wait_screen(r"choose the TARGET", timeout=60)
        assert "cannot be chosen: this is the SOURCE" in screen
        con.key("enter")  # the eligible target listed first: the SAN LUN
        screen = con.wait_screen(r"Type \S+ to confirm", timeout=60)
        left = "\n".join(line[:40] for line in screen.splitlines())
        right = "\n".join(line[40:] for line in screen.splitlines())
        assert "bdr-snap" in left and "san-csv" in right
        assert 'ntfs "CSV-Vol1"' in left
        assert f"Type {serial} to confirm" in screen
        con.key(*serial, pause=0.15)
        con.key("enter")
        screen = con.wait_screen(r"VERIFIED IDENTICAL|FAILED|MISMATCH|CANCELLED", timeout=600)
        assert "VERIFIED IDENTICAL" in screen, screen
        report = re.search(r"report: (\S+)", screen).group(1)
        con.key("enter")
        guest.wait_menu(timeout=30)

        guest.open_shell()
        text = guest.run(f"cat {report}")
        assert BDR in text and SAN in text
        guest.close_shell()
    finally:
        guest.stop()
    with open(lab["src"], "rb") as a, open(lab["dst"], "rb") as b:
        assert a.read() == b.read(SIZE), "the SAN LUN's backing file differs from the snapshot"
        assert b.read() == b"\0" * (32 * MiB - SIZE)  # nothing written past the source's end
