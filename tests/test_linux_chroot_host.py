"""A malicious or odd Linux image cannot reach the live system through the initramfs
rebuild: the pruned Debian root of tests/linux_images.py with a symlink of its own
(``/boot/initrd.img-V.new`` onto the live /run), a build whose programs climb out through
``/proc/PID/root`` and leave a process running, the configuration the toolkit writes
behind a symlink onto a tmpfs, and the fresh /dev and read-only /sys the chroot gets.
Also an XFS fstab longer than one block read whole without a mount. Needs root.
"""

from __future__ import annotations

import os
from pathlib import Path

import linux_images as li
import pytest
from conftest import MiB

from toolkit.disks import gate
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks
from toolkit.restore import contents, fs_files, linux_chroot, linux_initramfs, linux_mounts
from toolkit.restore.linux_chroot import OutOfImage

pytestmark = pytest.mark.host
run = li.run


@pytest.fixture(scope="module")
def image(tmp_path_factory, need_root):
    return li.module_image(tmp_path_factory)


def _fix(image_path: Path, loops, tmp_path: Path, module: str | None = "nvme"):
    """fix_root (mode on) of the disk ``image_path`` (copied) held by the write gate."""
    copy = tmp_path / "disk.img"
    run("cp", "--sparse=always", str(image_path), str(copy))
    dev = loops(copy, partitions=True)
    with gate.open_target(resolve(dev, list_disks())) as hold:
        found = contents.inspect_disk(dev)
        root = next(p for p in found["partitions"] if p.get("os") == "Linux")
        return linux_initramfs.fix_root(dev, root, found["partitions"], module,
                                        str(tmp_path), lambda nodes: hold.lend(*nodes),
                                        "on")


def test_a_symlink_onto_the_live_run_is_not_followed_and_the_kernel_failed(
        image, loops, rtk_dirs, tmp_path):
    victim = Path("/run") / f"rtk-test-victim-{os.getpid()}"
    assert not victim.exists()
    link = image.root / "boot" / f"initrd.img-{image.version}.new"
    link.symlink_to(victim)
    try:
        evil = li.disk_image(image.work / "victim.img", image.root)
    finally:
        link.unlink()
    try:
        out = _fix(evil, loops, tmp_path)
        assert not victim.exists()  # the live system's /run never seen by the image
    finally:
        if victim.exists():
            victim.unlink()
    assert out.status == "failed", out
    (k,) = out.kernels
    assert k["failed"] and k["message"] == (
        f"/boot/initrd.img-{image.version} is not a regular file in the "
        "image (a symlink?): not used")
    assert li.our_mounts() == []


SCRIPT = ("sleep 4242 & for p in /proc/[0-9]*; do echo out > $p/root{escaped} 2>/dev/null; "
          "done; ls /proc | grep -c '^[0-9]' >&2; exit 3")


def _sleepers() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == b"sleep\x004242\x00":
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_the_images_programs_see_only_their_own_processes_and_all_die(
        image, loops, rtk_dirs, tmp_path, monkeypatch):
    escaped = tmp_path / "escaped"
    monkeypatch.setattr(linux_initramfs, "rebuild_argv",
                        lambda *a: ["sh", "-c", SCRIPT.format(escaped=escaped)])
    try:
        out = _fix(image.path, loops, tmp_path)
        left = _sleepers()
    finally:
        for pid in _sleepers():  # the ones this test's build started (on a failure)
            os.kill(pid, 9)
    assert not escaped.exists()  # no /proc/PID/root led to the live system's /
    assert left == []  # the background process died with the build
    (k,) = out.kernels
    # /proc: only sh, ls, grep and the sleep of its own namespace (and maybe its subshell)
    assert k["message"].startswith("sh failed: ") and \
        int(k["message"].split(": ")[1].split()[0]) <= 5, k
    assert li.our_mounts() == []


def test_the_chroot_gets_a_fresh_dev_with_the_disks_nodes_and_a_read_only_sys(
        loops, tmp_path):
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MiB)
    run("sgdisk", "-n", "1:2048:0", str(disk))
    dev = loops(disk, partitions=True)
    where = tmp_path / "root"
    for d in ("dev", "sys", "tmp", "run", "proc"):
        (where / d).mkdir(parents=True)
    mounts = linux_mounts.Mounts()
    try:
        linux_chroot.pseudo(str(where), mounts,
                            linux_chroot.disk_nodes([{"node": f"{dev}p1"}]))
        names = sorted(os.listdir(where / "dev"))
        assert os.stat(where / "dev" / os.path.basename(dev)).st_rdev == os.stat(dev).st_rdev
        with pytest.raises(OSError, match="Read-only file system"):
            (where / "sys" / "kernel" / "uevent_helper").write_text("x")
        run_fs = os.stat(where / "run").st_dev
        assert run_fs not in (os.stat("/run").st_dev, os.stat(where).st_dev)
    finally:
        mounts.close()
    assert names == sorted(["console", "fd", "full", "null", "pts", "random", "shm",
                            "stderr", "stdin", "stdout", "tty", "urandom", "zero",
                            os.path.basename(dev), f"{os.path.basename(dev)}p1"])
    assert mounts.left == [] and os.listdir(where / "dev") == []


