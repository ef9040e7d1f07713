"""The Disk Copy screens driven by keys, copying between real loop devices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from loopdev import loop_device, make_image
from screen import press, render

from toolkit.disks.inventory import list_disks
from tui.app import App

pytestmark = pytest.mark.host

MiB = 1024 * 1024


@pytest.fixture
def pair(tmp_path, need_root, monkeypatch):
    monkeypatch.setenv("RTK_LOG_DIR", str(tmp_path / "logs"))
    src_img = make_image(tmp_path / "src.img", 24 * MiB + 3 * 512)
    with open(src_img, "r+b") as f:
        f.write(os.urandom(24 * MiB + 3 * 512))
    dst_img = make_image(tmp_path / "dst.img", 32 * MiB)
    small_img = make_image(tmp_path / "small.img", 8 * MiB)
    with loop_device(src_img, partitions=False) as src, \
            loop_device(dst_img, partitions=False) as dst, \
            loop_device(small_img, partitions=False) as small:
        yield src, dst, small, tmp_path


def _choose(app, names_in_order: list[str], wanted: str) -> str:
    index = names_in_order.index(wanted)
    return press(app, *(["down"] * index), "enter")


def _type(app, text: str) -> str:
    return press(app, *list(text))


def _wait_result(app, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while app.copy.result is None and time.monotonic() < deadline:
        app.copy.worker.join(0.1)
        app.drain()
    app.drain()
    return render(app)


def test_menu_copy_verified(pair):
    src, dst, small, tmp = pair
    app = App(log_dir=str(tmp / "logs"))
    screen = press(app, "c")
    assert "choose the SOURCE" in screen
    sources = [d.path for d in app.copy.disks]
    screen = _choose(app, sources, src)
    assert "choose the TARGET" in screen
    choices = app.copy.target_choices(app.copy.source)
    reasons = {d.path: r for d, r in choices}
    assert reasons[src] == "this is the SOURCE"
    assert "smaller than the source" in reasons[small]
    assert reasons[dst] is None
    # what cannot be chosen says why, on the screen
    screen = press(app, *["down"] * 10)
    assert "cannot be chosen:" in screen
    press(app, *["up"] * 10)
    eligible = [d.path for d, r in choices if r is None]
    screen = _choose(app, eligible, dst)
    assert "SOURCE (read only)" in screen and "TARGET (overwritten)" in screen
    assert src in screen and dst in screen
    name = dst.removeprefix("/dev/")
    assert f"Type {name} to confirm" in screen
    # a wrong confirmation starts nothing
    _type(app, "loop99")
    screen = press(app, "enter")
    assert f"Type exactly {name}" in screen and app.copy.worker is None
    press(app, *["backspace"] * 6)
    _type(app, name)
    press(app, "enter")
    assert app.copy.worker is not None
    screen = _wait_result(app)
    assert "VERIFIED IDENTICAL" in screen, screen
    assert "report:" in screen
    assert app.copy.result.status == "ok"
    subprocess.run(["cmp", "-n", str(24 * MiB + 3 * 512), src, dst], check=True)
    screen = press(app, "enter")
    assert "Main menu" in screen.splitlines()[1]


def test_menu_offers_resume_of_interrupted_copy(pair):
    """kill -9 of `rtk copy` mid-way; the menu finds the same pair's mapfile."""
    src, dst, _small, tmp = pair
    identity = dst.removeprefix("/dev/")
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "copy", src, dst, "--yes", "--target-id",
         identity, "--max-rate", "4M", "--mapfile-interval", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    app = App(log_dir=str(tmp / "logs"), list_disks=list_disks)
    press(app, "c")
    _choose(app, [d.path for d in app.copy.disks], src)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    screen = _choose(app, eligible, dst)
    assert "Resume the interrupted copy of this pair" in screen, screen
    _type(app, identity)
    press(app, "enter")
    screen = _wait_result(app)
    assert "VERIFIED IDENTICAL" in screen, screen
    assert app.copy.result.resumed
    subprocess.run(["cmp", "-n", str(24 * MiB + 3 * 512), src, dst], check=True)
