"""The Disk Copy screens driven by keys, copying between real loop devices. The menu
sees only the test's own loop devices (``own_disks``): other disks of the machine, and
other loop devices attached, change nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RTK, MiB, choose, confirm_by_typing, own_disks, type_text, wait_result
from loopdev import make_image
from screen import press, render

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


# --- a job of several pairs -----------------------------------------------------------------

@pytest.fixture
def two_pairs(tmp_path, loops, log_dir):
    """Two SOURCE -> TARGET pairs of loop devices (random sources of two sizes), and a
    second loop device over the first source's file (an alias of it)."""
    sizes = (20 * MiB + 512, 12 * MiB)
    devs = []
    for n, size in enumerate(sizes, 1):
        img = make_image(tmp_path / f"s{n}.img", size)
        with open(img, "r+b") as f:
            f.write(os.urandom(size))
        devs += [loops(img), loops(make_image(tmp_path / f"d{n}.img", size + 4 * MiB))]
    alias = loops(tmp_path / "s1.img")
    return devs, alias, sizes, log_dir


def _to_job_summary(app, s1, d1, s2, d2) -> str:
    press(app, "c")
    choose(app, [d.path for d in app.copy.disks], s1)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    choose(app, eligible, d1)
    screen = press(app, "down", "right")  # beside "Start the copy"
    assert "Add another pair" in screen, screen
    screen = press(app, "enter")
    assert "choose the SOURCE of pair 2" in screen, screen
    base = (app.copy.plan,)
    sources = [d.path for d, r in app.copy.pairs.source_choices(base) if r is None]
    assert d1 not in sources  # the TARGET of pair 1
    screen = choose(app, sources, s2)
    assert "choose the TARGET of pair 2" in screen, screen
    src2 = next(d for d in app.copy.disks if d.path == s2)
    choices = app.copy.pairs.target_choices(base, src2)
    targets = [d.path for d, r in choices if r is None]
    return choices, choose(app, targets, d2)


def test_menu_job_of_two_pairs(two_pairs):
    """Two pairs chosen one after the other, one summary, each target confirmed by
    typing its own word (the other's word is refused), both copied, one job report."""
    (s1, d1, s2, d2), alias, sizes, log_dir = two_pairs
    app = App(log_dir=str(log_dir), list_disks=own_disks(s1, d1, s2, d2, alias))
    choices, screen = _to_job_summary(app, s1, d1, s2, d2)
    reasons = {d.path: r for d, r in choices}
    assert reasons[d1] == "the TARGET of pair 1"
    assert "source of pair 1" in reasons[alias], reasons  # an alias of pair 1's SOURCE
    assert reasons[d2] is None
    assert "Disk Copy: 2 pairs" in screen and "< Confirm the 2 targets >" in screen, screen
    tall = render(app, (80, 60))  # the whole summary: both pairs, both disks each
    assert "Pair 1 of 2" in tall and "Pair 2 of 2" in tall, tall
    assert all(d in tall for d in (s1, d1, s2, d2)), tall
    screen = press(app, "enter")  # "Confirm the 2 targets" has the focus
    assert "confirm target 1 of 2" in screen, screen
    w1, w2 = d1.removeprefix("/dev/"), d2.removeprefix("/dev/")
    assert f"Type {w1} to confirm" in screen
    type_text(app, w2)  # the other target's word
    assert f"Type exactly {w1}" in press(app, "enter")
    press(app, *["backspace"] * len(w2))
    type_text(app, w1)
    screen = press(app, "enter")
    assert "confirm target 2 of 2" in screen and app.copy.worker is None, screen
    assert "Start the 2 copies" in render(app)
    confirm_by_typing(app, app.copy, w2, wrong=w1)
    screen = wait_result(app, app.copy)
    assert "ALL PAIRS COPIED, VERIFIED" in screen, screen
    result = app.copy.result
    assert result.status == "ok" and [o.status for o in result.pairs] == ["ok", "ok"]
    for (src, dst), size in zip(((s1, d1), (s2, d2)), sizes, strict=True):
        subprocess.run(["cmp", "-n", str(size), src, dst], check=True)
    jobs = list(Path(log_dir).glob("copy-job-*.json"))
    assert len(jobs) == 1 and "job report:" in screen
    data = json.loads(jobs[0].read_text())
    assert data["result"] == "ok" and len(data["pairs"]) == 2
    assert all(Path(p["report"]["json"]).exists() for p in data["pairs"])
    assert [p["target"]["node"] for p in data["pairs"]] == [d1, d2]


def test_menu_recommends_used_blocks_where_a_filesystem_is_mapped(tmp_path, loops, pair):
    """An ext4 SOURCE: "Used blocks only" is preselected and names what is mapped; the
    copy covers the used blocks only and the target's filesystem checks clean. A SOURCE
    of random data (nothing mapped): "Every block" is preselected."""
    src, dst, small, log_dir = pair
    img = tmp_path / "ext4.img"
    img.write_bytes(os.urandom(24 * MiB))  # old data in the free space
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    ext4 = loops(img)
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, ext4, dst, small))
    press(app, "c")
    choose(app, [d.path for d in app.copy.disks], src)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    choose(app, eligible, dst)
    tall = render(app, (80, 60))
    assert "Used blocks only" not in tall and "Every block" not in tall, tall  # no choice
    press(app, "esc", "esc")
    choose(app, [d.path for d in app.copy.disks], ext4)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    choose(app, eligible, dst)
    tall = render(app, (80, 60))
    assert "(X) Used blocks only (recommended: the whole disk (ext4))" in tall, tall
    assert "( ) Every block" in tall
    confirm_by_typing(app, app.copy, dst.removeprefix("/dev/"), wrong="loop99")
    screen = wait_result(app, app.copy)
    result = app.copy.result
    assert result.status == "ok", screen
    assert result.domain and result.domain["bytes"] < 24 * MiB / 2, result.domain
    subprocess.run(["e2fsck", "-fn", dst], check=True, capture_output=True)
