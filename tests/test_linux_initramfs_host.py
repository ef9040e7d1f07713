"""A Linux image's initramfs rebuilt after a restore, and its fstab checked, on real data:
a pruned Debian 13 root from the ISO build's chroot (tests/linux_images.py) on a GPT disk
(p1 /boot, p2 the root, ext4) on a loop device held by the write gate; the rebuild runs
the image's own update-initramfs in a chroot on this host; ``auto`` on a disk whose
initramfs already holds the module (a fake sysfs names nvme for the loop device) rebuilds
nothing and changes no byte of it (SHA-256 before and after). Also XFS and ext roots whose
/etc/os-release is Debian's symlink, recognised by contents.inspect_disk without a mount,
and ``rtk restore`` of the image. Needs root; the rebuild needs build/iso/chroot.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import linux_images as li
import pytest
from conftest import ROOT, RTK, MiB, rtk

from toolkit.disks import gate
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks
from toolkit.restore import RestoreOptions, contents, fs_files, linux_initramfs, linux_report

pytestmark = pytest.mark.host
run = li.run

OS_RELEASE = 'PRETTY_NAME="Testix 7 (xfs)"\nNAME="Testix"\nID=testix\n'


def _two_partitions(path: Path, size_mib: int = 400) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
    run("sgdisk", "-n", "1:2048:+320M", "-t", "1:8300", "-n", "2:0:0", "-t", "2:8300",
        str(path))
    return path


@pytest.mark.parametrize("fstype", ["xfs", "ext4"])
def test_a_root_with_debians_symlinked_os_release_is_linux(tmp_path, loops, fstype):
    dev = loops(_two_partitions(tmp_path / "disk.img"), partitions=True)
    node = f"{dev}p1"
    run(f"mkfs.{fstype}", "-q", *(["-f"] if fstype == "xfs" else ["-F"]), node)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", node, str(mnt))
    try:
        (mnt / "usr" / "lib").mkdir(parents=True)
        (mnt / "etc").mkdir()
        (mnt / "usr" / "lib" / "os-release").write_text(OS_RELEASE)
        os.symlink("../usr/lib/os-release", mnt / "etc" / "os-release")
    finally:
        run("umount", str(mnt))
    found = contents.inspect_disk(dev)
    part = found["partitions"][0]
    assert part["fstype"] == fstype and part["os"] == "Linux"
    assert found["systems"] == [{"os": "Linux", "partition": 1, "name": "Testix 7 (xfs)"}]
    assert "os" not in found["partitions"][1]  # no filesystem: nothing claimed of it


def test_an_xfs_file_is_read_without_mounting_and_a_missing_one_is_none(tmp_path, loops):
    dev = loops(_two_partitions(tmp_path / "disk.img"), partitions=True)
    node = f"{dev}p1"
    run("mkfs.xfs", "-q", "-f", node)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", node, str(mnt))
    try:
        (mnt / "etc").mkdir()
        (mnt / "etc" / "fstab").write_text("UUID=x / xfs defaults 0 0\n" * 300)  # > 4 KiB
    finally:
        run("umount", str(mnt))
    text = fs_files.xfs_file(node, "/etc/fstab")
    assert text == "UUID=x / xfs defaults 0 0\n" * 300  # whole, over two blocks
    assert fs_files.xfs_file(node, "/etc/nothing") is None
    assert contents.os_release(node, "xfs") is None


# --- the rebuild, on a real Debian root ---------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory, need_root):
    return li.module_image(tmp_path_factory)


@pytest.fixture
def held(loops, rtk_dirs, tmp_path):
    with li.held_images(loops, tmp_path) as make:
        yield make


def _initramfs_listing(image, dev: str, tmp_path: Path) -> str:
    """The initramfs on the disk's /boot partition, listed by the image's lsinitramfs."""
    name = f"initrd.img-{image.version}"
    out = image.root / "tmp" / name
    run("debugfs", "-R", f"dump /{name} {out}", f"{dev}p1")
    try:
        return li.listing(image.root, f"/tmp/{name}")
    finally:
        out.unlink()


def test_rebuild_adds_the_missing_controller_module_and_checks_fstab(image, held, tmp_path):
    dev, plan, res, hold = held(image.path)
    assert res.contents["systems"][0]["name"].startswith("Debian GNU/Linux")
    assert "/nvme.ko" not in _initramfs_listing(image, dev, tmp_path)
    root = next(p for p in res.contents["partitions"] if p.get("os") == "Linux")
    out = linux_initramfs.fix_root(dev, root, res.contents["partitions"], "nvme",
                                   str(tmp_path), lambda nodes: hold.lend(*nodes))
    assert out.status == "rebuilt", out
    assert out.tool == "update-initramfs"
    (k,) = out.kernels
    assert k["version"] == image.version and k["file"] == f"/boot/initrd.img-{image.version}"
    assert k["contains_module"] is True and k["state"] == "module", k
    assert out.changes == ["/etc/initramfs-tools/modules: nvme added"]
    (note,) = out.notes  # auto looked first, without writing
    assert note.startswith(f"before: kernel {image.version}: /boot/initrd.img-{image.version}, ")
    assert note.endswith(" bytes: does NOT hold nvme: rebuilt"), note
    assert "/nvme.ko" in _initramfs_listing(image, dev, tmp_path)  # on the disk itself
    assert k["size"] > 1 * MiB
    by_line = {c["line"]: c for c in out.fstab}
    assert by_line[2]["ok"] and by_line[2]["partition"] == 2
    assert by_line[3]["ok"] and by_line[3]["partition"] == 1
    assert 4 not in by_line  # proc: not a device
    assert not by_line[5]["ok"]
    assert by_line[5]["message"] == (
        f"fstab line 5: UUID={li.MISSING_UUID} (/srv/data) is on no partition of this disk "
        f"({dev}): the system would stop at boot waiting for it")
    assert li.our_mounts() == []
    assert not [d for d in os.listdir(tmp_path) if d.startswith("rtk-linux-")]
    # the gate holds the whole disk again
    assert hold.fd >= 0 and hold.lent is None


def test_the_step_without_a_known_controller_and_off(image, held, tmp_path):
    dev, plan, res, hold = held(image.path)
    record = linux_initramfs.run(plan, res, hold)  # a loop device: no controller
    (r,) = record["roots"]
    assert r["status"] == "rebuilt" and r["partition"] == 2
    assert r["kernels"][0]["module"] is None
    assert "the target's controller module is not known" in r["kernels"][0]["message"]
    assert r["changes"] == []
    assert any(f"UUID={li.MISSING_UUID}" in w for w in res.warnings), res.warnings
    rows = dict(linux_report.report_rows(record))
    assert rows["partition 2"].startswith("rebuilt: update-initramfs")
    plan.options.linux_initramfs = "auto"
    before = _digest(plan)
    (r,) = linux_initramfs.run(plan, res, hold)["roots"]
    assert r["status"] == "skipped" and r["kernels"] == [], r
    assert r["message"] == ("the target's storage controller is not known (a loop device, "
                            "iSCSI or USB names none): not rebuilt (--linux-initramfs on "
                            "rebuilds it anyway)")
    assert [c["line"] for c in r["fstab"] if not c["ok"]] == [5]  # the fstab still checked
    assert _digest(plan) == before
    plan.options.linux_initramfs = "off"
    off = linux_initramfs.run(plan, res, hold)
    assert off == {"mode": "off", "roots": [],
                   "message": "not looked at: the Linux initramfs option is off"}
    assert li.our_mounts() == []


def _digest(plan) -> str:
    """The SHA-256 of the whole restored disk: its image file under the loop device (the
    loop writes into that file's page cache: what a mount changed is seen here)."""
    os.sync()
    h = hashlib.sha256()
    with open(Path(plan.options.tmpdir) / "disk.img", "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _read_only(node: str) -> bool:
    return run("blockdev", "--getro", node).strip() == "1"


def test_auto_leaves_an_initramfs_that_holds_the_module_byte_for_byte(image, held, tmp_path):
    dev, plan, res, hold = held(image.path, "on")
    plan.options.sys_root = li.nvme_sysfs(tmp_path / "sys", os.path.basename(dev))
    (r,) = linux_initramfs.run(plan, res, hold)["roots"]  # on: nvme added and rebuilt
    assert r["status"] == "rebuilt" and r["kernels"][0]["contains_module"] is True, r
    plan.options.linux_initramfs = "auto"
    res.warnings = []
    before = _digest(plan)
    record = linux_initramfs.run(plan, res, hold)
    assert record["target_controller"]["driver"] == "nvme"
    (r,) = record["roots"]
    assert r["status"] == "skipped", r
    assert r["message"] == (f"the initramfs of every kernel ({image.version}) already holds "
                            "nvme: not rebuilt (--linux-initramfs on rebuilds it anyway)")
    (k,) = r["kernels"]
    assert k["contains_module"] is True and k["state"] == "module"
    assert k["message"] == f"/boot/initrd.img-{image.version}, {k['size']} bytes: holds nvme"
    assert r["changes"] == [] and r["tool"] == "update-initramfs"
    (missing,) = [c for c in r["fstab"] if not c["ok"]]  # the fstab is still checked, said
    assert missing["line"] == 5
    assert res.warnings == [f"Linux, partition 2: {missing['message']}"]
    assert _digest(plan) == before  # not a byte of the disk changed
    assert li.our_mounts() == []
    assert not [d for d in os.listdir(tmp_path) if d.startswith("rtk-linux-")]
    assert not _read_only(f"{dev}p1") and not _read_only(f"{dev}p2")  # as they were
    assert hold.fd >= 0 and hold.lent is None


def test_a_failed_rebuild_is_said_and_leaves_no_mount(image, held, tmp_path, monkeypatch):
    dev, plan, res, hold = held(image.path)
    monkeypatch.setattr(linux_initramfs, "rebuild_argv",
                        lambda *a: ["sh", "-c", "echo 'E: no space left' >&2; exit 3"])
    record = linux_initramfs.run(plan, res, hold)
    (r,) = record["roots"]
    assert r["status"] == "failed"
    assert r["kernels"][0]["message"] == "sh failed: E: no space left (exit 3)"
    assert any("Linux initramfs, partition 2" in w for w in res.warnings)
    assert li.our_mounts() == []
    assert hold.fd >= 0


def _the_brought_initramfs_alone(dev: str, initrd: str, brought: str) -> None:
    """/boot (partition 1) holds the initramfs the image brought (SHA-256 ``brought``),
    neither update-initramfs's NAME.new nor its NAME.dpkg-bak; nothing of ours mounted."""
    boot = run("debugfs", "-R", "ls -l /", f"{dev}p1")
    assert f"{initrd}.new" not in boot and f"{initrd}.dpkg-bak" not in boot, boot
    got = subprocess.run(["debugfs", "-R", f"cat /{initrd}", f"{dev}p1"],
                         capture_output=True).stdout
    assert hashlib.sha256(got).hexdigest() == brought
    assert li.our_mounts() == []


def test_a_full_boot_is_said_as_such_and_keeps_the_old_initramfs(image, held, loops,
                                                                  tmp_path):
    """/boot (partition 1) filled to the last block before the rebuild: the image's own
    update-initramfs fails; the message says there is no space (its last line is only
    "failed for ..."), the initramfs the image brought is intact, no NAME.dpkg-bak left."""
    full = tmp_path / "full.img"
    run("cp", "--sparse=always", str(image.path), str(full))
    initrd = f"initrd.img-{image.version}"
    mnt = tmp_path / "boot"
    mnt.mkdir()
    run("mount", f"{loops(full, partitions=True)}p1", str(mnt))
    try:
        brought = hashlib.sha256((mnt / initrd).read_bytes()).hexdigest()
        subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'fill'}", "bs=1M"],
                       capture_output=True)  # ends with "No space left on device"
    finally:
        run("umount", str(mnt))
    dev, plan, res, hold = held(full)
    record = linux_initramfs.run(plan, res, hold)
    (r,) = record["roots"]
    assert r["status"] == "failed", r
    msg = r["kernels"][0]["message"]
    assert msg.startswith("update-initramfs failed") and msg.endswith(
        "no space left on the filesystem of /boot (free some, or grow it)"), msg
    _the_brought_initramfs_alone(dev, initrd, brought)


