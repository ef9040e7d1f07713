"""The Logs screen saves a bundle onto a real filesystem it mounts for the purpose (a loop
device with ext4, as a technician's USB stick), keys typed and screen read: the file is
there, whole, with the reports and no CHAP secret, and the filesystem is unmounted
again. Needs root; a few seconds."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from conftest import MiB, dialog, own_disks, wait_worker
from loopdev import make_image, run
from screen import press

from tui.app import App

pytestmark = pytest.mark.host

SECRET = "stickChapS3cret"


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


def test_bundle_saved_on_a_stick_the_menu_mounts(tmp_path, loops):
    dev = loops(make_image(tmp_path / "stick.img", 32 * MiB))
    run("mkfs.ext4", "-q", "-L", "STICK", dev)
    log = Path(os.environ["RTK_LOG_DIR"])
    log.mkdir()
    (log / "copy-20261122-101500.txt").write_text("copy report\nresult: verified\n")
    (log / "iscsi.log").write_text(f"$ iscsiadm -m node -o update -n "
                                   f"node.session.auth.password -v {SECRET}\n")
    app = App(log_dir=str(log), list_disks=own_disks(dev))
    app.logs.list_disks = own_disks(dev)
    press(app, "l", "s")
    screen = wait_worker(app)
    lines = screen.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(dev))
    assert '"STICK"' in lines[row]
    # the lines above it: "Beside the state" (tmp_path is on a disk), "Send to a URL"
    press(app, "down", "down", "enter")
    text = dialog(wait_worker(app))
    assert f"saved on {dev} in /rtk-bundles/; {dev} is unmounted again" in text
    assert dev not in Path("/proc/self/mountinfo").read_text().split()  # unmounted
    mnt = tmp_path / "check"
    mnt.mkdir()
    run("mount", "-o", "ro", dev, str(mnt))
    try:
        (name,) = os.listdir(mnt / "rtk-bundles")
        assert name in text and name.endswith(".tar.gz")
        data = (mnt / "rtk-bundles" / name).read_bytes()
    finally:
        run("umount", str(mnt))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    top = name.removesuffix(".tar.gz")
    assert b"result: verified" in files[f"{top}/state/copy-20261122-101500.txt"]
    assert f"{top}/system/disks-probe.json" in files and f"{top}/INDEX.txt" in files
    assert not any(SECRET.encode() in d for d in files.values())
