"""The Cluster Shared Volume case through the menu, in the live guest, one boot:
the iSCSI Manager discovers the portal, attaches the BDR snapshot LUN as SOURCE
and the SAN LUN (mutual CHAP; a wrong secret first) as TARGET; Disk Copy copies
SOURCE onto TARGET; the host compares the two backing files of its real tgtd.
Then, from the shell, ``rtk copy --skip-zeros`` of the thin SOURCE LUN: its
deallocated blocks (SCSI GET LBA STATUS, answered by tgtd from the backing
file's holes) are not read."""

from __future__ import annotations

import os
import re

import pytest
from conftest import MiB
from loopdev import loop_device, make_image, run
from vmlab.qemu import Guest
from vmlab.tgt import Tgt

from toolkit.blockio import allocation

pytestmark = pytest.mark.vm

BDR = "iqn.2026-11.lab.rtk:bdr-snap"
SAN = "iqn.2026-11.lab.rtk:san-csv"
PORT = 3261  # apart from the boot test's tgtd
SIZE = 24 * MiB + 3 * 512  # odd size: not a multiple of the copy's chunk
CHAP = ("csv-node", "Initiator-Secret-77")
MUTUAL = ("san-array", "Target-Secret-88")


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
    tgt.add_target(BDR, [src], thin=True)  # a thin snapshot: GET LBA STATUS knows its holes
    tgt.add_target(SAN, [dst], chap=CHAP, mutual=MUTUAL)
    yield {"work": work, "src": src, "dst": dst}
    tgt.stop()


def _form(con, *values: str) -> None:
    """Fill a form's fields from the first, Tab between them, submit."""
    for i, value in enumerate(values):
        if i:
            con.key("tab")
        con.key(*(["backspace"] * 12), pause=0.05)
        con.key(*value, pause=0.08)
    con.key("enter")


def _discover(con) -> str:
    """Discover the lab's portal from the iSCSI Manager; returns the targets screen."""
    con.key("a")
    con.wait_screen(r"Portal address", timeout=20)
    _form(con, "10.0.2.2", str(PORT))
    return con.wait_screen(r"iSCSI Manager: targets at 10\.0\.2\.2", timeout=120)