def test_rtk_restore_rebuilds_and_reports(image, loops, rtk_dirs, tmp_path):
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(os.path.getsize(image.path) + 16 * MiB)
    dev = loops(target)
    r = rtk("restore", str(image.path), dev, "--yes", "--target-id", os.path.basename(dev),
            "--linux-initramfs", "on")  # auto: a loop device names no controller
    assert r.returncode == 0, r.stderr + r.stdout
    assert "linux initramfs: partition 2: rebuilt: update-initramfs" in r.stdout, r.stdout
    assert f"fstab line 5: UUID={li.MISSING_UUID}" in r.stdout
    report = json.loads(Path(r.stdout.split("report: ")[1].split()[0]
                             .replace(".txt", ".json")).read_text())
    (root,) = report["linux_initramfs"]["roots"]
    assert root["kernels"][0]["version"] == image.version
    text = Path(r.stdout.split("report: ")[1].split()[0]).read_text()
    assert "Linux initramfs" in text and f"kernel {image.version}" in text
    assert li.our_mounts() == []


def test_a_root_without_an_initramfs_tool_is_not_mounted_or_changed(tmp_path, loops, rtk_dirs):
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text(OS_RELEASE)
    (src / "etc" / "fstab").write_text("LABEL=nolabel / ext4 defaults 0 1\n")
    disk = _two_partitions(tmp_path / "disk.img")
    dev = loops(disk, partitions=True)
    run("mkfs.ext4", "-q", "-F", "-d", str(src), f"{dev}p2")
    target = resolve(dev, list_disks())
    before = run("sha256sum", f"{dev}p2").split()[0]
    with gate.open_target(target) as hold:
        plan = SimpleNamespace(options=RestoreOptions(tmpdir=str(tmp_path)), target=target)
        res = SimpleNamespace(contents=contents.inspect_disk(dev), warnings=[])
        record = linux_initramfs.run(plan, res, hold)
    (r,) = record["roots"]
    assert r["partition"] == 2 and r["status"] == "skipped"
    assert r["message"] == "the image has neither dracut nor update-initramfs: not rebuilt"
    assert r["fstab"][0]["message"] == (f"fstab line 1: LABEL=nolabel (/) is on no partition "
                                        f"of this disk ({dev}): the system would stop at boot "
                                        "waiting for it")
    assert res.warnings == [f"Linux, partition 2: {r['fstab'][0]['message']}"]
    assert run("sha256sum", f"{dev}p2").split()[0] == before  # never mounted


