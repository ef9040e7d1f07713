"""The menu and a VHDX whose log was never replayed (issue 18 item 6), driven by keys.

The VHDX (QEMU's dirty-log sample, its disk made 32 MiB) lies on an ext4 "USB stick",
which the menu mounts read-only; the temporary directory is an 8 MiB tmpfs, too small
for a copy. Choosing the target asks whether to replay the log in the file itself:
Cancel (the safe first button, Esc) changes nothing; "Replay in place" makes the
medium writable, the plan says the file is replayed as asked, and once confirmed the
restore replays it and writes the replayed image (the bytes qemu-img makes of it).
Needs root; ~10 s.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile

import pytest
import restore_images as ri
from conftest import MiB, dialog, own_disks, wait_result, wait_worker, words
from loopdev import loop_device, make_image
from screen import press, render

from toolkit.restore import media, vhdx
from tui.app import App

pytestmark = pytest.mark.host


@pytest.fixture
def env(rtk_dirs, need_root):
    return rtk_dirs


@pytest.fixture
def usb(env):
    """A "USB stick" whose ext4 partition holds images/dirty.vhdx; its device, and the
    reference raw image (qemu-img's, of a replayed copy)."""
    root = env / "usbroot"
    (root / "images").mkdir(parents=True)
    image = ri.small_dirty_vhdx(root / "images", "dirty.vhdx")
    ref = ri.replayed_raw(image, env)
    disk = make_image(env / "usb.img", 96 * MiB)
    ri.run("sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(disk))
    ri.run("mkfs.ext4", "-q", "-F", "-L", "RTKUSB", "-E", f"offset={MiB}", "-d", str(root),
           str(disk), f"{95 * 1024 - 64}k")
    with loop_device(disk) as dev:
        yield dev, ref
    for d in (env / "run" / "media").glob("*"):
        media.unmount(str(d))


@pytest.fixture
def small_tmp(env, monkeypatch):
    small = env / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    monkeypatch.setattr(tempfile, "tempdir", str(small))
    yield small
    subprocess.run(["umount", str(small)], check=True)


def squeezed(text: str) -> str:
    return "".join(text.split())


def digest(dev: str, n: int) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()


def test_the_menu_asks_before_replaying_the_log_in_the_file(env, usb, small_tmp):
    dev_usb, ref = usb
    with loop_device(make_image(env / "t.img", 64 * MiB), partitions=False) as target:
        app = App(log_dir=str(env / "log"), list_disks=own_disks(dev_usb, target))
        press(app, "b", "enter")  # Restore, browse the media
        volumes = [v.path for v in media.data_volumes(app.restore.disks)]
        press(app, *["down"] * volumes.index(f"{dev_usb}p1"), "enter")
        wait_worker(app)
        mnt = str(env / "run" / "media" / f"{os.path.basename(dev_usb)}p1")
        file = os.path.join(mnt, "images", "dirty.vhdx")
        press(app, "enter", "down", "enter")  # images/, past ../, dirty.vhdx
        screen = words(wait_worker(app))
        assert "Restore: the image" in screen and "VHDX" in screen, screen
        assert "whose log was never replayed" in screen, screen  # the inspection's note
        press(app, "enter")  # choose the target
        eligible = [d.path for d, r in app.restore.target_choices() if r is None]
        press(app, *["down"] * eligible.index(target), "enter")
        text = squeezed(dialog(wait_worker(app)))  # (long paths wrap inside the box)
        assert "Replay the VHDX log in place?" in render(app)
        assert squeezed(f"{file} is a VHDX whose log was never replayed") in text, text
        assert squeezed(f"in {small_tmp}, which has") in text, text
        assert squeezed(f"Replay the log in {file} itself?") in text, text
        press(app, "esc")  # Cancel: the safe first button
        assert vhdx.needs_replay(file) and app.restore.options.vhdx_log == "copy"
        with open("/proc/self/mountinfo") as f:
            assert any(f" {mnt} " in x and " ro," in x for x in f)
        press(app, "enter")  # the target again
        wait_worker(app)
        press(app, "right", "enter")  # "Replay in place"
        wait_worker(app)  # the medium made writable
        wait_worker(app)  # then the plan
        screen = squeezed(render(app, (80, 48)))
        assert squeezed(f"it is replayed in {file} itself before anything is written, as "
                        "asked") in screen, screen
        assert vhdx.needs_replay(file)  # not before the restore is confirmed
        press(app, *target.removeprefix("/dev/"), "enter")
        wait_result(app, app.restore)
        assert app.restore.result.status == "ok", app.restore.result.message
        assert digest(target, 32 * MiB) == digest(str(ref), 32 * MiB)
        assert not os.path.ismount(mnt)  # released after the restore: look at the file again
        look = env / "look"
        look.mkdir()
        subprocess.run(["mount", "-o", "ro", f"{dev_usb}p1", str(look)], check=True)
        try:
            assert not vhdx.needs_replay(str(look / "images" / "dirty.vhdx"))  # replayed
        finally:
            subprocess.run(["umount", str(look)], check=True)
