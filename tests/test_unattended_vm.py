"""Unattended runs in the live guest, driven by the kernel command line only.

a. Netboot: QEMU's DHCP hands out build/netboot/boot.ipxe (our example, with its
   unattended line switched on) as the boot file; the NIC's iPXE fetches the kernel
   and initrd over HTTP, live-boot fetches the squashfs (fetch=), no CD. The plan
   file named after the guest's MAC restores a zstd image from HTTP onto a virtio
   disk; the report server gets start, progress and end; the guest powers off.
b. -kernel/-initrd from build/netboot with the ISO as CD: a consent that names
   another disk, then a rule that matches two disks: nothing written, the failure
   reported, no reboot, the reason held on the consoles.
c. Copy: a BDR LUN (SOURCE) onto a SAN LUN (TARGET, mutual CHAP) from a plan file
   served over HTTP; rtk.done=menu; the host compares the backing files; the secrets
   appear nowhere in the guest's logs nor in the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB
from loopdev import make_image
from vmlab.http import HttpServer
from vmlab.netboot import unattended_ipxe
from vmlab.qemu import Guest
from vmlab.report import ReportServer
from vmlab.tgt import Tgt

pytestmark = pytest.mark.vm

MAC = "52:54:00:12:34:56"  # QEMU's default for the first NIC
HOST = "10.0.2.2"  # the host, seen from the guest (QEMU user networking)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def base_append(netboot: Path) -> str:
    """The live system's kernel parameters, as the build wrote them into the PXELINUX
    example (without its initrd= and fetch=)."""
    text = (netboot / "pxelinux.cfg" / "default").read_text()
    line = re.search(r"^\s*APPEND (.*)$", text, re.M).group(1)
    return " ".join(w for w in line.split() if not w.startswith(("initrd=", "fetch=")))


@pytest.fixture(scope="module")
def lab(tmp_path_factory, need_root, netboot, iso):
    work = tmp_path_factory.mktemp("vmunattended")
    www = work / "www"
    (www / "images").mkdir(parents=True)
    image = ri.build_gpt_image(work / "node1.img")
    zst = www / "images" / "node1.img.zst"
    subprocess.run(["zstd", "-q", "-f", str(image.path), "-o", str(zst)], check=True)
    # the netboot directory as a PXE server would publish it
    (www / "rtk" / "plans").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        os.symlink(netboot / name, www / "rtk" / name)
    server = HttpServer(www)
    server.httpd.handle_error = lambda *a: None  # probes read a head, then hang up
    reports = ReportServer()
    yield {"work": work, "www": www, "image": image, "zst": zst, "server": server,
           "reports": reports, "append": base_append(netboot), "netboot": netboot,
           "iso": iso}
    reports.stop()
    server.stop()


def wait_exit(guest: Guest, timeout: float) -> int:
    try:
        return guest.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the guest did not power off within {timeout} s:\n"
                             f"{guest.console.raw_text()[-3000:]}") from None


def events_of(reports: ReportServer, run_id: str | None = None) -> list[dict]:
    bodies = list(reports.bodies)
    if run_id is None:
        run_id = bodies[-1]["run_id"]
    return [b for b in bodies if b["run_id"] == run_id]


# --- a. netboot, restore, report, poweroff ----------------------------------------

def test_a_netboot_restores_from_http_reports_and_powers_off(lab):
    www, server, reports = lab["www"], lab["server"], lab["reports"]
    base = server.url("rtk", host=HOST)
    # our example iPXE script, served from here, with its unattended line switched on
    (www / "rtk" / "boot.ipxe").write_text(
        unattended_ipxe(lab["netboot"], base, reports.url_for(HOST)))
    # the plan file of this machine, named after its MAC address
    disk = make_image(lab["work"] / "node1-disk.img", 96 * MiB)
    plan = {"version": 1, "mode": "restore",
            "image": server.url("images/node1.img.zst", host=HOST),
            "sha256": sha256(lab["zst"]), "disk": "serial:RTKNODE01",
            "consent": "serial:RTKNODE01", "verify": True, "done": "poweroff"}
    (www / "rtk" / "plans" / f"{MAC.replace(':', '-')}.yaml").write_text(json.dumps(plan))

    guest = Guest(lab["work"], None, netboot=f"{base}/boot.ipxe",
                  disks=[(disk, "RTKNODE01")], name="netboot")
    try:
        code = wait_exit(guest, 1500)
        log = guest.console.raw_text()
    finally:
        guest.stop()
    assert code == 0
    assert "rtk: unattended restore" in log and "rtk: powering off" in log, log[-3000:]
    assert re.search(r"rtk: .*write.*\d+(\.\d+)? ?[MG]?B/s", log), "no progress lines"
    assert "Main menu" not in log  # the consoles belonged to the run

    ev = events_of(reports)
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "start" and kinds[-1] == "end" and "progress" in kinds, kinds
    assert any(e["event"] == "progress" and e["phase"] == "write" for e in ev)
    end = ev[-1]
    assert end["result"] == "ok" and end["written"] is True, end
    assert end["hashes"]["image_sha256"] == plan["sha256"]
    assert end["disk"]["serial"] == "RTKNODE01"
    assert MAC in end["host"]["macs"]
    assert end["action"] == "poweroff"

    built = lab["image"]
    v = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    assert "No problems found" in v.stdout, v.stdout
    with open(built.path, "rb") as a, open(disk, "rb") as b:
        img, got = a.read(), b.read(built.size)
    assert img[:440] == got[:440]
    assert img[MiB:built.size - MiB] == got[MiB:built.size - MiB]


# --- b. nothing is written without an exact, consented disk ----------------------

def noisy_disk(path: Path, size: int) -> str:
    """A disk with something on it (so "unchanged" means something); its SHA-256."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in (0, size // 2, size - MiB):
            f.seek(off)
            f.write(os.urandom(MiB))
    return sha256(path)


