"""A power cut in mid-copy, and the resume after the reboot, in the live guest: two boots.

Boot 1: a SOURCE disk (random data), a TARGET disk (bigger, zeros), both virtio, and a
small USB stick with an ext4 filesystem labelled RTK-DATA, which the live system mounts
and keeps its state on (mapfiles, reports; a fixed disk's would need rtk.data=UUID=).
``rtk copy`` runs from the shell, slowed down; once its mapfile on RTK-DATA records
copied bytes (and its running report says so), QEMU is quit from its monitor: a power
cut. The host finds on the RTK-DATA image the mapfile and the copy's partial report
("running", what was done).

Boot 2: the same disks, SOURCE and TARGET attached in the other order (their /dev names
swap); the menu's Disk Copy, the same SOURCE and TARGET chosen by their serials: the
summary offers "Resume the interrupted copy of this pair" (the mapfile found by the pair's
identities), the copy resumes and ends "VERIFIED IDENTICAL"; the host compares the
TARGET image with the SOURCE's, and finds the first boot's partial report still there,
unchanged, beside the second run's final report.

RTK_VM_DEV=1 pushes this source tree into the guest (the ISO may be older): the shell's
``rtk copy`` of boot 1 runs it; boot 2's menu was started from the ISO's code.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import time

import pytest
from conftest import MiB
from vmlab import ext4
from vmlab.http import HttpServer
from vmlab.qemu import Guest

from toolkit.blockio.mapfile import FINISHED, Mapfile, MapfileError

pytestmark = pytest.mark.vm

SIZE = 48 * MiB  # the SOURCE; the TARGET is 64 MiB
SERIALS = {"src": "RTK-PWR-SRC", "dst": "RTK-PWR-DST", "data": "RTK-PWR-DATA"}
STATE = "/var/log/rtk"  # a link to /run/rtk/data/rtk: the rtk/ directory of RTK-DATA


@pytest.fixture(scope="module")
def lab(tmp_path_factory, iso, need_root):
    work = tmp_path_factory.mktemp("vm-powercut")
    images = {"src": work / "src.img", "dst": work / "dst.img", "data": work / "data.img"}
    images["src"].write_bytes(os.urandom(SIZE))
    with open(images["dst"], "wb") as f:
        f.truncate(64 * MiB)
    ext4.make(images["data"], 32 * MiB, "RTK-DATA")
    http = HttpServer(work)
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        yield {"work": work, "images": images, "http": http, "timings": timings}
    finally:
        http.stop()
        print(f"\npower-cut VM test: {time.monotonic() - started:.0f} s in all; "
              f"timings (s): {timings}")


def _boot(lab, order: list[str], name: str) -> Guest:
    """``order``: the virtio disks; the RTK-DATA stick is on USB."""
    disks = [(lab["images"][k], SERIALS[k]) for k in order]
    guest = Guest(lab["work"], lab["iso"], disks=disks, name=name,
                  usb_disks=[(lab["images"]["data"], SERIALS["data"])])
    guest.wait_menu(timeout=400)
    lab["timings"][f"{name}: menu"] = round(guest.elapsed())
    return guest


def _dev(guest: Guest, serial: str) -> str:
    """The /dev name of the disk with ``serial``, now."""
    out = guest.run("lsblk -dnpo NAME,SERIAL")
    for line in out.splitlines():
        bits = line.split()
        if len(bits) == 2 and bits[1] == serial:
            return bits[0]
    raise AssertionError(f"no disk with serial {serial}:\n{out}")


SUMMARY = ("import glob, json, os\n"
           f"for f in sorted(glob.glob('{STATE}/copy-2*.json')):\n"
           "    try: d = json.load(open(f))\n"
           "    except ValueError: continue\n"
           "    print(os.path.basename(f), d['result'], d['copy'].get('done_bytes'))")


def _running_reports(guest: Guest) -> list[str]:
    """The copy reports on the state partition that say "running" with bytes done."""
    script = base64.b64encode(SUMMARY.encode()).decode()
    out = guest.run(f"echo {script} | base64 -d | python3")
    return [bits[0] for bits in (line.split() for line in out.splitlines())
            if len(bits) == 3 and bits[1] == "running" and bits[2].isdigit()
            and int(bits[2]) > 0]


def _choose(con, pattern: str, serial: str) -> str:
    """On a disk chooser showing ``pattern``: move to the disk with ``serial`` (counting
    only those that may be chosen) and press Enter; returns the screen it was chosen on."""
    screen = con.wait_screen(pattern + r"(?s:.*)" + re.escape(serial), timeout=60)
    lines = screen.splitlines()
    choosable = []
    for i, line in enumerate(lines):
        if re.match(r"\s*/dev/\S+\s", line):
            blocked = i + 1 < len(lines) and "cannot be chosen" in lines[i + 1]
            if not blocked:
                choosable.append(line)
    index = next(i for i, line in enumerate(choosable) if serial in line)
    con.key(*(["down"] * index), "enter")
    return screen


def test_power_cut_mid_copy_then_resume_after_reboot(iso, lab):
    lab["iso"] = iso
    images, timings = lab["images"], lab["timings"]
    dev_tree = os.environ.get("RTK_VM_DEV") == "1"

    # --- boot 1: the copy, then the power cut ----------------------------------------------
    guest = _boot(lab, ["src", "dst"], "boot1")
    try:
        guest.open_shell()
        if dev_tree:
            guest.install_source_tree(lab["http"], lab["work"])
        target = guest.run(f"readlink -f {STATE}").strip()
        assert target == "/run/rtk/data/rtk", (  # the state is on RTK-DATA
            target + guest.run("journalctl -b -u rtk-data --no-pager | tail -20"))
        names1 = {k: _dev(guest, SERIALS[k]) for k in ("src", "dst")}
        guest.run(f"(rtk copy {names1['src']} {names1['dst']} --yes --target-id "
                  f"{SERIALS['dst']} --max-rate 1M --chunk-size 1M > /tmp/copy.log 2>&1; "
                  "echo __RC=$? >> /tmp/copy.log) > /dev/null 2>&1 < /dev/null & true")
        t0 = time.monotonic()
        deadline = t0 + 90
        partial: tuple[str, dict] | None = None
        while partial is None:
            assert time.monotonic() < deadline, guest.run("cat /tmp/copy.log")
            log = guest.run("cat /tmp/copy.log")
            assert "__RC" not in log, f"the copy ended before the power cut:\n{log}"
            done = 0
            with contextlib.suppress(MapfileError):
                done = Mapfile.parse(guest.run(f"cat {STATE}/copy-*.map 2>/dev/null; true")
                                     ).bytes_with(FINISHED)
            running = _running_reports(guest)
            if done and running:
                name = running[0]
                partial = name, json.loads(guest.run(f"cat {STATE}/{name}"))
            else:
                time.sleep(1)
        guest.power_cut()
        timings["boot1: copy ran until the power cut"] = round(time.monotonic() - t0, 1)
    finally:
        guest.stop()
    report_name, report1 = partial
    assert 0 < report1["copy"]["done_bytes"] < SIZE
    assert report1["source"]["serial"] == SERIALS["src"]
    assert report1["target"]["serial"] == SERIALS["dst"]

    # what the power cut left on RTK-DATA
    after_cut = ext4.Snapshot(images["data"], lab["work"])
    files = after_cut.names("/rtk")
    maps = [n for n in files if n.endswith(".map")]
    assert len(maps) == 1 and SERIALS["src"] in maps[0] and SERIALS["dst"] in maps[0], files
    left = Mapfile.parse(after_cut.read(f"/rtk/{maps[0]}"))
    assert 0 < left.bytes_with(FINISHED) < SIZE
    cut_report = json.loads(after_cut.read(f"/rtk/{report_name}"))
    assert cut_report["result"] == "running"
    assert 0 < cut_report["copy"]["done_bytes"] <= left.bytes_with(FINISHED)
    assert cut_report["copy"]["mapfile"] == f"{STATE}/{maps[0]}"

    # --- boot 2: SOURCE and TARGET swapped, the menu resumes -------------------------------
    t1 = time.monotonic()
    guest = _boot(lab, ["dst", "src"], "boot2")
    con = guest.console
    try:
        guest.open_shell()
        if dev_tree:
            guest.install_source_tree(lab["http"], lab["work"])
        names2 = {k: _dev(guest, SERIALS[k]) for k in ("src", "dst")}
        assert names2 == {"src": names1["dst"], "dst": names1["src"]}, (names1, names2)
        assert guest.run(f"readlink -f {STATE}").strip() == "/run/rtk/data/rtk"
        guest.close_shell()
        guest.wait_menu(timeout=30)
        con.key("c")
        _choose(con, r"choose the SOURCE", SERIALS["src"])
        screen = con.wait_screen(r"choose the TARGET", timeout=60)
        assert f"SOURCE: {names2['src']}." in screen.replace("\n", " "), screen
        _choose(con, r"choose the TARGET", SERIALS["dst"])
        screen = con.wait_screen(r"Type (\S+) to confirm", timeout=90)
        assert "Resume the interrupted copy" in screen, screen
        word = re.search(r"Type (\S+) to confirm", screen).group(1)
        assert word == SERIALS["dst"]
        con.key(*word, pause=0.1)
        con.key("enter")
        screen = con.wait_screen(r"VERIFIED IDENTICAL|FAILED|MISMATCH|CANCELLED", timeout=300)
        assert "VERIFIED IDENTICAL" in screen, screen
        timings["boot2: resumed copy done after boot"] = round(guest.elapsed())
        con.key("enter")
        guest.wait_menu(timeout=30)
        con.key("p")  # a clean power off: RTK-DATA unmounted
        con.wait_screen(r"Power off\?", timeout=20)
        con.key("right", "enter")
        guest.wait_exit(timeout=120)
    finally:
        guest.stop()
    timings["boot2 in all"] = round(time.monotonic() - t1)

    # --- the host: the target is the source, the first boot's report is still there --------
    with open(images["src"], "rb") as a, open(images["dst"], "rb") as b:
        assert a.read() == b.read(SIZE), "the TARGET image differs from the SOURCE"
        assert b.read() == b"\0" * (64 * MiB - SIZE)  # nothing written past the source
    final = ext4.Snapshot(images["data"], lab["work"])
    reports = [n for n in final.names("/rtk") if re.fullmatch(r"copy-2\S+\.json", n)]
    assert report_name in reports and len(reports) == 2, reports
    assert json.loads(final.read(f"/rtk/{report_name}")) == cut_report  # as the cut left it
    [second] = [n for n in reports if n != report_name]
    rep2 = json.loads(final.read(f"/rtk/{second}"))
    assert rep2["result"] == "ok" and rep2["verify"]["result"] == "match", rep2
    assert rep2["copy"]["resumed"] is True and rep2["copy"]["copied_bytes"] < SIZE
    assert rep2["source"]["serial"] == SERIALS["src"]
    assert rep2["source"]["node"] == names2["src"] != report1["source"]["node"]
    assert Mapfile.parse(final.read(f"/rtk/{maps[0]}")).bytes_with(FINISHED) == SIZE
