"""The restore's Linux step on odd images a technician meets (review helper-57, each
finding shown failing on the old code): a named pipe where a module list should be (the
step must not hang nor leave the image mounted), an ISO-8859-1 byte in
/etc/initramfs-tools/modules (no traceback), a symlinked /etc/fstab (followed inside the
image), a root partition with /home on an LVM volume of the same disk (found, not
"missing"), a CD drive line in fstab (not a disk), SUSE's /boot/initrd-VERSION (the file
rebuilt is the one its boot loader loads)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import linux_images as li
import pytest
from conftest import MiB

from toolkit.restore import linux_initramfs

pytestmark = pytest.mark.host
run = li.run
ROOT = Path(__file__).resolve().parent.parent
V = "6.1.0-99-amd64"  # the tiny image's made-up kernel


def _tiny_root(src: Path, fifo: str) -> None:
    """A root that looks like a Debian with initramfs-tools and one kernel; ``fifo``: the
    file of the image made a named pipe (mkfs.ext4 -d copies it as one)."""
    for d in ("etc", "usr/sbin", f"usr/lib/modules/{V}", "boot", "dev", "sys", "proc",
              "tmp", "run"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / "lib").symlink_to("usr/lib")
    (src / "etc/os-release").write_text('PRETTY_NAME="Hostile Linux 1"\nNAME=Hostile\n')
    (src / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (src / "usr/sbin/update-initramfs").write_text("#!/bin/sh\nexit 0\n")
    (src / f"boot/vmlinuz-{V}").write_bytes(b"kernel")
    (src / f"boot/initrd.img-{V}").write_bytes(b"initrd")
    (src / f"usr/lib/modules/{V}/modules.builtin").write_text("")
    os.mkfifo(src / fifo)


def _tiny_disk(tmp_path: Path, fifo: str) -> Path:
    src = tmp_path / "src"
    _tiny_root(src, fifo)
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(40 * MiB)
    run("sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(img))
    fs = tmp_path / "root.fs"
    with open(fs, "wb") as f:
        f.truncate(36 * MiB)
    run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(src), str(fs))
    with open(img, "r+b") as out, open(fs, "rb") as f:
        out.seek(MiB)
        out.write(f.read())
    return img


def _ro(node: str) -> str:
    return run("blockdev", "--getro", node).strip()


def test_a_fifo_in_the_image_neither_hangs_the_step_nor_is_left_mounted(
        loops, tmp_path, need_root):
    """/usr/lib/modules/V/modules.dep a named pipe (nodev does not stop FIFOs): the look
    reads the image's files as regular files only, so the step ends by itself, its record
    printed, nothing mounted, the partition writable again."""
    img = _tiny_disk(tmp_path, f"usr/lib/modules/{V}/modules.dep")
    dev = loops(img, partitions=True)
    sysfs = li.nvme_sysfs(tmp_path / "sys", os.path.basename(dev))
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.Popen([sys.executable, str(ROOT / "tests/linux_step_run.py"), dev,
                          sysfs, str(work)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            for m in reversed(li.our_mounts()):
                subprocess.run(["umount", "-l", m.split()[1]], check=False)
            subprocess.run(["blockdev", "--setrw", f"{dev}p1"], check=False)
    assert p.returncode == 0, (out, err)
    assert '"record"' in out, out
    assert li.our_mounts() == []
    assert _ro(f"{dev}p1") == "0"


@pytest.fixture(scope="module")
def debian(tmp_path_factory, need_root):
    if why := li.missing():
        pytest.skip(why)
    work = tmp_path_factory.mktemp("r60-debian")
    version = li.pruned_root(work / "root")
    return work, work / "root", version


@pytest.fixture
def held(loops, rtk_dirs, tmp_path):
    with li.held_images(loops, tmp_path) as make:
        yield make


def test_a_symlinked_fstab_is_followed_inside_the_image(debian, held, tmp_path):
    """/etc/fstab -> fstab.real: read through the link (debugfs's cat of a symlink is
    empty), so /boot (p1) is mounted, the kernel rebuilt and fstab's lines checked."""
    work, root, version = debian
    fstab = root / "etc" / "fstab"
    real = root / "etc" / "fstab.real"
    text = fstab.read_text()
    fstab.rename(real)
    fstab.symlink_to("fstab.real")
    try:
        path = li.disk_image(work / "symlinked-fstab.img", root)
    finally:
        fstab.unlink()
        real.rename(fstab)
        assert fstab.read_text() == text
    dev, plan, res, hold = held(path)
    root_part = next(p for p in res.contents["partitions"] if p.get("os") == "Linux")
    out = linux_initramfs.fix_root(dev, root_part, res.contents["partitions"], "nvme",
                                   str(tmp_path), lambda nodes: hold.lend(*nodes), "on")
    assert out.status == "rebuilt", out.record()
    assert out.fstab, "fstab's lines checked"
    assert li.our_mounts() == []