def test_menu_attaches_with_roles_and_copies(iso, lab):
    guest = Guest(lab["work"], iso, name="copy")
    con = guest.console
    try:
        guest.wait_menu(timeout=400)
        con.key("i")
        screen = con.wait_screen(r"Attached LUNs \(0\)", timeout=60)
        assert re.search(r"Initiator name: iqn\.", screen)
        # Discover: the portal as the technician types it
        screen = _discover(con)
        assert BDR in screen and SAN in screen
        assert "127.0.0.1" in screen  # tgtd advertised its loopback: we say we use ours
        # BDR snapshot as SOURCE: the first button of the first target
        con.key("enter")
        # the whole line: the row appears before the disk's probe has filled it in
        con.wait_screen(r"SOURCE 1 ", timeout=120)
        screen = con.wait_screen(r"SOURCE 1\s+/dev/sd\w\s+LUN 1\s+25\.2 MB\s+ntfs \"CSV-Vol1\"",
                                 timeout=60)
        # SAN LUN as TARGET: asks for CHAP; a wrong secret first
        _discover(con)
        con.key("down", "right", "enter")  # second target, "Attach as TARGET"
        con.wait_screen(r"asks for CHAP", timeout=120)
        _form(con, CHAP[0], "wrong-secret", MUTUAL[0], MUTUAL[1])
        screen = con.wait_screen(r"credentials were refused", timeout=120)
        _form(con, CHAP[0], CHAP[1], MUTUAL[0], MUTUAL[1])
        screen = con.wait_screen(r"Attached LUNs \(2\)", timeout=120)
        assert re.search(r"TARGET 1\s+/dev/sd\w\s+LUN 1\s+33\.6 MB", screen)
        con.key("esc")
        guest.wait_menu(timeout=30)

        con.key("c")
        screen = con.wait_screen(r"choose the SOURCE", timeout=60)
        assert "SOURCE" in screen and "bdr-snap  LUN 1" in screen
        con.key("enter")  # the SOURCE-role LUN: listed first
        screen = con.wait_screen(r"choose the TARGET", timeout=60)
        assert "cannot be chosen: this is the SOURCE" in screen
        con.key("enter")  # the TARGET-role LUN: listed first among those allowed
        screen = con.start_anyway(r"Type \S+ to confirm", timeout=60)
        left = "\n".join(line[:40] for line in screen.splitlines())
        right = "\n".join(line[40:] for line in screen.splitlines())
        assert "bdr-snap" in left and "san-csv" in right
        assert 'ntfs "CSV-Vol1"' in left
        serial = re.search(r"Type (\S+) to confirm", screen).group(1)
        con.key(*serial, pause=0.1)
        con.key("enter")
        screen = con.wait_screen(r"VERIFIED IDENTICAL|FAILED|MISMATCH|CANCELLED", timeout=600)
        assert "VERIFIED IDENTICAL" in screen, screen
        report = re.search(r"report: (\S+)", screen).group(1)
        con.key("enter")
        guest.wait_menu(timeout=30)

        guest.open_shell()
        text = guest.run(f"cat {report}")
        assert BDR in text and SAN in text
        # the SOURCE LUN is read-only in the kernel, even for a shell command
        src_dev = guest.run(f"readlink -f /dev/disk/by-path/ip-10.0.2.2:{PORT}-iscsi-{BDR}-lun-1")
        assert guest.run(f"blockdev --getro {src_dev.strip()}").strip() == "1"
        # CHAP secrets appear nowhere: logs, journal, reports
        for secret in (CHAP[1], MUTUAL[1]):
            hits = guest.run(f"grep -rl -- '{secret}' /var/log/rtk; journalctl -b | "
                             f"grep -c -- '{secret}'; true")
            assert hits.strip() == "0", hits
        # --skip-zeros from the thin SOURCE LUN: its deallocated blocks are not read
        san_dev = guest.run(f"readlink -f /dev/disk/by-path/ip-10.0.2.2:{PORT}-iscsi-{SAN}-lun-1")
        guest.run(f"blkdiscard -f -z {san_dev.strip()}")  # the target reads back zeros
        out = guest.run(f"rtk copy --skip-zeros --chunk-size 1M --mapfile /tmp/thin.map --yes "
                        f"--target-id {serial} {src_dev.strip()} {san_dev.strip()}; echo rc=$?",
                        timeout=600)
        assert "rc=0" in out, out
        report = re.search(r"report: (\S+)\.txt", out).group(1) + ".json"
        got = guest.run("python3 -c \"import json,sys; c=json.load(open(sys.argv[1]))['copy']; "
                        "print(c['unread_hole_bytes'], '|', c['source_map'])\" " + report)
        unread, how = (x.strip() for x in got.strip().splitlines()[-1].split("|"))
        assert how == allocation.SCSI_MAP
        holes = allocation.file_holes(str(lab["src"]), 0, SIZE)  # what tgtd answers from
        whole = sum(MiB for k in range(SIZE // MiB)
                    if any(p <= k * MiB and (k + 1) * MiB <= p + n for p, n in holes))
        assert whole and int(unread) == whole, (unread, whole, holes)
        guest.close_shell()
    finally:
        guest.stop()
    for secret in (CHAP[1], MUTUAL[1]):
        assert secret not in guest.console.raw_text(), "a CHAP secret reached the screen"
    with open(lab["src"], "rb") as a, open(lab["dst"], "rb") as b:
        assert a.read() == b.read(SIZE), "the SAN LUN's backing file differs from the snapshot"
        assert b.read() == b"\0" * (32 * MiB - SIZE)  # nothing written past the source's end