def test_the_configuration_is_never_written_onto_a_tmpfs_behind_a_symlink(need_root,
                                                                        tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "run").mkdir()
    run("mount", "-t", "tmpfs", "tmpfs", str(root / "run"))
    try:
        (root / "run" / "x").mkdir()
        (root / "etc" / "dracut.conf.d").symlink_to("../run/x")
        with pytest.raises(OutOfImage, match="leads onto a filesystem that is not the "
                           "image's own"):
            linux_initramfs.add_module_config("dracut", str(root), "virtio_scsi")
        assert os.listdir(root / "run" / "x") == []
    finally:
        run("umount", str(root / "run"))


@pytest.mark.parametrize("block", [4096, 1024])
def test_an_xfs_fstab_of_1_5_kib_is_read_whole(loops, tmp_path, block):
    img = tmp_path / "xfs.img"
    with open(img, "wb") as f:
        f.truncate(320 * MiB)
    dev = loops(img)
    run("mkfs.xfs", "-q", "-f", "-b", f"size={block}", dev)
    text = "".join(f"UUID=0000-{n:04d} /srv/d{n:04d} xfs defaults 0 0\n" for n in range(36))
    assert 1400 < len(text) < 1700
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", dev, str(mnt))
    try:
        (mnt / "etc").mkdir()
        (mnt / "etc" / "fstab").write_text(text)
    finally:
        run("umount", str(mnt))
    assert fs_files.xfs_file(dev, "/etc/fstab") == text


def test_a_boot_fstab_puts_on_no_partition_is_not_rebuilt_into_the_roots_own(
        image, loops, rtk_dirs, tmp_path):
    """fstab's /boot by a kernel name that is on no partition of this disk (``/dev/sda1``,
    after the controller change): the root's own /boot directory is not what the machine
    boots from, so nothing is rebuilt there and the step says why (it said "rebuilt")."""
    fstab = image.root / "etc" / "fstab"
    kept = fstab.read_text()
    fstab.write_text("\n".join(
        "/dev/sda1  /boot  ext4  defaults  0 2" if "/boot" in ln else ln
        for ln in kept.splitlines()) + "\n")
    try:
        odd = li.disk_image(image.work / "sda-boot.img", image.root)
    finally:
        fstab.write_text(kept)
    out = _fix(odd, loops, tmp_path)
    assert out.status == "failed" and out.warn, out
    assert out.message == ("/boot (/dev/sda1, fstab line 3) is on no partition of this disk: "
                           "the initramfs would be written into the root's own /boot "
                           "directory, which this system does not boot from: not rebuilt")
    assert out.kernels == [] and li.our_mounts() == []


HOSTILE = r"""r=""
mknod /tmp/n b {major} {minor} 2>/dev/null && r="$r mknod"
[ -e /tmp/n ] && printf X 1<>/tmp/n && r="$r wrote-through-mknod"
printf X 2>/dev/null 1<>/evilnode && r="$r the-image-s-node"
mkdir -p /e; chroot /e /x 2>/dev/null; [ $? = 127 ] && r="$r chroot"
mount -t tmpfs x /mnt 2>/dev/null && r="$r mount"
cat /proc/sys/kernel/core_pattern > /tmp/cp
cat /tmp/cp 2>/dev/null > /proc/sys/kernel/core_pattern && r="$r sysctl"
echo h 2>/dev/null > /proc/sysrq-trigger && r="$r sysrq"
(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && r="$r network"
echo "escapes:${{r:- none}}" >&2; exit 3
"""


def test_a_hostile_build_reaches_no_other_disk_nor_the_live_system(
        image, loops, rtk_dirs, tmp_path, monkeypatch):
    """The image's build, as root in its chroot, tries what would write another disk of
    the live system or run code outside: a device node made (mknod) or carried in the
    image, a second chroot (the escape to the live root), a mount, a sysctl
    (core_pattern runs a program outside), sysrq, a TCP connection to the live system.
    None of it works; the other disk is byte for byte as it was."""
    import socket
    victim_img = tmp_path / "victim.img"
    victim_img.write_bytes(b"V" * MiB)
    victim = loops(victim_img)
    rdev = os.stat(victim).st_rdev
    node = image.root / "evilnode"
    os.mknod(node, 0o600 | 0o060000, rdev)  # S_IFBLK
    try:
        hostile = li.disk_image(image.work / "hostile.img", image.root)
    finally:
        node.unlink()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    script = HOSTILE.format(major=os.major(rdev), minor=os.minor(rdev),
                            port=listener.getsockname()[1])
    monkeypatch.setattr(linux_initramfs, "rebuild_argv", lambda *a: ["bash", "-c", script])
    try:
        out = _fix(hostile, loops, tmp_path)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    finally:
        listener.close()
    (k,) = out.kernels
    assert k["message"] == "bash failed: escapes: none (exit 3)", k
    with open(victim, "rb") as f:
        assert f.read() == b"V" * MiB
    assert li.our_mounts() == []