def _building(sid: int) -> bool:
    """Whether an image's mkinitramfs runs in the session ``sid`` (update-initramfs under
    that restore: not another test's)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                session = int(f.read().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if b"mkinitramfs" in cmd and session == sid:
            return True
    return False


def test_ctrl_c_during_the_rebuild_cancels_and_leaves_the_old_initramfs(image, loops,
                                                                       rtk_dirs, tmp_path):
    """Ctrl-C at the terminal (SIGINT to the restore's process group) while update-initramfs
    runs: the restore ends "cancelled" (exit 1), not "ok"; the image's initramfs is the one
    it brought, and update-initramfs's half-built NAME.new is gone."""
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(os.path.getsize(image.path) + 16 * MiB)
    dev = loops(target, partitions=True)
    initrd = f"initrd.img-{image.version}"
    brought = hashlib.sha256((image.root / "boot" / initrd).read_bytes()).hexdigest()
    p = subprocess.Popen([*RTK, "restore", str(image.path), dev, "--yes", "--target-id",
                          os.path.basename(dev), "--linux-initramfs", "on"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _building(p.pid) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        time.sleep(0.5)  # well into the build: its NAME.new begun
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 1, out + err
    assert "cancelled after the image was written (restored" in out + err, out + err
    assert "verified)" in out + err
    _the_brought_initramfs_alone(dev, initrd, brought)
    assert not _building(p.pid)
    assert "failed: Generating" not in out + err, out + err  # a cancel, not a failure
    assert "cancelled (Ctrl-C) during the rebuild" in out + err, out + err
