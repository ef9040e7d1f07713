"""A small, real Debian disk image for the Linux initramfs tests, made from the ISO build's
chroot (build/iso/chroot: Debian 13 with initramfs-tools, busybox and the 6.12 kernel).

The root is a pruned copy of it: no apt lists or caches, documentation, firmware, the
toolkit's venv, and of the kernel's modules only the storage, filesystem and library
ones (depmod run again in the copy). Its initramfs is built on the host in a chroot with
``MODULES=list`` and an empty module list, as one made on another machine would be: it
lacks the NVMe and virtio-scsi modules. Then the image's own configuration is set to
``MODULES=dep`` (what a system tuned for its hardware has). The disk: GPT, p1 /boot
(ext4), p2 the root (ext4), with an fstab naming both by UUID, plus one entry whose UUID
is on no partition (:data:`MISSING_UUID`). :func:`lvm_disk_image`: the same with the root
on a logical volume of an LVM physical volume (p2).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
# build_iso.sh leaves it there (its lb clean runs before the build, not after)
CHROOT = Path(os.environ.get("RTK_BUILD_DIR", ROOT / "build")) / "iso" / "chroot"
MiB = 1024 * 1024
BOOT_UUID = "0b0b0b0b-1111-4222-8333-444455556666"
ROOT_UUID = "7007f007-1111-4222-8333-444455556666"
MISSING_UUID = "deadbeef-1111-4222-8333-444455556666"
EXCLUDE = ("./opt", "./var/cache", "./var/lib/apt", "./var/log", "./usr/share/doc",
           "./usr/share/man", "./usr/share/locale", "./usr/share/i18n", "./usr/share/info",
           "./usr/share/X11", "./usr/share/consolefonts", "./usr/share/python-wheels",
           "./usr/lib/firmware", "./usr/lib/python3*", "./usr/lib/modules",
           "./usr/lib/x86_64-linux-gnu/libicudata*", "./boot/initrd.img*", "./initrd.img*",
           "./vmlinuz*", "./root/*", "./tmp/*", "./proc/*", "./sys/*", "./dev/*", "./run/*")
MODULE_DIRS = ("kernel/fs/ext4", "kernel/fs/jbd2", "kernel/fs/mbcache.ko*", "kernel/lib",
               "kernel/crypto", "kernel/block", "kernel/arch", "kernel/drivers/block",
               "kernel/drivers/nvme", "kernel/drivers/scsi", "kernel/drivers/ata",
               "kernel/drivers/virtio", "kernel/drivers/md", "kernel/drivers/message")


def run(*cmd: str, **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr[-2000:]}{p.stdout[-2000:]}"
    return p.stdout


def missing() -> str | None:
    """Why the image cannot be made here (None: it can)."""
    if not (CHROOT / "usr" / "sbin" / "mkinitramfs").exists():
        return f"no Debian chroot with initramfs-tools at {CHROOT} (./build_iso.sh makes it)"
    return None


def kernel_version() -> str:
    return sorted(os.listdir(CHROOT / "usr" / "lib" / "modules"))[-1]


def in_chroot(root: Path, *cmd: str) -> str:
    """``cmd`` run in ``root`` with chroot (the image's own programs)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "HOME": "/root"}
    return run("chroot", str(root), *cmd, env=env)


@contextlib.contextmanager
def pseudo(root: Path):
    """The host's /dev, /proc and /sys bound into ``root`` meanwhile."""
    done = []
    try:
        for d in ("dev", "proc", "sys"):
            run("mount", "--bind", f"/{d}", str(root / d))
            done.append(root / d)
        yield
    finally:
        for d in reversed(done):
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def pruned_root(dest: Path) -> str:
    """The pruned Debian root at ``dest`` (made); its kernel version."""
    dest.mkdir(parents=True)
    version = kernel_version()
    excl = [f"--exclude={e}" for e in EXCLUDE]
    tar = subprocess.Popen(["tar", "-C", str(CHROOT), *excl, "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    run("tar", "-C", str(dest), "-xf", "-", stdin=tar.stdout)
    assert tar.wait() == 0
    mods = f"usr/lib/modules/{version}"
    (dest / mods).mkdir(parents=True)
    run("sh", "-c", f"cd {CHROOT / mods} && tar -cf - modules.order modules.builtin* "
        f"{' '.join(MODULE_DIRS)} | tar -C {dest / mods} -xf -")
    in_chroot(dest, "depmod", "-a", version)
    (dest / "boot" / f"vmlinuz-{version}").write_bytes(
        (CHROOT / "boot" / f"vmlinuz-{version}").read_bytes())
    # LVM as Debian installs it (the ISO's hook 0220 turns autoactivation off: a system
    # with it would not activate its own root volume group at boot)
    (dest / "etc" / "lvm" / "lvmlocal.conf").write_text("local {\n}\n")  # Debian's
    conf = dest / "etc" / "initramfs-tools" / "initramfs.conf"
    conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=list"))
    (dest / "etc" / "initramfs-tools" / "modules").write_text("# no modules\n")
    with pseudo(dest):
        in_chroot(dest, "update-initramfs", "-c", "-k", version)
    conf.write_text(conf.read_text().replace("MODULES=list", "MODULES=dep"))
    (dest / "etc" / "fstab").write_text(
        "# /etc/fstab: static file system information.\n"
        f"UUID={ROOT_UUID}  /      ext4  errors=remount-ro  0 1\n"
        f"UUID={BOOT_UUID}  /boot  ext4  defaults           0 2\n"
        "proc  /proc  proc  defaults  0 0\n"
        f"UUID={MISSING_UUID}  /srv/data  ext4  defaults  0 2\n")
    return version


def listing(root: Path, initramfs: str) -> str:
    """``lsinitramfs`` of ``initramfs`` (a path in the image), run in its chroot."""
    return in_chroot(root, "lsinitramfs", initramfs)


def _filesystems(path: Path, root: Path, boot_mib: int, root_bytes: int) -> tuple:
    """The two ext4 filesystem files made from ``root``: its /boot, and the rest."""
    boot_fs, root_fs = path.with_suffix(".boot"), path.with_suffix(".root")
    staging = root.parent / "boot-staging"
    run("cp", "-a", str(root / "boot"), str(staging))
    run("sh", "-c", f"rm -rf {root / 'boot'}/* ")
    try:
        for fs, size, src, uuid, label in ((boot_fs, boot_mib * MiB, staging, BOOT_UUID,
                                            "boot"),
                                           (root_fs, root_bytes, root, ROOT_UUID, "root")):
            with open(fs, "wb") as f:
                f.truncate(size)
            run("mkfs.ext4", "-q", "-F", "-U", uuid, "-L", label, "-d", str(src), str(fs))
    finally:
        run("sh", "-c", f"cp -a {staging}/. {root / 'boot'}/ && rm -rf {staging}")
    return boot_fs, root_fs


def _place(path: Path, pieces) -> None:
    """Each (filesystem file, byte offset) of ``pieces`` copied into ``path``, then removed."""
    with open(path, "r+b") as f:
        for fs, at in pieces:
            f.seek(at)
            with open(fs, "rb") as src:
                while chunk := src.read(8 * MiB):
                    f.write(chunk)
            fs.unlink()


def _gpt(path: Path, boot_mib: int, rest_mib: int, rest_type: str, rest_name: str) -> None:
    with open(path, "wb") as f:
        f.truncate((2 + boot_mib + rest_mib + 1) * MiB)
    run("sgdisk", "-n", f"1:2048:+{boot_mib}M", "-t", "1:8300", "-c", "1:boot",
        "-n", "2:0:0", "-t", f"2:{rest_type}", "-c", f"2:{rest_name}", str(path))


def disk_image(path: Path, root: Path, boot_mib: int = 64, root_mib: int = 352) -> Path:
    """The GPT disk image: p1 /boot, p2 the root (ext4 made from ``root`` with mkfs -d)."""
    _gpt(path, boot_mib, root_mib, "8300", "root")
    boot_fs, root_fs = _filesystems(path, root, boot_mib, (root_mib - 1) * MiB)
    _place(path, ((boot_fs, MiB), (root_fs, (1 + boot_mib) * MiB)))
    return path


# The LVM image's volume group and logical volume (the root), and the fstab's name of it
VG, LV = "rtkvg", "root"
LV_NODE = f"/dev/mapper/{VG}-{LV}"
# LVM on the host: no device-mapper (the logical volume is made, never activated), no udev
# daemon, and the lock directory in the chroot's /tmp
LVM_CONF = ("devices { obtain_device_list_from_udev = 0 } "
            "activation { udev_sync = 0 udev_rules = 0 } global { locking_dir = \"/tmp\" }")


def _lvm(root: Path, *args: str) -> str:
    """The image's own ``lvm`` (from the ISO build's chroot) run in ``root``."""
    return in_chroot(root, "lvm", *args, "--config", LVM_CONF)


def lvm_disk_image(path: Path, root: Path, boot_mib: int = 64, pv_mib: int = 352) -> Path:
    """The GPT disk image with the root on LVM: p1 /boot (ext4), p2 an LVM physical volume
    of the volume group :data:`VG` whose one logical volume :data:`LV` holds the root
    (ext4). Made on the host without device-mapper: the image's own lvm writes the
    metadata (the volume never activated, ``--zero n``) and the root's filesystem is put
    where the volume's first extent is (the physical volume's pe_start). The fstab names
    the root by its /dev/mapper path, as Debian's installer writes it."""
    _gpt(path, boot_mib, pv_mib, "8e00", "lvm")
    pv_at = (1 + boot_mib) * MiB
    fstab = root / "etc" / "fstab"
    fstab.write_text(fstab.read_text().replace(f"UUID={ROOT_UUID} ", f"{LV_NODE} "))
    p2 = json.loads(run("sfdisk", "--json", str(path)))["partitiontable"]["partitions"][1]
    assert p2["start"] * 512 == pv_at, p2
    loop = run("losetup", "-f", "--show", "-o", str(pv_at), "--sizelimit",
               str(p2["size"] * 512), str(path)).strip()
    try:
        with pseudo(root):
            on = ("--devices", loop)
            _lvm(root, "pvcreate", *on, "-y", loop)
            _lvm(root, "vgcreate", *on, VG, loop)
            _lvm(root, "lvcreate", *on, "--driverloaded", "n", "--activate", "n", "--zero",
                 "n", "-y",
                 "-l", "100%FREE", "-n", LV, VG)
            pe_start = int(_lvm(root, "pvs", *on, "--noheadings", "--nosuffix", "--units",
                                "b", "-o", "pe_start", loop).strip())
            lv = _lvm(root, "lvs", *on, "--noheadings", "--nosuffix", "--units", "b",
                      "-o", "lv_size,seg_pe_ranges", f"{VG}/{LV}").split()
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert lv[1] == f"{loop}:0-{int(lv[0]) // (4 * MiB) - 1}", lv  # from extent 0, 4 MiB
    boot_fs, root_fs = _filesystems(path, root, boot_mib, int(lv[0]))
    _place(path, ((boot_fs, MiB), (root_fs, pv_at + pe_start)))
    return path


def module_image(tmp_path_factory):
    """For a module-scoped fixture: a pruned Debian root and the GPT disk image made of it
    (``work``, ``root``, ``version``, ``path``); skipped with the reason when the ISO
    build's chroot is absent."""
    import pytest
    why = missing()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("linux-image")
    version = pruned_root(work / "root")
    return SimpleNamespace(work=work, root=work / "root", version=version,
                           path=disk_image(work / "disk.img", work / "root"))


SESSION_TEMP: Path | None = None  # this pytest run's base temporary directory (conftest)


def our_mounts() -> list[str]:
    """The mounts the restore's Linux step made (``rtk-linux-*``) still there, of this
    pytest run only (the tests give the step a directory under its base temporary
    directory): another run on the machine at the same time has its own."""
    with open("/proc/self/mounts") as f:
        return [ln for ln in f if "rtk-linux-" in ln
                and (SESSION_TEMP is None or ln.split()[1].startswith(f"{SESSION_TEMP}/"))]


@contextlib.contextmanager
def held_images(loops, tmp_path: Path):
    """Yields ``make(image_path, mode="on")``: a copy of the image on a loop device held
    by the write gate, as the restore leaves it for its Linux step; returns ``(dev, plan,
    res, hold)``. Every hold closed at the end."""
    from toolkit.disks import gate
    from toolkit.disks.endpoint import resolve
    from toolkit.disks.inventory import list_disks
    from toolkit.restore import RestoreOptions, contents
    holds = []

    def make(image_path: Path, mode: str = "on"):
        copy = tmp_path / "disk.img"
        run("cp", "--sparse=always", str(image_path), str(copy))
        dev = loops(copy, partitions=True)
        target = resolve(dev, list_disks())
        hold = gate.open_target(target)
        holds.append(hold)
        plan = SimpleNamespace(options=RestoreOptions(linux_initramfs=mode,
                                                      tmpdir=str(tmp_path)), target=target)
        return dev, plan, SimpleNamespace(contents=contents.inspect_disk(dev), warnings=[]), hold
    try:
        yield make
    finally:
        for h in holds:
            h.close()


def nvme_sysfs(where: Path, disk: str) -> str:
    """A sysfs tree where ``disk`` hangs off a PCI function bound to the nvme driver (what
    the live system shows for an NVMe target)."""
    pci = where / "devices" / "pci0000:00" / "0000:00:04.0"
    (pci / "nvme" / "nvme0").mkdir(parents=True)
    (where / "bus" / "pci" / "drivers" / "nvme").mkdir(parents=True)
    (pci / "driver").symlink_to(where / "bus" / "pci" / "drivers" / "nvme")
    (where / "block" / disk).mkdir(parents=True)
    (where / "block" / disk / "device").symlink_to(pci / "nvme" / "nvme0")
    return str(where)
