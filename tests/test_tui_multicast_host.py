"""The menu's Restore from a multicast stream, driven by keys: a udp-sender in a network
namespace (tests/netns.py: a bridge and addresses of 10.213.0.0/24 that exist only in
the test's namespaces) feeds the menu's restore onto a loop device.

The menu runs in the test's process; its thread is moved into a receiver namespace
(``netns.inside``) while it runs, so udp-receiver, which the restore starts from its
worker thread, is on the bridge too. Covered: the stream restored and verified (the
waiting and joined states on screen first, then held whole in the spool); a wrong
SHA-256 (held first: the disk untouched; with no room to hold it, a 16 MiB tmpfs as the
temporary directory: the disk overwritten, its first and last MiB zeroed, no table, as
docs/fleet.md says); Esc while waiting and while receiving (cancelled, not a byte
written); a late join and a lost stream (failed, in plain words, both disks untouched).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import restore_images as ri
from conftest import MiB, dialog, own_disks, type_text, wait_result, wait_worker, words
from loopdev import loop_device
from netns import Lan, inside, sh
from screen import press, render

from toolkit.restore import multicast
from tui.app import App

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(not shutil.which("udp-sender"), reason="needs udpcast")]

PORT = 9000
SENDER = "10.213.0.10"  # Lan.add(0)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return ri.build_gpt_image(tmp_path_factory.mktemp("mcimage") / "gpt.img")


def sha_file(path, size: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(size) if size is not None else f.read())
    return h.hexdigest()


@pytest.fixture
def disk(rtk_dirs, need_root, image):
    """The target's backing file, the image's size (no fitting), with something on it
    at its start, middle and end (so "untouched" means something)."""
    path = rtk_dirs / "target.img"
    with open(path, "wb") as f:
        f.truncate(image.size)
        for off in (0, image.size // 2, image.size - MiB):
            f.seek(off)
            f.write(b"\xa5" * MiB)
    return path


@pytest.fixture
def lan(need_root):
    with Lan() as lan:
        yield lan


def sender(lan, ns, image, *, receivers=1, max_wait=None, rate=None):
    argv = multicast.sender_argv(str(image), receivers=receivers, max_wait=max_wait,
                                 rate=rate, interface="eth0", portbase=PORT)
    return subprocess.Popen(lan.argv(ns, argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(proc, timeout: float = 30) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_restore(app, dev: str, sha256: str, wait: str = "120", held: bool = True) -> str:
    """Restore > Multicast stream, the form (eth0, port 9000, ``sha256``, ``wait``), the
    target ``dev``, the typed confirmation (which says whether the stream is ``held``
    first): the restore starts; the screen then."""
    screen = press(app, "b")
    assert "Multicast stream (udpcast)" in screen, screen
    screen = press(app, "down", "down", "down", "enter")
    assert "multicast stream (udpcast)" in screen and "NICs here: eth0" in screen, screen
    type_text(app, "eth0")
    press(app, "down", "down")  # the port base keeps its 9000
    type_text(app, sha256)
    press(app, "down", "end", *["backspace"] * 5)
    type_text(app, wait)
    screen = press(app, "enter")
    assert "choose the TARGET" in screen and f"udpcast://eth0@{PORT}" in screen, screen
    eligible = [d.path for d, r in app.restore.target_choices() if r is None]
    assert eligible == [dev], app.restore.target_choices()
    press(app, "enter")
    wait_worker(app)
    screen = words(render(app, size=(80, 60)))  # the whole confirmation, unscrolled
    assert "IMAGE (read)" in screen and "multicast stream, read once" in screen, screen
    if held:
        assert "the multicast stream is held in" in screen, screen
        assert "a wrong image leaves the disk untouched" in screen, screen
        assert "held whole first, checked, then written" in screen, screen
    else:
        assert "no room to hold the stream: a wrong image overwrites the disk but leaves " \
               "no valid partition table" in screen, screen
        assert "A wrong stream overwrites this disk" in screen, screen
    name = dev.removeprefix("/dev/")
    type_text(app, name)
    press(app, "enter")
    assert app.restore.worker is not None
    return words(render(app))


def wait_screen(app, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.drain()
        screen = words(render(app))
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"the screen never showed {text!r}:\n{render(app)}")


def ends(path) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        head = f.read(MiB)
        f.seek(-MiB, os.SEEK_END)
        return head, f.read(MiB)


def no_table(path) -> None:
    head, tail = ends(path)
    assert head == bytes(MiB), "the first MiB (the table) must be zero"
    assert tail == bytes(MiB), "the last MiB (the backup GPT) must be zero"
    assert "PTTYPE" not in sh("blkid", "-p", str(path), check=False).stdout


def test_menu_restores_a_multicast_stream(lan, image, disk, rtk_dirs):
    s, r = lan.add(0), lan.add(1)
    with loop_device(disk, partitions=False) as dev, inside(r):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        screen = start_restore(app, dev, image.sha256)
        assert f"Waiting for the sender on eth0 port {PORT}" in screen, screen
        # two machines wanted: the sender waits (5 s) after this one joined
        snd = sender(lan, s, image.path, receivers=2, max_wait=5)
        screen = wait_screen(app, f"Joined the sender at {SENDER} (eth0, port {PORT})")
        screen = wait_result(app, app.restore, timeout=240)
        res = app.restore.result
        assert res.status == "ok", res.message
        assert "RESTORED AND VERIFIED" in screen, screen
        assert res.sha256_match and res.input_sha256 == image.sha256
        assert "Debian GNU/Linux 12" in screen and "report:" in screen, screen
        assert snd.wait(60) == 0, snd.stderr.read()
    assert sha_file(disk) == image.sha256  # the target is the image, byte for byte


def test_wrong_sha256_held_first_leaves_the_disk_untouched(lan, image, disk, rtk_dirs):
    """docs/fleet.md: with room to hold it, the stream arrives whole before the disk is
    touched, and a wrong SHA-256 leaves it as it was, byte for byte."""
    s, r = lan.add(0), lan.add(1)
    wrong = "0" * 64
    before = sha_file(disk)
    with loop_device(disk, partitions=False) as dev, inside(r):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        start_restore(app, dev, wrong)
        snd = sender(lan, s, image.path)
        screen = wait_result(app, app.restore, timeout=240)
        res = app.restore.result
        stop(snd)
    assert res.status == "mismatch", res.message
    assert "MISMATCH" in screen and "The target has no partition table now." not in screen
    assert f"hashes to {image.sha256}, expected {wrong}" in words(screen), screen
    assert "nothing was written (the stream was held in" in words(screen), screen
    assert res.input_sha256 == image.sha256 and res.sha256_match is False
    assert not res.wiped and res.image.spool.received == image.size
    assert sha_file(disk) == before


@contextlib.contextmanager
def small_tmp(rtk_dirs, monkeypatch):
    """The temporary directory a 16 MiB tmpfs: no room to hold a 64 MiB stream."""
    small = rtk_dirs / "small-tmp"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small))
    monkeypatch.setattr(tempfile, "tempdir", str(small))
    try:
        yield small
    finally:
        sh("umount", str(small), check=False)


def test_wrong_sha256_without_room_leaves_no_valid_disk(lan, image, disk, rtk_dirs,
                                                         monkeypatch):
    """docs/fleet.md: without room to hold it, a live stream is written as it arrives, so
    a wrong SHA-256 is found after the rest is written: the disk is overwritten but its
    first MiB is not written, and its first and last MiB are zeroed (no table)."""
    s, r = lan.add(0), lan.add(1)
    wrong = "0" * 64
    with small_tmp(rtk_dirs, monkeypatch), loop_device(disk, partitions=False) as dev, \
            inside(r):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        start_restore(app, dev, wrong, held=False)
        snd = sender(lan, s, image.path)
        screen = wait_result(app, app.restore, timeout=240)
        res = app.restore.result
        stop(snd)
    assert res.status == "mismatch", res.message
    assert "MISMATCH" in screen and "The target has no partition table now." in screen
    assert f"hashes to {image.sha256}, expected {wrong}" in words(screen), screen
    assert "first MiB was not written" in res.message
    assert res.input_sha256 == image.sha256 and res.sha256_match is False
    no_table(disk)
    with open(disk, "rb") as f, open(image.path, "rb") as im:  # the rest: overwritten
        f.seek(MiB)
        im.seek(MiB)
        assert f.read(image.size - 2 * MiB) == im.read(image.size - 2 * MiB)


def test_esc_while_waiting_cancels_without_writing(lan, image, disk, rtk_dirs):
    r = lan.add(1)
    before = sha_file(disk)
    with loop_device(disk, partitions=False) as dev, inside(r):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        screen = start_restore(app, dev, image.sha256, wait="600")
        assert f"Waiting for the sender on eth0 port {PORT}" in screen, screen
        time.sleep(1)
        screen = press(app, "esc")
        assert "Stop the restore?" in screen, screen
        assert "waits for the sender and receives the stream (held whole first) nothing " \
               "has been written" in dialog(screen), screen
        press(app, "right", "enter")  # Stop
        screen = words(wait_result(app, app.restore, timeout=30))
        res = app.restore.result
    assert res.status == "cancelled", res.message
    assert "CANCELLED" in screen and "cancelled while waiting for the multicast sender " \
           f"(port {PORT} on eth0): nothing was written" in screen, screen
    assert not res.wiped
    assert sh("ip", "netns", "pids", r).stdout.split() == []  # udp-receiver is gone
    assert sha_file(disk) == before


def test_esc_while_receiving_cancels_without_writing(lan, image, disk, rtk_dirs):
    """Held first: Esc while the stream arrives stops it, and the disk was never touched."""
    s, r = lan.add(0), lan.add(1)
    before = sha_file(disk)
    with loop_device(disk, partitions=False) as dev, inside(r):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        start_restore(app, dev, image.sha256)
        snd = sender(lan, s, image.path, rate="20m")  # about 27 s for 64 MiB
        wait_screen(app, "Receiving the stream (nothing is written yet)", timeout=60)
        screen = press(app, "esc")
        assert "receives the stream (held whole first) nothing has been written" in \
            dialog(screen), screen
        press(app, "right", "enter")  # Stop
        screen = words(wait_result(app, app.restore, timeout=60))
        res = app.restore.result
        stop(snd)
    assert res.status == "cancelled", res.message
    assert "CANCELLED" in screen and "of the multicast stream, while it was held in " in \
        screen and ": nothing was written" in screen, screen
    assert not res.wiped
    assert sh("ip", "netns", "pids", r).stdout.split() == []  # udp-receiver is gone
    assert sha_file(disk) == before


def test_late_join_fails_clearly_without_writing(lan, image, disk, rtk_dirs):
    s, early, late = lan.add(0), lan.add(1), lan.add(2)
    before = sha_file(disk)
    snd = sender(lan, s, image.path, rate="20m")  # about 27 s for 64 MiB
    first = subprocess.Popen(lan.argv(early, multicast.receiver_argv(multicast.parse(
        f"udpcast://eth0@{PORT}?start_timeout=30")) + ["--file", "/dev/null"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while Lan.tx_bytes(s) < 4 * MiB and time.monotonic() < deadline:
        time.sleep(0.1)  # the stream runs: this machine comes late
    with loop_device(disk, partitions=False) as dev, inside(late):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        start_restore(app, dev, image.sha256, wait="5")
        screen = words(wait_result(app, app.restore, timeout=60))
        res = app.restore.result
    assert snd.poll() is None, "the stream ended before the late machine tried"
    stop(first, 60)
    stop(snd)
    assert res.status == "failed", res.message
    assert "FAILED" in screen and f"no multicast sender on {PORT} within 5 s" in screen, screen
    assert "(nothing was written)" in screen and "Traceback" not in screen
    assert not res.wiped
    assert sha_file(disk) == before


def test_lost_stream_fails_with_nothing_written(lan, image, disk, rtk_dirs):
    """The sender gone mid-stream while it is held: failed in plain words, and the disk
    was never touched (nothing is written before the stream has all arrived)."""
    s, r = lan.add(0), lan.add(1)
    before = sha_file(disk)
    with loop_device(disk, partitions=False) as dev, inside(r):
        app = App(log_dir=str(rtk_dirs / "log"), list_disks=own_disks(dev))
        start_restore(app, dev, image.sha256)
        snd = sender(lan, s, image.path, rate="20m")  # about 27 s for 64 MiB
        wait_screen(app, "Receiving the stream (nothing is written yet)", timeout=60)
        deadline = time.monotonic() + 60
        while Lan.tx_bytes(s) < 8 * MiB and time.monotonic() < deadline:
            time.sleep(0.1)
        snd.kill()  # the sender (or the network) is gone mid-stream
        snd.wait()
        # udp-receiver gives up after its receive timeout (30 s)
        screen = words(wait_result(app, app.restore, timeout=120))
        res = app.restore.result
    assert res.status == "failed", res.message
    assert "FAILED" in screen and "the multicast stream stopped at byte" in screen, screen
    assert "nothing was written (the stream was held in" in screen, screen
    assert "The target has no partition table now." not in screen
    assert not res.wiped
    assert sha_file(disk) == before
