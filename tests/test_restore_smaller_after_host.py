"""Onto a smaller disk, what follows the shrink (review helper-58, each shown failing on
the old code): a Windows whose NTFS was shrunk is still Windows (ntfsresize marks the
volume for chkdsk, and ntfsls without -f refused it: the driver step did not run and
nothing said so), what e2fsck repaired on the overlay is said after the restore as the
plan promised, and a truncated image is refused as truncated, not with
qemu-storage-daemon's words from the shrink planning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import MiB, rtk
from loopdev import loop_device, make_image
from shrink_images import build_shrink_image
from test_windows_drivers_host import build_system_hive, hivexget, run

pytestmark = pytest.mark.host


def _windows_image(tmp_path: Path) -> Path:
    hive = build_system_hive(tmp_path / "SYSTEM")
    img = make_image(tmp_path / "win.img", 500 * MiB)
    run("sgdisk", "-n", "1:2048:0", "-t", "1:0700", str(img))
    with loop_device(img) as dev, tempfile.TemporaryDirectory() as mnt:
        run("mkntfs", "-Q", "-F", "-L", "WINDOWS", f"{dev}p1")
        run("ntfs-3g", f"{dev}p1", mnt)
        try:
            for name, data in {"Windows/System32/ntoskrnl.exe": b"MZ" * 1000,
                               "Windows/System32/config/SYSTEM": hive.read_bytes(),
                               "data/big.bin": os.urandom(40 * MiB)}.items():
                t = Path(mnt) / name
                t.parent.mkdir(parents=True, exist_ok=True)
                t.write_bytes(data)
        finally:
            run("umount", mnt)
    return img


def test_windows_drivers_step_runs_after_an_ntfs_shrink(tmp_path, loops, rtk_dirs, need_root):
    img = _windows_image(tmp_path)
    dev = loops(make_image(tmp_path / "small.img", 256 * MiB))
    r = rtk("restore", str(img), dev, "--yes", "--target-id", os.path.basename(dev),
            "--windows-drivers", "on")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "shrinks from" in r.stderr  # it was fitted to the smaller disk
    rec = json.loads(next(Path(os.environ["RTK_LOG_DIR"]).glob("restore-*.json")).read_text())
    # the restored partition holds Windows: it must be seen, and its drivers made boot-start
    assert [s["os"] for s in rec["disk"]["systems"]] == ["Windows"], rec["disk"]
    assert rec["windows_drivers"] is not None, "the Windows step did not run at all"
    assert rec["windows_drivers"]["partitions"][0]["status"] == "changed", rec["windows_drivers"]
    assert "windows drivers: partition 1: changed" in r.stdout, r.stdout
    # read the hive back from the restored disk
    subprocess.run(["partx", "-a", dev], capture_output=True)  # the shrunk table, read again
    out = subprocess.run(["ntfscat", "-f", f"{dev}p1", "/Windows/System32/config/SYSTEM"],
                         capture_output=True, check=True).stdout
    (tmp_path / "after").write_bytes(out)
    assert hivexget(tmp_path / "after", "\\ControlSet001\\Services\\storahci", "Start") == "0"


def _snapshot_of_a_mounted_ext4(tmp_path: Path) -> Path:
    """The shrink test's ext4 image copied while its filesystem is mounted (a journal to
    replay: e2fsck repairs it on the overlay)."""
    built = build_shrink_image(tmp_path / "ext4.img", "ext4")
    snap = tmp_path / "snapshot.img"
    mnt = tmp_path / "m"
    mnt.mkdir()
    with loop_device(built.path) as dev:
        subprocess.run(["mount", f"{dev}p2", str(mnt)], check=True)
        try:
            (mnt / "new.bin").write_bytes(os.urandom(5 * MiB))
            os.sync()
            subprocess.run(["dd", f"if={dev}", f"of={snap}", "bs=4M", "conv=sparse"],
                           check=True, capture_output=True)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    return snap


def test_e2fsck_changes_on_the_overlay_are_said_after_the_restore(tmp_path, loops, rtk_dirs,
                                                                   need_root):
    snap = _snapshot_of_a_mounted_ext4(tmp_path)
    target = loops(make_image(tmp_path / "small.img", 256 * MiB))
    r = rtk("restore", str(snap), target, "--yes", "--target-id", os.path.basename(target))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "what it changed is said after" in r.stderr
    after = r.stdout + r.stderr.split("what it changed is said after")[1]
    assert "FILE SYSTEM WAS MODIFIED" in after, r.stdout
    assert any(ln.startswith("shrink: ") and "e2fsck" in ln for ln in r.stdout.splitlines()), \
        r.stdout


def test_a_truncated_image_onto_a_smaller_disk_is_refused_as_truncated(tmp_path, loops,
                                                                      rtk_dirs, need_root):
    built = build_shrink_image(tmp_path / "ext4.img", "ext4")
    cut = tmp_path / "cut.img"
    shutil.copyfile(built.path, cut)
    os.truncate(cut, 400 * MiB)  # partition 2 ends at 548 MiB
    big = loops(make_image(tmp_path / "big.img", 600 * MiB))
    r = rtk("restore", str(cut), big, "--yes", "--target-id", os.path.basename(big))
    assert r.returncode == 5 and "truncated" in r.stderr, r.stderr  # the plain refusal
    small = loops(make_image(tmp_path / "small.img", 256 * MiB))
    r = rtk("restore", str(cut), small, "--yes", "--target-id", os.path.basename(small))
    assert r.returncode == 5
    assert "qemu-storage-daemon" not in r.stderr and "node-name" not in r.stderr, r.stderr
    assert "truncated" in r.stderr, r.stderr


def test_unattended_says_the_fit_and_what_e2fsck_changed(tmp_path, loops, rtk_dirs,
                                                         need_root):
    """rtk.mode=restore onto a smaller disk: the check line says the image is larger and
    fitted by shrinking (it said "fits"), and what e2fsck changed on the overlay is on the
    console and in the run's report, as the plan promised (review helper-61: only in the
    inner restore report)."""
    import io

    from conftest import own_disks

    from toolkit.unattended import Console, RunReporter
    from toolkit.unattended import run as urun
    from toolkit.unattended.cmdline import Cmdline
    from toolkit.unattended.plan import read_plan
    medium = tmp_path / "medium"
    (medium / "images").mkdir(parents=True)
    os.rename(_snapshot_of_a_mounted_ext4(tmp_path), medium / "images" / "e.img")
    size = 256 * MiB
    dev = loops(make_image(tmp_path / "small.img", size))
    con = Console(streams=[io.StringIO()])
    text = (f"rtk.mode=restore rtk.image=/images/e.img rtk.disk=rule:transport=loop,"
            f"size={size} rtk.consent=serial:SMALL1 rtk.done=menu")
    out = urun(read_plan(Cmdline(text)), console=con, power=lambda a: None,
               medium=str(medium), list_disks=own_disks(dev, serials={dev: "SMALL1"}),
               reporter=RunReporter(None))
    assert out.status == "ok", out.message
    said = "\n".join(con.lines)
    check = next(ln for ln in con.lines if ln.startswith("check: raw disk image"))
    assert f"larger than {dev} ({size} bytes): fitted to it by shrinking" in check, check
    after = said.split("what it changed is said after", 1)[1]
    assert "shrink: partition 2 (ext4" in after and "FILE SYSTEM WAS MODIFIED" in after, said
    report = json.loads(Path(out.reports["json"]).read_text())
    assert any("CHANGED" in w for w in report["warnings"]), report["warnings"]
    assert "CHANGED" in Path(out.reports["text"]).read_text()
