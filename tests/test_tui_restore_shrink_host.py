"""The menu restores an image onto a smaller disk: the disk is offered, the summary says
which partition shrinks from what to what, and the restored disk checks clean."""

from __future__ import annotations

import subprocess

import pytest
from conftest import own_disks, type_text, wait_result, wait_worker, words
from loopdev import loop_device, make_image
from screen import press, render
from shrink_images import SMALL, build_shrink_image, check_small_disk

from tui.app import App

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return build_shrink_image(tmp_path_factory.mktemp("shrink") / "ntfs.img", "ntfs")


def test_menu_restores_onto_a_smaller_disk(rtk_dirs, need_root, image):
    small = make_image(rtk_dirs / "small.img", SMALL)
    with loop_device(image.path) as lun, loop_device(small, partitions=False) as dev:
        subprocess.run(["blockdev", "--setro", lun], check=True)
        try:
            _restore(rtk_dirs, image, lun, dev)
        finally:  # the flag outlives the loop device's detach: the next user gets it back
            subprocess.run(["blockdev", "--setrw", lun], check=True)


def _restore(rtk_dirs, image, lun: str, dev: str) -> None:
    def disks():
        found = own_disks(lun, dev)()
        for d in found:
            if d.path == lun:
                d.transport = "iscsi"  # a disk read as the image: an iSCSI LUN
        return found

    app = App(log_dir=str(rtk_dirs / "log"), list_disks=disks)
    press(app, "b", "down", "down", "enter")
    press(app, "enter")
    screen = wait_worker(app)
    assert "Restore: the image" in screen and "574.6 MB" in screen, screen
    screen = press(app, "enter")  # "Choose the target disk"
    assert "choose the TARGET" in screen, screen
    assert {d.path: r for d, r in app.restore.target_choices()}[dev] is None
    press(app, "enter")
    wait_worker(app)
    screen = words(render(app, (100, 60)))
    assert 'partition 2 (ntfs "Data") shrinks from 536.9 MB to' in screen, screen
    assert "copy-on-write overlay" in screen
    type_text(app, dev.removeprefix("/dev/"))
    press(app, "enter")
    screen = wait_result(app, app.restore, timeout=180)
    assert app.restore.result.status == "ok", app.restore.result.message
    assert "RESTORED AND VERIFIED" in screen, screen
    assert "fitted to the smaller disk: partition 2" in words(render(app, (100, 60)))
    check_small_disk(dev, image, "ntfs")
