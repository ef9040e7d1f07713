# ruff: noqa: F811  (the fixtures imported from test_gate_host are parameters here)
"""The write gate on an overlay mount: an image in an overlayfs whose lower layer is a
filesystem on a loop device over a partition of the target is refused (its file's
``st_dev`` is a per-layer anonymous number that /proc/self/mountinfo does not list: it
is followed through the overlay's layers, or the write is refused as unresolvable). An
image on a plain tmpfs, or on the host's own disk, still restores. Needs root.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from conftest import MiB, rtk
from test_gate_host import (  # noqa: F401  (fixtures: devs, templates)
    Devices,
    devs,
    digest,
    gpt_image,
    mkfs,
    partitioned,
    refused_cli,
    run,
    templates,
)
from writeguard import write_guard  # noqa: F401  (the runtime write guard, autouse)

pytestmark = pytest.mark.host


def overlay(devs: Devices, lower, *, lazy_umount: bool) -> str:
    """An overlay mount over ``lower`` (upper and work on the test's tmp); ``lazy_umount``:
    ``lower`` is lazily unmounted afterwards (the overlay keeps it alive). Its path."""
    up, work, ov = devs.path("u"), devs.path("w"), devs.path("ov")
    for d in (up, work, ov):
        d.mkdir()
    run("mount", "-t", "overlay", "-o", f"lowerdir={lower},upperdir={up},workdir={work}",
        "overlay", str(ov))
    devs.stack.callback(lambda: subprocess.run(["umount", "-l", str(ov)], check=False))
    if lazy_umount:
        run("umount", "-l", str(lower))
    return str(ov)


def accepted(image: str, target: str) -> None:
    p = rtk("restore", image, target, "--yes", "--target-id", os.path.basename(target))
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "restored 8388608 bytes" in p.stdout, p.stdout


@pytest.mark.parametrize("lazy_umount", [True, False], ids=["lower-unmounted", "lower-mounted"])
def test_restore_image_in_an_overlay_over_a_partition_of_the_target(devs, lazy_umount):
    target, _img = partitioned(devs)
    inner = devs.loop(f"{target}p2")
    mkfs(inner)
    mnt = devs.mount(inner)
    gpt_image(mnt / "I.raw", 8 * MiB)
    ov = overlay(devs, mnt, lazy_umount=lazy_umount)
    image = os.path.join(ov, "I.raw")
    text = refused_cli("restore", image, target)
    if lazy_umount:
        assert "cannot tell which disk holds" in text or inner in text, text
    else:
        assert inner in text, text


def test_restore_image_copied_up_into_an_overlays_upper_layer_on_tmpfs(devs):
    """The overlay's upper layer is a tmpfs: a file written there is on no disk."""
    target = devs.loop(gpt_image(devs.path("t.img"), 16 * MiB, seed=3))
    tmpfs = devs.path("tmpfs")
    tmpfs.mkdir()
    run("mount", "-t", "tmpfs", "tmpfs", str(tmpfs))
    devs.stack.callback(lambda: subprocess.run(["umount", "-l", str(tmpfs)], check=False))
    (tmpfs / "low").mkdir()
    for d in ("u", "w", "ov"):
        (tmpfs / d).mkdir()
    gpt_image(tmpfs / "low" / "I.raw", 8 * MiB, seed=4)
    run("mount", "-t", "overlay", "-o",
        f"lowerdir={tmpfs}/low,upperdir={tmpfs}/u,workdir={tmpfs}/w", "overlay",
        str(tmpfs / "ov"))
    devs.stack.callback(lambda: subprocess.run(["umount", "-l", str(tmpfs / "ov")],
                                               check=False))
    accepted(str(tmpfs / "ov" / "I.raw"), target)


def test_restore_image_on_a_plain_tmpfs_is_accepted(devs):
    target = devs.loop(gpt_image(devs.path("t.img"), 16 * MiB, seed=5))
    tmpfs = devs.path("tmpfs")
    tmpfs.mkdir()
    run("mount", "-t", "tmpfs", "tmpfs", str(tmpfs))
    devs.stack.callback(lambda: subprocess.run(["umount", "-l", str(tmpfs)], check=False))
    accepted(str(gpt_image(tmpfs / "I.raw", 8 * MiB, seed=6)), target)


def test_restore_image_on_the_hosts_disk_is_accepted(devs):
    """The host's / is a block-device filesystem: st_dev resolves (only read here)."""
    target = devs.loop(gpt_image(devs.path("t.img"), 16 * MiB, seed=9))
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        if os.major(os.stat(d).st_dev) == 0:
            pytest.skip("/var/tmp is not on a block device here")
        accepted(str(gpt_image(os.path.join(d, "I.raw"), 8 * MiB, seed=10)), target)