def boot_kernel(lab, name: str, disks: list[tuple[Path, str]], params: str) -> Guest:
    nb = lab["netboot"]
    return Guest(lab["work"], lab["iso"], kernel=nb / "vmlinuz", initrd=nb / "initrd.img",
                 append=f"{lab['append']} {params}", disks=disks, name=name)


def held_screen(guest: Guest) -> str:
    """Wait for a run that stopped before writing and its held console; the screen's
    text without line breaks (a long line wraps at 80 columns)."""
    guest.console.wait_raw(r"STOPPED before writing anything", timeout=900)
    screen = guest.console.wait_screen(r"Press Enter for the menu", timeout=120)
    time.sleep(15)  # -no-reboot: a reboot or power-off would end QEMU
    assert guest.proc.poll() is None, "the guest rebooted or powered off after a failure"
    return "".join(screen.splitlines())


def test_b1_consent_for_another_disk_writes_nothing_and_stays(lab):
    server, reports = lab["server"], lab["reports"]
    disk = lab["work"] / "b1-disk.img"
    before = noisy_disk(disk, 96 * MiB)
    params = (f"rtk.mode=restore rtk.image={server.url('images/node1.img.zst', host=HOST)} "
              f"rtk.disk=serial:RTKB1DISK rtk.consent=serial:ANOTHER-MACHINE "
              f"rtk.report={reports.url_for(HOST)}")  # rtk.done: reboot, the default
    guest = boot_kernel(lab, "b1", [(disk, "RTKB1DISK")], params)
    con = guest.console
    try:
        screen = held_screen(guest)
        assert "ANOTHER-MACHINE" in screen and "RTKB1DISK" in screen, screen
        ev = events_of(reports)
        assert [e["event"] for e in ev][0] == "start" and ev[-1]["event"] == "end"
        end = ev[-1]
        assert end["result"] == "refused" and end["written"] is False, end
        assert end["phase"] == "select" and "ANOTHER-MACHINE" in end["error"]
        assert end["action"] == "stay"
        # Enter: the menu; the journal, the log file and tty1 have the reason
        con.key("enter")
        guest.wait_menu(timeout=120)
        guest.open_shell()
        journal = guest.run("journalctl -b -u rtk-unattended -o cat --no-pager")
        assert "rtk.consent=serial:ANOTHER-MACHINE does not name the disk found" in journal
        assert "STOPPED" in guest.run("cat /var/log/rtk/unattended.log")
        tty1 = guest.run("tr -s ' ' < /dev/vcs1")  # the text on tty1's screen
        assert "rtk: disk: found vda" in tty1 and "STOPPED before writing" in tty1, tty1
        assert "written\": false" in guest.run("cat /var/log/rtk/unattended-*.json")
        guest.close_shell()
    finally:
        guest.stop()
    assert sha256(disk) == before


