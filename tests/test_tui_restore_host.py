"""The Restore screens driven by keys: an image on a real ext4 "USB" partition (mounted
read-only through the browse screen), over HTTP and over HTTPS (a self-signed
certificate made by openssl: refused, then verified with it as the CA file, or not
verified when asked) on 127.0.0.1, restored onto loop devices. The menu sees only the
test's own devices (``own_disks``): other disks of the machine, and other loop devices
attached, change nothing."""

from __future__ import annotations

import os
import subprocess

import pytest
import restore_images as ri
from conftest import (
    MiB,
    confirm_by_typing,
    dialog,
    own_disks,
    type_text,
    wait_result,
    wait_worker,
    words,
)
from loopdev import loop_device, make_image
from screen import press, render
from vmlab.http import HttpServer

from toolkit.restore import media
from tui.app import App

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("image")
    return ri.build_gpt_image(d / "gpt.img")


@pytest.fixture
def env(rtk_dirs, need_root):
    return rtk_dirs


@pytest.fixture
def targets(env):
    big = make_image(env / "big.img", 96 * MiB)
    small = make_image(env / "small.img", 32 * MiB)
    with loop_device(big, partitions=False) as b, loop_device(small, partitions=False) as s:
        yield b, s


@pytest.fixture
def usb(env, image):
    """A GPT "USB stick" whose ext4 partition holds images/gpt.img."""
    root = env / "usbroot"
    (root / "images").mkdir(parents=True)
    subprocess.run(["cp", str(image.path), str(root / "images" / "gpt.img")], check=True)
    (root / "notes.txt").write_text("restore me\n")
    disk = make_image(env / "usb.img", 88 * MiB)
    ri.run("sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(disk))
    (_num, start, length), = ri._partitions(disk)
    fs = env / "usb.fs"
    ri.run("mkfs.ext4", "-q", "-F", "-L", "RTKUSB", "-d", str(root), str(fs),
           f"{length // 1024}k")
    ri._place(disk, fs, start)
    fs.unlink()
    with loop_device(disk) as dev:
        yield dev
    for d in (env / "run" / "media").glob("*"):
        media.unmount(str(d))


def _target_and_confirm(app, big: str, small: str, *, fitted: bool = False) -> None:
    """Choose ``big``; ``fitted``: the image is read where it lies (a file, a disk), so the
    smaller disk is offered too (its fitting planned once chosen), else it cannot be."""
    screen = press(app, "enter")  # the inspection's "Choose the target disk"
    assert "choose the TARGET" in screen, screen
    reasons = {d.path: r for d, r in app.restore.target_choices()}
    assert reasons[big] is None
    if fitted:
        assert reasons[small] is None
    else:
        assert "smaller than the image" in reasons[small], reasons[small]
        assert "decompress it first" not in reasons[small]
        screen = press(app, *["down"] * 30)
        assert "cannot be chosen:" in screen
        press(app, *["up"] * 30)
    eligible = [d.path for d, r in app.restore.target_choices() if r is None]
    press(app, *["down"] * eligible.index(big), "enter")
    wait_worker(app)
    # the plan's warnings (here: the image boots only in UEFI mode, this host runs in BIOS
    # mode) can push the top of the confirmation past 24 lines: read it on a taller screen
    screen = render(app, (80, 48))
    assert "IMAGE (read)" in screen and "TARGET (overwritten)" in screen, screen


def _check_target(dev: str, built: ri.Built, grown: bool) -> None:
    v = subprocess.run(["sgdisk", "-v", dev], capture_output=True, text=True).stdout
    assert "No problems found" in v, v
    # the partitions' bytes as in the image (the GPT headers are moved to the disk's end)
    n = built.size - 2 * MiB if not grown else 45 * MiB  # grown: the ext4 (p3) changed
    subprocess.run(["cmp", "-i", f"{MiB}:{MiB}", "-n", str(n), str(built.path), dev],
                   check=True)
    subprocess.run(["cmp", "-n", "440", str(built.path), dev], check=True)


def test_restore_from_usb_file(env, image, usb, targets):
    big, small = targets
    app = App(log_dir=str(env / "log"), list_disks=own_disks(usb, big, small))
    screen = press(app, "b")
    assert "where is the image" in screen and "Browse local or USB media" in screen
    screen = press(app, "enter")
    assert "choose the medium" in screen
    volumes = [v.path for v in media.data_volumes(app.restore.disks)]
    part = f"{usb}p1"
    assert part in volumes
    press(app, *["down"] * volumes.index(part), "enter")
    screen = wait_worker(app)
    mnt = str(env / "run" / "media" / os.path.basename(part))
    assert os.path.ismount(mnt) and "read-only)" in screen, screen
    assert "images/" in screen and "notes.txt" in screen
    with open("/proc/self/mountinfo") as f:
        line = next(x for x in f if f" {mnt} " in x)
    assert " ro," in line or " ro " in line
    screen = press(app, "enter")  # into images/
    assert "/images" in screen and "gpt.img" in screen and "67.1 MB" in screen, screen
    screen = press(app, "backspace")
    assert "notes.txt" in screen
    press(app, "enter", "down", "enter")  # images/, past ../, gpt.img
    screen = wait_worker(app)
    assert "Restore: the image" in screen, screen
    assert "raw disk image" in screen and "GPT" in screen
    assert "Debian GNU/Linux 12 (bookworm)" in screen and "Windows" in screen
    _target_and_confirm(app, big, small, fitted=True)
    confirm_by_typing(app, app.restore, big.removeprefix("/dev/"), wrong="loop999")
    screen = wait_result(app, app.restore)
    assert "RESTORED AND VERIFIED" in screen, screen
    assert app.restore.result.status == "ok"
    assert "Debian GNU/Linux 12" in screen and "report:" in screen, screen
    assert os.path.exists(app.restore.result.report.text)
    assert not os.path.ismount(mnt)  # the medium is released after the restore
    _check_target(big, image, grown=False)
    screen = press(app, "enter")
    assert "Main menu" in screen.splitlines()[1]


def test_restore_from_url(env, image, targets):
    big, small = targets
    server = HttpServer(image.path.parent)
    server.httpd.handle_error = lambda *a: None  # probing reads the head, then hangs up
    try:
        app = App(log_dir=str(env / "log"), list_disks=own_disks(big, small))
        press(app, "b", "down", "enter")
        screen = render(app)
        assert "image from a URL" in screen
        screen = press(app, "down", "down", "down", " ")  # tick "skip TLS verification"
        assert "TLS NOT VERIFIED" in screen
        screen = press(app, " ")
        assert "TLS NOT VERIFIED" not in screen
        press(app, "up", "up", "up")
        type_text(app, "ftp://nowhere")
        screen = press(app, "enter")
        assert "starts with http:// or https://" in screen
        press(app, *["backspace"] * len("ftp://nowhere"))
        type_text(app, server.url("gpt.img"))
        press(app, "down", "down")  # the CA file field
        type_text(app, "/etc/hostname")
        screen = press(app, "enter")
        assert "A CA file is for an https:// URL" in screen, screen
        press(app, *["backspace"] * len("/etc/hostname"), "up", "up")
        press(app, "down")
        type_text(app, image.sha256)
        press(app, "enter")
        screen = wait_worker(app)
        assert "Restore: the image" in screen, screen
        assert "raw disk image" in screen and "GPT" in screen and "67.1 MB" in screen
        assert "Linux" in screen  # the partitions, read from the first MiB
        assert "plain HTTP (no TLS)" in screen
        _target_and_confirm(app, big, small)
        screen = render(app)
        assert f"sha256 {image.sha256[:16]}... (command" in screen, screen  # the typed one
        press(app, "up", "up", " ", "down", "down")  # tick "grow"
        type_text(app, big.removeprefix("/dev/"))
        press(app, "enter")
        screen = wait_result(app, app.restore)
        res = app.restore.result
        assert "RESTORED AND VERIFIED" in screen, (screen, res.message)
        assert res.sha256_match and res.input_sha256 == image.sha256
        assert res.fit and "Debian GNU/Linux 12" in screen
        v = subprocess.run(["sgdisk", "-v", big], capture_output=True, text=True).stdout
        assert "No problems found" in v, v
        _check_target(big, image, grown=True)
    finally:
        server.stop()


@pytest.fixture
def https(env, image):
    """An HTTPS server for the image, with a self-signed certificate: (server, its cert)."""
    cert, key = ri.self_signed(env)
    server = ri.RangeServer(image.path.parent, tls=(cert, key))
    yield server, cert
    server.stop()


def _retype(app, text: str) -> str:
    """Clear the focused field (to its end), then type ``text``."""
    press(app, "end", *["backspace"] * 200)
    return type_text(app, text)


def test_https_needs_the_ca_file(env, image, https, targets):
    """Without a CA file the self-signed server fails TLS verification; the CA file is
    checked on the URL screen (missing, a DER file); with it, inspection and restore work."""
    big, small = targets
    server, cert = https
    der = env / "ca.cer"
    ri.run("openssl", "x509", "-in", str(cert), "-outform", "der", "-out", str(der))
    app = App(log_dir=str(env / "log"), list_disks=own_disks(big, small))
    press(app, "b", "down", "enter")
    type_text(app, server.url("gpt.img"))
    press(app, "enter")
    screen = wait_worker(app)
    assert "Cannot use this image" in screen, screen
    text = dialog(screen)
    assert text.startswith(f"TLS verification failed for {server.url('gpt.img')}: self-signed "
                           "certificate (give the CA certificate that signed the server's: a CA "
                           "file"), text
    assert app.restore.inspection is None
    screen = press(app, "esc")  # the dialog's OK
    assert "image from a URL" in screen and "CA file (optional)" in screen
    press(app, "down", "down")  # the CA file field
    type_text(app, "/nonexistent/ca.pem")
    screen = words(press(app, "enter"))
    assert "The CA file /nonexistent/ca.pem does not exist." in screen, screen
    assert "Please wait" not in screen and app.restore.inspection is None
    _retype(app, str(der))
    screen = words(press(app, "enter"))
    assert f"{der} holds no PEM certificate" in screen, screen
    assert "openssl x509 -inform der" in screen
    _retype(app, str(cert))
    press(app, "down", " ", "down", "enter")  # tick "skip", then the button
    screen = words(render(app))
    assert "Give a CA file or skip TLS verification, not both." in screen, screen
    press(app, "up", " ", "up")  # untick, back to the CA file field
    press(app, "enter")
    screen = wait_worker(app)
    assert "Restore: the image" in screen, screen
    assert f"TLS verified with the CA file {cert}" in words(screen), screen
    assert "raw disk image" in screen and "67.1 MB" in screen
    assert app.restore.options.ca_file == str(cert) and not app.restore.options.insecure
    _target_and_confirm(app, big, small)
    screen = render(app, (80, 48))  # the IMAGE side, above the warnings
    assert "TLS verified" in screen and "TLS NOT VERIFIED" not in screen, screen
    type_text(app, big.removeprefix("/dev/"))
    press(app, "enter")
    screen = wait_result(app, app.restore)
    assert "RESTORED AND VERIFIED" in screen, (screen, app.restore.result.message)
    _check_target(big, image, grown=False)


def test_https_without_verification_is_shown(env, image, https, targets):
    """"Skip TLS verification": the self-signed server is accepted, and every screen up
    to the confirmation says TLS NOT VERIFIED (the plan's warnings carry it to the report)."""
    big, small = targets
    server, _cert = https
    app = App(log_dir=str(env / "log"), list_disks=own_disks(big, small))
    press(app, "b", "down", "enter")
    type_text(app, server.url("gpt.img"))
    screen = press(app, "down", "down", "down", " ")  # tick "skip TLS verification"
    assert "TLS NOT VERIFIED" in screen, screen
    press(app, "down", "enter")  # the button
    screen = wait_worker(app)
    assert "Restore: the image" in screen, screen
    assert "TLS NOT VERIFIED: the server's certificate was not checked" in words(screen)
    assert app.restore.options.insecure and app.restore.options.ca_file is None
    _target_and_confirm(app, big, small)
    screen = words(render(app))
    assert "TLS NOT VERIFIED: the server's certificate is not checked, anyone on the path " \
           "could send another image (and no SHA-256 checks it)" in screen, screen
    assert app.restore.plan.options.insecure
    press(app, "esc", "esc", "esc")  # back to the URL screen: nothing written
    assert app.restore.worker is None
    screen = press(app, "esc")
    assert "where is the image" in screen, screen
    screen = press(app, "enter")  # the URL screen again: "skip" is not kept
    assert server.url("gpt.img") in screen and "TLS NOT VERIFIED" not in screen, screen


def test_restore_from_iscsi_disk(env, image, targets):
    """A disk read as a raw image (an iSCSI LUN; here a read-only loop shown as iSCSI)."""
    big, small = targets
    with loop_device(image.path) as lun:
        subprocess.run(["blockdev", "--setro", lun], check=True)

        def disks():
            found = own_disks(lun, big, small)()
            for d in found:
                if d.path == lun:
                    d.transport = "iscsi"
            return found

        app = App(log_dir=str(env / "log"), list_disks=disks)
        screen = press(app, "b", "down", "down", "enter")
        assert "iSCSI disk holding the image" in screen and lun in screen, screen
        press(app, "enter")
        screen = wait_worker(app)
        assert "Restore: the image" in screen and "67.1 MB" in screen, screen
        assert "Debian GNU/Linux 12 (bookworm)" in screen
        reasons = {d.path: r for d, r in app.restore.target_choices()}
        assert reasons[lun] == "this disk holds the image"
        _target_and_confirm(app, big, small, fitted=True)
        type_text(app, big.removeprefix("/dev/"))
        press(app, "enter")
        if app.restore.worker.is_alive():
            screen = press(app, "esc")  # asks before cancelling...
            assert "Stop the restore?" in screen or app.restore.result is not None
            press(app, "esc")  # ...and Esc is "Keep restoring"
        screen = wait_result(app, app.restore)
        assert app.restore.result.status == "ok", app.restore.result.message
        assert "RESTORED AND VERIFIED" in screen, screen
        _check_target(big, image, grown=False)