def test_home_on_lvm_beside_a_root_partition_and_a_cd_line(debian, held, tmp_path):
    """A root on a partition, /home on a logical volume of the same disk (p2 a physical
    volume, nothing activated), and Debian's CD drive line: the logical volume is found
    by name from LVM's metadata, the CD drive is no disk: neither is a warning."""
    work, root, version = debian
    fstab = root / "etc" / "fstab"
    text = fstab.read_text()
    fstab.write_text("".join(ln for ln in text.splitlines(True) if " /boot " not in ln)
                     .replace(f"UUID={li.MISSING_UUID}  /srv/data", "/dev/mapper/data-home  /home")
                     + "/dev/sr0  /media/cdrom0  udf,iso9660  user,noauto  0 0\n")
    try:
        img = work / "home-on-lvm.img"
        li._gpt(img, 352, 64, "8e00", "lvm")  # p1: root (352 MiB), p2: LVM PV (64 MiB)
        p2 = json.loads(run("sfdisk", "--json", str(img)))["partitiontable"]["partitions"][1]
        loop = run("losetup", "-f", "--show", "-o", str(p2["start"] * 512), "--sizelimit",
                   str(p2["size"] * 512), str(img)).strip()
        try:
            with li.pseudo(root):
                on = ("--devices", loop)
                li._lvm(root, "pvcreate", *on, "-y", loop)
                li._lvm(root, "vgcreate", *on, "data", loop)
                li._lvm(root, "lvcreate", *on, "--driverloaded", "n", "--activate", "n",
                        "--zero", "n", "-y", "-l", "100%FREE", "-n", "home", "data")
        finally:
            subprocess.run(["losetup", "-d", loop], check=False)
        fs = work / "home-on-lvm.root"
        with open(fs, "wb") as f:
            f.truncate(351 * MiB)
        run("mkfs.ext4", "-q", "-F", "-U", li.ROOT_UUID, "-L", "root", "-d", str(root), str(fs))
        li._place(img, ((fs, MiB),))
    finally:
        fstab.write_text(text)
    dev, plan, res, hold = held(img, "auto")
    assert [p.get("fstype") for p in res.contents["partitions"]] == ["ext4", "LVM2_member"]
    record = linux_initramfs.run(plan, res, hold)  # a loop device: no controller known
    (r,) = record["roots"]
    checks = {c["spec"]: c for c in r["fstab"]}
    home = checks["/dev/mapper/data-home"]
    assert home["ok"] and home["volume"] == "data/home", home
    assert "/dev/sr0" not in checks
    assert not any("/dev/mapper/data-home" in w or "/dev/sr0" in w for w in res.warnings), \
        res.warnings
    assert li.our_mounts() == []


def test_suses_initrd_is_the_file_rebuilt(tmp_path_factory, held, tmp_path, need_root):
    """A dracut image with SUSE's /boot/initrd-VERSION (/boot/initrd a link to it): that
    file, the one its boot loader loads, is rebuilt with the module; no other made."""
    import dracut_image as di
    if why := di.missing():
        pytest.skip(why)
    work = tmp_path_factory.mktemp("r60-suse")
    root = work / "root"
    version = li.pruned_root(root)
    name = di.make_dracut(root, version)  # /boot/initrd.img-V, built without nvme
    (root / name.lstrip("/")).rename(root / "boot" / f"initrd-{version}")
    (root / "boot" / "initrd").symlink_to(f"initrd-{version}")
    path = li.disk_image(work / "suse.img", root, boot_mib=di.BOOT_MIB, root_mib=di.ROOT_MIB)
    dev, plan, res, hold = held(path, "auto")
    root_part = next(p for p in res.contents["partitions"] if p.get("os") == "Linux")
    out = linux_initramfs.fix_root(dev, root_part, res.contents["partitions"], "nvme",
                                   str(tmp_path), lambda nodes: hold.lend(*nodes))
    assert out.status == "rebuilt" and out.tool == "dracut", out.record()
    (k,) = out.kernels
    assert k["file"] == f"/boot/initrd-{version}" and k["contains_module"] is True, k
    listing = run("debugfs", "-R", "ls -l /", f"{dev}p1")
    assert f"initramfs-{version}.img" not in listing, listing
    assert li.our_mounts() == []