def test_b2_rule_matching_two_disks_writes_nothing(lab):
    server, reports = lab["server"], lab["reports"]
    twins = [(lab["work"] / f"twin{i}.img", f"RTKTWIN{i}") for i in (1, 2)]
    before = [noisy_disk(p, 64 * MiB) for p, _ in twins]
    params = (f"rtk.mode=restore rtk.image={server.url('images/node1.img.zst', host=HOST)} "
              "rtk.disk=rule:transport=virtio,size>=60M rtk.consent=serial:RTKTWIN1 "
              f"rtk.done=poweroff rtk.report={reports.url_for(HOST)}")
    guest = boot_kernel(lab, "b2", twins, params)
    try:
        screen = held_screen(guest)
        assert "RTKTWIN1" in screen and "RTKTWIN2" in screen, screen
    finally:
        guest.stop()
    end = events_of(reports)[-1]
    assert end["event"] == "end" and end["result"] == "refused" and not end["written"], end
    assert "2 disks" in end["error"] or "several" in end["error"], end["error"]
    assert [sha256(p) for p, _ in twins] == before


# --- c. the Cluster Shared Volume case, scripted ------------------------------------

BDR = "iqn.2026-11.lab.rtk:bdr-snap"
SAN = "iqn.2026-11.lab.rtk:san-csv"
PORT = 3263  # apart from the other VM tests' tgtd
CHAP_SRC = ("bdr-reader", "Bdr-Secret-4471")
CHAP = ("csv-node", "San-Secret-5582")
MUTUAL = ("san-array", "Mutual-Secret-6693")
SECRETS = (CHAP_SRC[1], CHAP[1], MUTUAL[1])


def test_c_copy_with_chap_from_a_plan_over_http(lab):
    work, www, server, reports = lab["work"], lab["www"], lab["server"], lab["reports"]
    size = 24 * MiB + 3 * 512
    src = work / "bdr-lun1.img"
    with open(src, "wb") as f:
        f.write(os.urandom(size))
    dst = make_image(work / "san-lun1.img", 32 * MiB)
    tgt = Tgt(work, port=PORT)
    try:
        tgt.add_target(BDR, [src], chap=CHAP_SRC, serials=["RTKBDR0001"])
        tgt.add_target(SAN, [dst], chap=CHAP, mutual=MUTUAL, serials=["RTKSAN0001"])
        plan = {"version": 1, "mode": "copy", "verify": True,
                "initiator": "iqn.2026-11.lab.rtk:node-c",
                "sources": [{"host": HOST, "port": PORT, "iqn": BDR, "lun": 1,
                             "chap": {"username": CHAP_SRC[0], "password": CHAP_SRC[1]}}],
                "targets": [{"host": HOST, "port": PORT, "iqn": SAN, "lun": 1,
                             "chap": {"username": CHAP[0], "password": CHAP[1]},
                             "mutual": {"username": MUTUAL[0], "password": MUTUAL[1]}}]}
        (www / "csv-plan.json").write_text(json.dumps(plan))
        params = (f"rtk.mode=copy rtk.plan={server.url('csv-plan.json', host=HOST)} "
                  f"rtk.disk=iscsi:{SAN}:1 rtk.consent=serial:RTKSAN0001 rtk.done=menu "
                  f"rtk.report={reports.url_for(HOST)}")
        guest = boot_kernel(lab, "copy", [], params)
        con = guest.console
        try:
            con.wait_raw(r"rtk: done: ", timeout=1200)
            guest.wait_menu(timeout=120)  # rtk.done=menu: the consoles get the menu
            guest.open_shell()
            assert "RTKBDR0001" in guest.run("rtk disks")
            for secret in SECRETS:
                hits = guest.run(f"grep -rlF '{secret}' /var/log /run/rtk /proc/cmdline; "
                                 f"journalctl -b -o cat --no-pager | grep -cF '{secret}'",
                                 check=False)
                assert hits.strip() == "0", f"a CHAP secret is in the guest's logs: {hits}"
            guest.close_shell()
        finally:
            guest.stop()
    finally:
        tgt.stop()
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read(size), "the SAN LUN differs from the BDR LUN"
    ev = events_of(reports)
    end = ev[-1]
    assert end["event"] == "end" and end["result"] == "ok", end
    assert end["hashes"]["verify_match"] is True
    assert end["source"]["serial"] == "RTKBDR0001" and end["disk"]["serial"] == "RTKSAN0001"
    assert {a["role"] for a in end["attached"]} == {"SOURCE", "TARGET"}
    raw = b"".join(reports.raw)
    for secret in SECRETS:
        assert secret.encode() not in raw, "a CHAP secret reached the report server"
