"""A dracut image's initramfs rebuilt after a restore, on real data: the pruned Debian 13
root of tests/linux_images.py with Debian's dracut-core unpacked into it and its
initramfs built by that dracut without the NVMe driver (tests/dracut_image.py), on a GPT
disk (p1 /boot, p2 the root, ext4) on a loop device held by the write gate; the rebuild
runs the image's own dracut in a chroot on this host, adds nvme to
/etc/dracut.conf.d/90-rtk-storage.conf and the new initramfs, listed by the image's own
lsinitrd, holds it; ``auto`` with a fake sysfs naming nvme then rebuilds nothing. Needs
root, build/iso/chroot and the .deb files (python3 tests/dracut_debs.py fetches them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import dracut_image as di
import linux_images as li
import pytest
from conftest import MiB

from toolkit.restore import linux_initramfs

pytestmark = pytest.mark.host
run = li.run

CONF = "/etc/dracut.conf.d/90-rtk-storage.conf"


@pytest.fixture(scope="module")
def image(tmp_path_factory, need_root):
    return di.module_image(tmp_path_factory)


@pytest.fixture
def held(loops, rtk_dirs, tmp_path):
    with li.held_images(loops, tmp_path) as make:
        yield make


def _initramfs_listing(image, dev: str) -> str:
    """The initramfs on the disk's /boot partition, listed by the image's lsinitrd."""
    name = f"initrd.img-{image.version}"
    out = image.root / "tmp" / name
    run("debugfs", "-R", f"dump /{name} {out}", f"{dev}p1")
    try:
        return di.listing(image.root, f"/tmp/{name}")
    finally:
        out.unlink()


def _nvme_ko(listing: str) -> list[str]:
    return [ln.split()[-1] for ln in listing.splitlines()
            if ln.split() and os.path.basename(ln.split()[-1]).startswith("nvme.ko")]


def _root_file(dev: str, path: str) -> str:
    """A file of the disk's root filesystem (p2), read with debugfs (not mounted)."""
    return run("debugfs", "-R", f"cat {path}", f"{dev}p2")


def _digest(plan) -> str:
    os.sync()
    h = hashlib.sha256()
    with open(Path(plan.options.tmpdir) / "disk.img", "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def test_dracut_rebuild_adds_the_missing_controller_module(image, held, tmp_path):
    dev, plan, res, hold = held(image.path)
    assert _nvme_ko(_initramfs_listing(image, dev)) == []  # built without it
    root = next(p for p in res.contents["partitions"] if p.get("os") == "Linux")
    out = linux_initramfs.fix_root(dev, root, res.contents["partitions"], "nvme",
                                   str(tmp_path), lambda nodes: hold.lend(*nodes))
    assert out.status == "rebuilt", out
    assert out.tool == "dracut"
    assert out.message.startswith(f"dracut: {image.version}: "), out.message
    (k,) = out.kernels
    assert k["version"] == image.version and k["file"] == f"/boot/initrd.img-{image.version}"
    assert k["contains_module"] is True and k["state"] == "module", k
    assert k["size"] > 1 * MiB
    assert out.changes == [f'{CONF}: add_drivers+=" nvme " added']
    (note,) = out.notes  # auto looked first, without writing
    assert note.endswith(" bytes: does NOT hold nvme: rebuilt"), note
    assert 'add_drivers+=" nvme "' in _root_file(dev, CONF).splitlines()
    (ko,) = _nvme_ko(_initramfs_listing(image, dev))  # on the disk itself
    assert ko.endswith(("/nvme.ko", "/nvme.ko.xz", "/nvme.ko.zst")), ko
    assert [c["line"] for c in out.fstab if not c["ok"]] == [5]  # the missing UUID
    assert li.our_mounts() == []
    assert not [d for d in os.listdir(tmp_path) if d.startswith("rtk-linux-")]
    assert hold.fd >= 0 and hold.lent is None


def test_dracut_step_on_then_auto_leaves_it_byte_for_byte(image, held, tmp_path):
    dev, plan, res, hold = held(image.path, "on")
    plan.options.sys_root = li.nvme_sysfs(tmp_path / "sys", os.path.basename(dev))
    record = linux_initramfs.run(plan, res, hold)
    assert record["target_controller"]["driver"] == "nvme"
    (r,) = record["roots"]
    assert r["status"] == "rebuilt" and r["tool"] == "dracut", r
    assert r["kernels"][0]["contains_module"] is True, r
    assert r["changes"] == [f'{CONF}: add_drivers+=" nvme " added']
    plan.options.linux_initramfs = "auto"
    before = _digest(plan)
    (r,) = linux_initramfs.run(plan, res, hold)["roots"]
    assert r["status"] == "skipped" and r["tool"] == "dracut", r
    assert r["message"] == (f"the initramfs of every kernel ({image.version}) already holds "
                            "nvme: not rebuilt (--linux-initramfs on rebuilds it anyway)")
    assert _digest(plan) == before
    assert li.our_mounts() == []
    assert hold.fd >= 0 and hold.lent is None


def test_a_failed_dracut_rebuild_keeps_the_existing_initramfs(image, held, tmp_path):
    """dracut removes its output file when it cannot write it: a /boot without room for
    the new initramfs must still hold the old one, unchanged, and the failure be said."""
    dev, plan, res, hold = held(image.path)
    name = f"initrd.img-{image.version}"
    mnt = tmp_path / "boot"
    mnt.mkdir()
    with hold.lend(f"{dev}p1"):
        run("mount", f"{dev}p1", str(mnt))
        try:
            old = hashlib.sha256((mnt / name).read_bytes()).hexdigest()
            fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
            try:  # no room left, not even the blocks reserved for root
                for chunk in (MiB, 4096):
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(fd, bytes(chunk))
            finally:
                os.close(fd)
        finally:
            run("umount", str(mnt))
    root = next(p for p in res.contents["partitions"] if p.get("os") == "Linux")
    out = linux_initramfs.fix_root(dev, root, res.contents["partitions"], "nvme",
                                   str(tmp_path), lambda nodes: hold.lend(*nodes))
    assert out.status == "failed" and out.warn, out
    assert image.version in out.message, out.message
    out_file = tmp_path / name
    run("debugfs", "-R", f"dump /{name} {out_file}", f"{dev}p1")
    assert hashlib.sha256(out_file.read_bytes()).hexdigest() == old  # still there, the same
    listing = run("debugfs", "-R", "ls -l /", f"{dev}p1")
    assert ".rtk-new" not in listing, listing  # nothing half-written left
    assert li.our_mounts() == []
    assert hold.fd >= 0 and hold.lent is None
