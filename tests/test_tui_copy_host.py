"""The Disk Copy screens driven by keys, copying between real loop devices. The menu
sees only the test's own loop devices (``own_disks``): other disks of the machine, and
other loop devices attached, change nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RTK, MiB, choose, confirm_by_typing, own_disks, type_text, wait_result
from loopdev import make_image
from screen import press

from toolkit.blockio.mapfile import FINISHED, Mapfile, MapfileError
from tui.app import App

pytestmark = pytest.mark.host


@pytest.fixture
def pair(tmp_path, loops, log_dir):
    src_img = make_image(tmp_path / "src.img", 24 * MiB + 3 * 512)
    with open(src_img, "r+b") as f:
        f.write(os.urandom(24 * MiB + 3 * 512))
    src = loops(src_img)
    dst = loops(make_image(tmp_path / "dst.img", 32 * MiB))
    small = loops(make_image(tmp_path / "small.img", 8 * MiB))
    return src, dst, small, log_dir


def test_menu_copy_verified(pair):
    src, dst, small, log_dir = pair
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, dst, small))
    screen = press(app, "c")
    assert "choose the SOURCE" in screen
    sources = [d.path for d in app.copy.disks]
    screen = choose(app, sources, src)
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
    screen = choose(app, eligible, dst)
    assert "SOURCE (read only)" in screen and "TARGET (overwritten)" in screen
    assert src in screen and dst in screen
    confirm_by_typing(app, app.copy, dst.removeprefix("/dev/"), wrong="loop99")
    screen = wait_result(app, app.copy)
    assert "VERIFIED IDENTICAL" in screen, screen
    assert "report:" in screen
    assert app.copy.result.status == "ok"
    subprocess.run(["cmp", "-n", str(24 * MiB + 3 * 512), src, dst], check=True)
    screen = press(app, "enter")
    assert "Main menu" in screen.splitlines()[1]


def wait_for_copied_bytes(log_dir, timeout: float = 60) -> None:
    """Until the copy's mapfile records some copied bytes (a fixed sleep is not enough on
    a loaded machine: the first durable mark came at 2.4-3.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in Path(log_dir).glob("copy-*.map"):
            with contextlib.suppress(MapfileError, OSError):
                if Mapfile.load(str(path)).bytes_with(FINISHED):
                    return
        time.sleep(0.05)
    raise AssertionError(f"no copied bytes recorded in {log_dir} after {timeout} s")


def test_menu_offers_resume_of_interrupted_copy(pair):
    """kill -9 of `rtk copy` mid-way; the menu finds the same pair's mapfile."""
    src, dst, small, log_dir = pair
    identity = dst.removeprefix("/dev/")
    proc = subprocess.Popen(
        [*RTK, "copy", src, dst, "--yes", "--target-id",
         identity, "--max-rate", "4M", "--mapfile-interval", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_copied_bytes(log_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, dst, small))
    press(app, "c")
    choose(app, [d.path for d in app.copy.disks], src)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    screen = choose(app, eligible, dst)
    assert "Resume the interrupted copy of this pair" in screen, screen
    type_text(app, identity)
    press(app, "enter")
    screen = wait_result(app, app.copy)
    assert "VERIFIED IDENTICAL" in screen, screen
    assert app.copy.result.resumed
    subprocess.run(["cmp", "-n", str(24 * MiB + 3 * 512), src, dst], check=True)


def test_menu_says_before_a_copy_that_a_reboot_loses_the_resume_point(pair, monkeypatch):
    """The state directory on the live system's RAM overlay: before the confirmation, the
    menu says so and offers a disk; "Start anyway" goes on to the usual summary."""
    from toolkit.system import state

    src, dst, small, log_dir = pair
    in_ram = state.StateLocation(str(log_dir), str(log_dir), "/", "overlay", "overlay",
                                 persistent=False, writable=True)
    monkeypatch.setattr(state, "location", lambda *a, **k: in_ram)
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, dst, small))
    press(app, "c")
    choose(app, [d.path for d in app.copy.disks], src)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    screen = choose(app, eligible, dst)
    assert "Resume point in RAM" in screen and "Choose a disk" in screen, screen
    assert "TARGET (overwritten)" not in screen
    screen = press(app, "right", "right", "enter")  # Start anyway
    assert "SOURCE (read only)" in screen and "TARGET (overwritten)" in screen, screen
