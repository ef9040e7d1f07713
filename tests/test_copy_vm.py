"""The Cluster Shared Volume case through the menu, in the live guest. One boot, shared by
the tests below, which run in this order and go on from where the one before left the
menu:

1. the iSCSI Manager discovers the portal, attaches the BDR snapshot target (three LUNs)
   as SOURCE and the SAN target (three LUNs; mutual CHAP, a wrong secret first) as
   TARGET; each GPT LUN's attached line shows its CSV ID, which must be ``sgdisk -p``'s
   disk GUID and the partition's first sector times the sector size;
2. Disk Copy copies SOURCE LUN 1 onto TARGET LUN 1 (one pair); then, from the shell,
   ``rtk copy --skip-zeros`` of the thin SOURCE LUN: its deallocated blocks (SCSI GET LBA
   STATUS, answered by tgtd from the backing file's holes) are not read; the host
   compares the two backing files of its real tgtd;
3. a job of two pairs (SOURCE LUNs 2 and 3, GPT disks with an NTFS volume each, onto
   TARGET LUNs 2 and 3, full of other data, one of them an old cluster disk): chosen one
   pair after the other, one summary (used blocks only, preselected), one typed
   confirmation per TARGET, one result; on the host each target's partition table, every
   range the copy's domain names, and every file of its NTFS equal the source's, and its
   NTFS checks clean;
4. no CHAP secret ever reached the screen.

``RTK_VM_DEV=1``: the guest gets this tree's toolkit and tui first (no ISO rebuild), and
its menu is restarted with them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import MiB, words
from loopdev import loop_device, make_image, run
from vmlab.http import HttpServer
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
# the job's pairs: snapshots of two cluster disks (GPT, one NTFS volume each, old data in
# the free space) and the SAN LUNs they go to, of the same size, full of other data; the
# second SAN LUN still holds an old cluster disk
JOB_SIZE = 16 * MiB
VOLUMES = {2: ("3f1c2b9e-7d41-4c55-9a0b-5e7d2c1a9f01", "Vol1"),  # LUN: disk GUID, label
           3: ("a7e04d12-9b3c-4e8f-8d61-0c2f5b7e4a93", "Vol2")}
OLD_DISK = ("5b2d8c41-e6f7-4a19-b3d0-7c94e1f2a865", "Old-Vol3")  # on SAN LUN 3
FOCUS_BG = "brightcyan"  # the menu's "focus" colour (light cyan), as pyte names it


# --- the host's images ---------------------------------------------------------------------

def _random_image(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))  # old data everywhere
    return path


def _wait_released(dev: str) -> None:
    """ntfs-3g (a FUSE daemon) lets go of its device a moment after umount returns."""
    for _ in range(100):
        try:
            os.close(os.open(dev, os.O_RDONLY | os.O_EXCL))
            return
        except OSError:
            time.sleep(0.05)


def _cluster_disk(path: Path, guid: str, label: str, files: dict[str, bytes] | None = None
                  ) -> None:
    """Over what ``path`` holds: a GPT with disk GUID ``guid`` and one NTFS partition
    (1 MiB to 13 MiB) ``label`` holding ``files`` (written through ntfs-3g)."""
    run("sgdisk", "-o", "-U", guid, "-n1:1M:+12M", "-t1:0700", "-c1:Cluster Disk",
        str(path))
    with loop_device(path) as dev, tempfile.TemporaryDirectory() as mnt:
        run("mkntfs", "-Q", "-F", "-L", label, f"{dev}p1")
        if files:
            run("ntfs-3g", f"{dev}p1", mnt)
            try:
                for name, data in files.items():
                    (Path(mnt) / name).parent.mkdir(parents=True, exist_ok=True)
                    (Path(mnt) / name).write_bytes(data)
            finally:
                run("umount", mnt)
                _wait_released(f"{dev}p1")


def _files(seed: int) -> dict[str, bytes]:
    rnd = random.Random(seed)
    out = {f"Docs/note-{i}.txt": f"cluster volume file {i}, seed {seed}\n".encode() * (i + 1)
           for i in range(5)}
    out["VMs/disk.vhdx"] = rnd.randbytes(2 * MiB + 777)
    out["VMs/config/settings.xml"] = rnd.randbytes(9000)
    return out


def gpt_facts(path: Path) -> tuple[str, int, list[tuple[int, ...]]]:
    """What ``sgdisk -p`` says: the disk GUID, the logical sector size, and each
    partition's (number, first sector, last sector)."""
    out = run("sgdisk", "-p", str(path))
    guid = re.search(r"Disk identifier \(GUID\): (\S+)", out).group(1)
    sector = int(re.search(r"Sector size \(logical[^)]*\): (\d+)", out).group(1))
    parts = [tuple(map(int, m)) for m in re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s", out, re.M)]
    return guid, sector, parts


def _csv_id(path: Path) -> str:
    """The CSV ID of the image's first partition, from ``sgdisk -p`` alone."""
    guid, sector, parts = gpt_facts(path)
    return f"{guid.lower()}:{parts[0][1] * sector}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    job = {}
    for lun, (guid, label) in VOLUMES.items():
        image = _random_image(work / f"bdr-lun{lun}.img", JOB_SIZE, seed=lun)
        files = _files(seed=lun)
        _cluster_disk(image, guid, label, files)
        job[lun] = {"src": image, "files": files, "hash": _sha(image.read_bytes()),
                    "dst": _random_image(work / f"san-lun{lun}.img", JOB_SIZE, seed=10 + lun)}
    _cluster_disk(job[3]["dst"], *OLD_DISK)  # SAN LUN 3 held another cluster disk
    tgt = Tgt(work, port=PORT)
    # thin snapshots: GET LBA STATUS knows their holes
    tgt.add_target(BDR, [src, job[2]["src"], job[3]["src"]], thin=True)
    tgt.add_target(SAN, [dst, job[2]["dst"], job[3]["dst"]], chap=CHAP, mutual=MUTUAL)
    yield {"work": work, "src": src, "dst": dst, "job": job, "done": set()}
    tgt.stop()


def _restart_menu(guest: Guest) -> None:
    """From the shell opened from the menu: the menu is stopped 3 s after the shell
    closes, and the console's loop (rtk-console) starts it again with the code now
    installed."""
    menu = guest.run("pgrep -f -t ttyS0 rtk-menu").split()
    assert len(menu) == 1, menu
    guest.run(f"setsid sh -c 'sleep 3; kill {menu[0]}' </dev/null >/dev/null 2>&1 & true")
    mark = guest.console.mark()
    guest.close_shell()
    guest.console.wait_raw(r"The menu stopped", start=mark, timeout=60)
    guest.console.wait_raw(r"Main menu", start=guest.console.mark(), timeout=120)
    guest.wait_menu(timeout=60)


@pytest.fixture(scope="module")
def guest(iso, lab):
    started = time.monotonic()
    g = Guest(lab["work"], iso, name="copy")
    http = None
    try:
        g.wait_menu(timeout=400)
        lab["boot_seconds"] = round(g.elapsed())
        if os.environ.get("RTK_VM_DEV") == "1":
            http = HttpServer(lab["work"])
            g.open_shell()
            g.install_source_tree(http, lab["work"])
            _restart_menu(g)
        yield g
    finally:
        g.stop()
        if http:
            http.stop()
        print(f"\ncopy VM tests: menu after {lab.get('boot_seconds')} s, "
              f"{time.monotonic() - started:.0f} s in all")


def _need(lab, step: str) -> None:
    if step not in lab["done"]:
        pytest.skip(f"needs the step '{step}' of an earlier test, which failed")


# --- driving the menu ----------------------------------------------------------------------

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


def _focused(con) -> str:
    """The lines of the screen drawn in the focus colour: the entry that has the focus."""
    screen = con.screen
    with con.lock:
        return "\n".join(screen.display[y] for y in range(screen.lines)
                         if any(screen.buffer[y][x].bg == FOCUS_BG
                                for x in range(screen.columns)))


def _lun(iqn: str, lun: int) -> str:
    """How a disk chooser's entry names an iSCSI LUN (``IQN  LUN 2  portal ...``)."""
    return rf"{re.escape(iqn)}  LUN {lun}\s"


def _settled_focus(con) -> str:
    """:func:`_focused` once two reads 0.4 s apart agree (the redraw after a key)."""
    last = _focused(con)
    for _ in range(10):
        time.sleep(0.4)
        now = _focused(con)
        if now == last:
            break
        last = now
    return last


def _pick(con, title: str, wanted: str, key: str = "down", limit: int = 16) -> str:
    """On the disk chooser ``title``: move the focus (``key``) to the entry matching
    ``wanted`` and press Enter; returns that entry's lines."""
    con.wait_screen(title, timeout=90)
    for _ in range(limit):
        focus = _settled_focus(con)
        if re.search(wanted, focus):
            con.key("enter")
            return focus
        before = con.text()
        con.key(key)
        deadline = time.monotonic() + 5  # the redraw (nothing moves at the list's end)
        while con.text() == before and time.monotonic() < deadline:
            time.sleep(0.1)
    raise AssertionError(f"{wanted!r} never had the focus on {title!r}:\n{con.text()}")


def _columns(screen: str) -> tuple[str, str]:
    """A confirmation screen's two columns (SOURCE left, TARGET right), each as one
    string without any whitespace: what a column wraps in the middle of a word (a
    CSV ID is longer than a column) reads as one word again."""
    lines = screen.splitlines()
    return ("".join("".join(line[:40].split()) for line in lines),
            "".join("".join(line[40:].split()) for line in lines))


def _to_main_menu(guest: Guest) -> None:
    """Back to the main menu from wherever an earlier failure left it (Esc, Esc...)."""
    for _ in range(6):
        try:
            guest.wait_menu(timeout=3)
            return
        except AssertionError:
            guest.console.key("esc")
    guest.wait_menu(timeout=30)


# --- the tests -----------------------------------------------------------------------------

def test_menu_attaches_with_roles_and_shows_csv_ids(guest, lab):
    con = guest.console
    con.key("i")
    screen = con.wait_screen(r"Attached LUNs \(0\)", timeout=60)
    assert re.search(r"Initiator name: iqn\.", screen)
    # Discover: the portal as the technician types it
    screen = _discover(con)
    assert BDR in screen and SAN in screen
    assert "127.0.0.1" in screen  # tgtd advertised its loopback: we say we use ours
    # BDR snapshots as SOURCE: the first button of the first target
    con.key("enter")
    # the whole lines: a row appears before the disk's probe has filled it in
    con.wait_screen(r"SOURCE 3 ", timeout=120)
    screen = con.wait_screen(r"SOURCE 1\s+/dev/sd\w\s+LUN 1\s+25\.2 MB\s+ntfs \"CSV-Vol1\""
                             r"(?s:.*)SOURCE 2\s+/dev/sd\w\s+LUN 2\s+16\.8 MB\s+ntfs \"Vol1\""
                             r"(?s:.*)SOURCE 3\s+/dev/sd\w\s+LUN 3\s+16\.8 MB\s+ntfs \"Vol2\"",
                             timeout=60)
    # the CSV ID of each cluster disk: sgdisk's disk GUID and the partition's byte offset
    for lun, (guid, label) in VOLUMES.items():
        csv_id = _csv_id(lab["job"][lun]["src"])
        assert csv_id == f"{guid}:1048576", csv_id
        assert re.search(rf"^    CSV ID {csv_id} \"{label}\"\s*$", screen, re.M), screen
    # SAN LUNs as TARGET: asks for CHAP; a wrong secret first
    _discover(con)
    con.key("down", "right", "enter")  # second target, "Attach as TARGET"
    con.wait_screen(r"asks for CHAP", timeout=120)
    _form(con, CHAP[0], "wrong-secret", MUTUAL[0], MUTUAL[1])
    con.wait_screen(r"credentials were refused", timeout=120)
    _form(con, CHAP[0], CHAP[1], MUTUAL[0], MUTUAL[1])
    con.wait_screen(r"Attached LUNs \(6\)(?s:.*)TARGET 2\s+/dev/sd\w\s+LUN 2\s+16\.8 MB",
                    timeout=120)
    target3 = r"TARGET 3\s+/dev/sd\w\s+LUN 3\s+16\.8 MB\s+ntfs \"Old-Vol3\"(?s:.*)CSV ID"
    for _ in range(8):  # the focus down the list, until TARGET 3's lines are in view
        if re.search(target3, con.text()):
            break
        con.key("down", pause=0.8)
    screen = con.wait_screen(target3, timeout=60)
    assert re.search(r"TARGET 1\s+/dev/sd\w\s+LUN 1\s+33\.6 MB", screen), screen
    assert re.search(r"TARGET 2\s+/dev/sd\w\s+LUN 2\s+16\.8 MB\s+no volumes", screen), screen
    old = _csv_id(lab["job"][3]["dst"])
    assert re.search(rf"^    CSV ID {old} \"Old-Vol3\"\s*$", screen, re.M), screen
    con.key("esc")
    guest.wait_menu(timeout=30)
    lab["done"].add("attached")


def test_menu_copies_one_pair(guest, lab):
    _need(lab, "attached")
    _to_main_menu(guest)
    con = guest.console
    con.key("c")
    con.wait_screen(r"choose the SOURCE(?s:.*)bdr-snap  LUN 1", timeout=60)
    _pick(con, r"choose the SOURCE", _lun(BDR, 1))
    con.wait_screen(r"choose the TARGET", timeout=60)
    con.key(*["down"] * 14, pause=0.15)  # to the end of the list: what cannot be chosen
    con.wait_screen(r"cannot be chosen: this is the SOURCE", timeout=30)
    _pick(con, r"choose the TARGET", _lun(SAN, 1), key="up")
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
    with open(lab["src"], "rb") as a, open(lab["dst"], "rb") as b:
        assert a.read() == b.read(SIZE), "the SAN LUN's backing file differs from the snapshot"
        assert b.read() == b"\0" * (32 * MiB - SIZE)  # nothing written past the source's end

    guest.open_shell()
    try:
        text = guest.run(f"cat {report}")
        assert BDR in text and SAN in text
        # the SOURCE LUN is read-only in the kernel, even for a shell command
        src_dev = guest.run(f"readlink -f /dev/disk/by-path/ip-10.0.2.2:{PORT}-iscsi-{BDR}"
                            "-lun-1").strip()
        assert guest.run(f"blockdev --getro {src_dev}").strip() == "1"
        # CHAP secrets appear nowhere: logs, journal, reports
        for secret in (CHAP[1], MUTUAL[1]):
            hits = guest.run(f"grep -rl -- '{secret}' /var/log/rtk; journalctl -b | "
                             f"grep -c -- '{secret}'; true")
            assert hits.strip() == "0", hits
        # --skip-zeros from the thin SOURCE LUN: its deallocated blocks are not read
        san_dev = guest.run(f"readlink -f /dev/disk/by-path/ip-10.0.2.2:{PORT}-iscsi-{SAN}"
                            "-lun-1").strip()
        guest.run(f"blkdiscard -f -z {san_dev}")  # the target reads back zeros
        out = guest.run(f"rtk copy --skip-zeros --chunk-size 1M --mapfile /tmp/thin.map "
                        f"--yes --target-id {serial} {src_dev} {san_dev}; echo rc=$?",
                        timeout=600)
        assert "rc=0" in out, out
        report = re.search(r"report: (\S+)\.txt", out).group(1) + ".json"
        got = guest.run("python3 -c \"import json,sys; c=json.load(open(sys.argv[1]))['copy'];"
                        " print(c['unread_hole_bytes'], '|', c['source_map'])\" " + report)
    finally:
        guest.close_shell()
        guest.wait_menu(timeout=30)
    unread, how = (x.strip() for x in got.strip().splitlines()[-1].split("|"))
    assert how == allocation.SCSI_MAP
    holes = allocation.file_holes(str(lab["src"]), 0, SIZE)  # what tgtd answers from
    whole = sum(MiB for k in range(SIZE // MiB)
                if any(p <= k * MiB and (k + 1) * MiB <= p + n for p, n in holes))
    assert whole and int(unread) == whole, (unread, whole, holes)
    with open(lab["src"], "rb") as a, open(lab["dst"], "rb") as b:
        assert a.read() == b.read(SIZE), "the --skip-zeros copy differs from the snapshot"


# the job's report and each pair's, as one line of JSON (read in the guest); and each
# SOURCE's used-blocks domain mapped again, with its ranges (a report holds only its digest)
JOB_SUMMARY = """
import json, sys
from toolkit.copy import usedblocks
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks
job = json.load(open(sys.argv[1]))
pairs = []
for p in job["pairs"]:
    r = json.load(open(p["report"]["json"]))
    again = usedblocks.used_domain(resolve(r["source"]["node"], list_disks()))
    pairs.append({"result": p["result"], "verified": p["verified"],
                  "target": r["target"]["node"], "cluster": r["cluster"],
                  "domain": r["copy"]["domain"], "verify": r["verify"],
                  "ranges": again.ranges, "digest": again.digest()})
print("JOB=" + json.dumps({"result": job["result"], "order": job["order"], "pairs": pairs}))
"""


def _confirm_targets(con, lab) -> None:
    """The typed confirmation of each TARGET: its own word, the SOURCE's CSV ID beside."""
    for n, lun in enumerate(VOLUMES, 1):
        screen = con.wait_screen(rf"confirm target {n} of 2(?s:.*)Type \S+ to confirm", 90)
        left, right = _columns(screen)
        assert f"CSVID{_csv_id(lab['job'][lun]['src'])}" in left, screen
        assert f"LUN{lun}@" in right and "san-csv" in right, screen
        if lun == 3:  # what is on it now: the old cluster disk
            assert f'CSVID{_csv_id(lab["job"][3]["dst"])}"Old-Vol3"' in right, screen
        word = re.search(r"Type (\S+) to confirm", screen).group(1)
        con.key(*word, pause=0.1)
        con.key("enter")


def test_menu_job_of_two_pairs(guest, lab):
    """SOURCE LUN 2 -> TARGET LUN 2 and SOURCE LUN 3 -> TARGET LUN 3 in one job."""
    _need(lab, "attached")
    _to_main_menu(guest)
    con = guest.console
    con.key("c")
    _pick(con, r"choose the SOURCE", _lun(BDR, 2))
    _pick(con, r"choose the TARGET", _lun(SAN, 2))
    screen = con.start_anyway(r"Type \S+ to confirm", timeout=60)
    assert "Add another pair" in screen, screen
    con.key("down", "right", "enter")  # beside "Start the copy"
    focus = _pick(con, r"choose the SOURCE of pair 2", _lun(BDR, 3))
    assert f'CSV ID {_csv_id(lab["job"][3]["src"])} "Vol2"' in focus, focus
    con.wait_screen(r"choose the TARGET of pair 2", timeout=60)
    _pick(con, r"choose the TARGET of pair 2", _lun(SAN, 3))
    screen = con.wait_screen(r"Disk Copy: 2 pairs(?s:.*)Confirm the 2 targets", timeout=90)
    # the choice beside it ("Every block") is drawn on the first of the lines it wraps to
    assert "(X) Used blocks only (recommended: pair 1: partition 1 (ntfs), pair 2: " \
           "partition 1 (ntfs))" in words(screen).replace("( ) Every block ", ""), screen
    # pair 2, said plainly: its TARGET holds another cluster disk
    old = _csv_id(lab["job"][3]["dst"])
    assert (f"you are about to overwrite disk GUID {OLD_DISK[0]} (Old-Vol3, CSV ID {old}) "
            f"with a copy of disk GUID {VOLUMES[3][0]} (Vol2)") in words(screen), screen
    con.key("enter")  # "Confirm the 2 targets" has the focus
    _confirm_targets(con, lab)
    t0 = time.monotonic()
    screen = con.wait_screen(r"ALL PAIRS COPIED|NOT EVERY PAIR", timeout=900)
    lab["job_seconds"] = round(time.monotonic() - t0)
    assert "ALL PAIRS COPIED, VERIFIED" in screen, screen
    job_report = re.search(r"job report: (\S+)\.txt", screen).group(1) + ".json"
    con.key("enter")
    guest.wait_menu(timeout=30)
    guest.open_shell()
    try:
        script = base64.b64encode(JOB_SUMMARY.encode()).decode()
        out = guest.run(f"echo {script} | base64 -d > /tmp/job.py; "
                        f"/opt/rtk/venv/bin/python /tmp/job.py {job_report}", timeout=300)
    finally:
        guest.close_shell()
        guest.wait_menu(timeout=30)
    job = json.loads(out.split("JOB=", 1)[1].strip())
    assert job["result"] == "ok" and len(job["pairs"]) == 2, job
    # pair 1's target held no partition table; pair 2's held another cluster disk
    assert [p["cluster"]["verdict"] for p in job["pairs"]] == ["target-blank", "different"]
    assert "Old-Vol3" in job["pairs"][1]["cluster"]["text"], job["pairs"][1]["cluster"]
    for lun, pair in zip(VOLUMES, job["pairs"], strict=True):
        assert pair["result"] == "ok" and pair["verified"], pair
        assert pair["verify"]["result"] == "match", pair["verify"]
        assert pair["digest"] == pair["domain"]["digest"], pair  # the copy's domain
        _check_target(lab["job"][lun], pair["domain"], pair["ranges"])
    print(f"two-pair job: {lab['job_seconds']} s from the last confirmation to the result")


def _check_target(j: dict, domain: dict, ranges: list) -> None:
    """On the host: what a used-blocks copy promises, SOURCE and TARGET compared
    (``ranges``: the copy's domain)."""
    src, dst = j["src"].read_bytes(), j["dst"].read_bytes()
    assert _sha(src) == j["hash"], "the SOURCE LUN changed"
    assert domain and domain["summary"].startswith("used blocks of 1 NTFS partition"), domain
    # 4 MiB outside the 12 MiB partition are in it; at least 4 MiB of free NTFS space not
    assert sum(n for _p, n in ranges) == domain["bytes"] < JOB_SIZE - 4 * MiB, domain
    for pos, length in ranges:  # every byte the copy's domain names
        assert src[pos:pos + length] == dst[pos:pos + length], (pos, length)
    # the partition table, and everything outside the partition (no tool vouches for it)
    assert gpt_facts(j["src"]) == gpt_facts(j["dst"])
    _guid, sector, [(_n, first, last)] = gpt_facts(j["dst"])
    start, end = first * sector, (last + 1) * sector
    assert src[:start] == dst[:start] and src[end:] == dst[end:]
    # the free space was not copied: the target keeps its own old data there
    assert src[start:end] != dst[start:end]
    with loop_device(j["dst"]) as dev:
        run("ntfsfix", "-n", f"{dev}p1")
        for name, data in j["files"].items():
            got = subprocess.run(["ntfscat", f"{dev}p1", name], check=True,
                                 capture_output=True).stdout
            assert _sha(got) == _sha(data), name


def test_no_chap_secret_reached_the_screen(guest, lab):
    _need(lab, "attached")
    for secret in (CHAP[1], MUTUAL[1]):
        assert secret not in guest.console.raw_text(), "a CHAP secret reached the screen"