def test_a_latin1_comment_in_initramfs_tools_modules(debian, held, tmp_path):
    """/etc/initramfs-tools/modules with an ISO-8859-1 comment (an old system's 'Module
    für ...'): read with the byte replaced, the module added, no traceback."""
    work, root, version = debian
    mods = root / "etc" / "initramfs-tools" / "modules"
    text = mods.read_bytes()
    mods.write_bytes(text + "# Module f\u00fcr den RAID-Controller\n".encode("latin-1"))
    try:
        path = li.disk_image(work / "latin1.img", root)
    finally:
        mods.write_bytes(text)
    dev, plan, res, hold = held(path, "on")
    plan.options.sys_root = li.nvme_sysfs(tmp_path / "sys", os.path.basename(dev))
    record = linux_initramfs.run(plan, res, hold)
    (r,) = record["roots"]
    assert r["status"] == "rebuilt", r
    assert r["changes"] == ["/etc/initramfs-tools/modules: nvme added"], r
    assert li.our_mounts() == []
    assert hold.fd >= 0 and hold.lent is None


def test_a_hardware_name_of_the_disk_written_is_found_and_said_to_be_one(tmp_path, loops):
    """fstab naming /boot by the disk's WWN (/dev/disk/by-id/wwn-...-part1, what some
    installers write) on the disk restored here: found through the live system's link
    (it was "on no partition of this disk" and /boot was not mounted for the rebuild),
    with the advice that a replacement disk will not have that name; a name whose link
    is absent says it names another disk's hardware (review helper-57, left over)."""
    from toolkit.restore import linux_fstab
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    run("sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(img))
    loop = loops(img, partitions=True)
    part = f"{loop}p1"
    by_id = Path("/dev/disk/by-id")
    link = by_id / f"wwn-0x5000rtktest{os.getpid()}-part1"
    made = [d for d in (by_id, by_id.parent) if not d.exists()]  # the host has no udev
    by_id.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(f"../../{Path(part).name}")
        volumes = [{"node": part, "number": 1, "fs_uuid": "u1", "label": None}]
        text = f"{link} /boot ext4 defaults 0 2\n/dev/disk/by-id/wwn-0x5000gone-part2 /srv " \
            "ext4 defaults 0 2\n"
        found, gone = linux_fstab.check(text, volumes, loop)
        assert found.ok and found.partition == 1, found.message
        assert "hardware identity, which a replacement disk will not have" in found.message
        assert linux_fstab.find(str(link), volumes) is volumes[0]
        assert not gone.ok and gone.partition is None
        assert f"names a disk by its hardware identity (model and serial, WWN or " \
            f"controller port), which the disk written here ({loop}) does not have" \
            in gone.message
    finally:
        link.unlink(missing_ok=True)
        for d in made:
            d.rmdir()


def test_an_xfs_fstab_behind_a_link_with_a_space_is_said_unread(tmp_path, loops):
    """xfs_db splits its commands at spaces: an fstab behind a link to "fstab real" on
    XFS read as no fstab (review helper-60); it is "there but not read", which stops the
    rebuild (where /boot is is unknown). Made through a mount: a protofile cannot name
    such a link target."""
    from toolkit.restore.fs_files import Unreadable, read_file
    img = tmp_path / "xfs.img"
    with open(img, "wb") as f:
        f.truncate(300 * MiB)
    run("mkfs.xfs", "-q", "-f", str(img))
    dev = loops(img)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", dev, str(mnt))
    try:
        (mnt / "etc").mkdir()
        (mnt / "etc/fstab real").write_text("LABEL=root / xfs defaults 0 1\n")
        (mnt / "etc/fstab").symlink_to("fstab real")
    finally:
        run("umount", str(mnt))
    with pytest.raises(Unreadable, match=r"a name with a space cannot be given to xfs_db"):
        read_file(dev, "xfs", "/etc/fstab")
    out = linux_initramfs.fix_root("/dev/loop9", {"node": dev, "fstype": "xfs", "number": 1},
                                   [], "nvme")
    assert out.status == "failed" and out.message.endswith(
        "where /boot is (and the rest of fstab) is unknown: not rebuilt"), out.message
