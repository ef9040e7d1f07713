"""The restore's write gate against what an image makes the restore read, on loop devices.

A container whose backing file (or VMDK extent, or ``json:`` name) is the target is
refused before anything is written, also inside .zst / .gz and over HTTP; a backing
file of a protocol the toolkit cannot follow (nbd://) is refused; a truncated GPT image
is refused (a file) or fails without a table (a stream that ends early); a resumed HTTP
download whose 206 carries no validator is never spliced; the menu's target list says
what the gate says. The target's bytes are hashed before and after each refused attempt.
Needs root.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import threading

import pytest
import restore_images as ri
from conftest import MiB, own_disks, rtk, words
from screen import press, render

from toolkit import restore

pytestmark = pytest.mark.host


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    return rtk_dirs


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    return ri.build_gpt_image(tmp_path_factory.mktemp("gate") / "gpt.img")


@pytest.fixture
def target(tmp_path, loops):
    def make(size: int = 96 * MiB) -> str:
        path = tmp_path / f"t{len(list(tmp_path.glob('t*.img')))}.img"
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        return loops(path)
    return make


def digest(dev: str, n: int | None = None) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        h.update(f.read() if n is None else f.read(n))
    return h.hexdigest()


def run(*cmd) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


def qcow2_over(path, backing: str, fmt: str = "raw"):
    run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt, path, "64M")
    return path


def cli(image, dev, *args):
    return rtk("restore", "--yes", "--target-id", dev, *args, str(image), dev)


def refused(image, dev, *, says: str) -> None:
    before = digest(dev)
    p = cli(image, dev)
    out = words(p.stdout + p.stderr)
    assert p.returncode == 5, out
    assert says in out, out
    assert digest(dev) == before, "the target was written"


def test_backing_file_is_the_target_in_zst_and_gz(tmp_path, target):
    dev = target()
    bk = qcow2_over(tmp_path / "bk.qcow2", dev)
    for kind, ext in (("zstd", ".zst"), ("gzip", ".gz")):
        refused(ri.compress(bk, kind, tmp_path / f"bk.qcow2{ext}"), dev, says=dev)


def test_two_level_chain_inside_zst(tmp_path, target):
    dev = target()
    base = qcow2_over(tmp_path / "base.qcow2", dev)
    mid = qcow2_over(tmp_path / "mid.qcow2", str(base), "qcow2")
    refused(ri.compress(mid, "zstd", tmp_path / "mid.qcow2.zst"), dev, says=dev)


def test_vmdk_flat_extent_on_the_target_inside_gz(tmp_path, target):
    dev = target()
    vmdk = tmp_path / "flat.vmdk"
    vmdk.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    'createType="monolithicFlat"\n\n'
                    f'RW {64 * MiB // 512} FLAT "{dev}" 0\n\n'
                    'ddb.adapterType = "ide"\n')
    refused(ri.compress(vmdk, "gzip", tmp_path / "flat.vmdk.gz"), dev, says=dev)


def test_json_backing_on_the_target_inside_zst(tmp_path, target):
    dev = target()
    name = "json:" + json.dumps({"driver": "raw", "file": {
        "driver": "host_device", "filename": dev, "locking": "off"}})
    bk = qcow2_over(tmp_path / "bk.qcow2", name)
    refused(ri.compress(bk, "zstd", tmp_path / "bk.qcow2.zst"), dev, says=dev)


def test_nbd_backing_is_refused(tmp_path, target):
    dev = target()
    bk = qcow2_over(tmp_path / "nbd.qcow2", "nbd://127.0.0.1:9/x")
    says = "the image's backing file is nbd://127.0.0.1:9/x"
    refused(bk, dev, says=says)
    refused(ri.compress(bk, "zstd", tmp_path / "nbd.qcow2.zst"), dev, says=says)


def test_backing_file_is_the_target_over_http(tmp_path, target):
    dev = target()
    qcow2_over(tmp_path / "bk.qcow2", dev)
    server = ri.RangeServer(tmp_path)
    try:
        refused(server.url("bk.qcow2"), dev, says=dev)
    finally:
        server.stop()


def test_truncated_gpt_file_is_refused(tmp_path, target, gpt):
    dev = target()
    trunc = tmp_path / "trunc.img"
    trunc.write_bytes(gpt.path.read_bytes()[:32 * MiB])
    refused(trunc, dev, says=f"the image ends at byte {32 * MiB} but its partition table "
                             f"describes a disk of {gpt.size} bytes")


class Server:
    """One file over HTTP. ``length``: send Content-Length; ``cut``: the first GET is cut
    after this many bytes; a ranged GET gets 206 from ``resume`` (bytes) without ETag."""

    def __init__(self, data: bytes, *, length=True, cut=None, resume=None):
        server = self
        self.count = 0

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                if self.path != "/img":
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=-"):  # the probe's tail: honest
                    n = int(rng[7:])
                    self.send_response(206)
                    self.send_header("ETag", '"A"')
                    self.send_header("Content-Range",
                                     f"bytes {len(data) - n}-{len(data) - 1}/{len(data)}")
                    self.send_header("Content-Length", str(n))
                    self.end_headers()
                    self.wfile.write(data[-n:])
                    return
                if not rng:
                    server.count += 1
                if rng and resume is not None:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(resume) - 1}/{len(resume)}")
                    self.send_header("Content-Length", str(len(resume) - start))
                    self.end_headers()
                    self.wfile.write(resume[start:])
                    return
                self.send_response(200)
                self.send_header("ETag", '"A"')
                self.send_header("Accept-Ranges", "bytes")
                if length:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                n = cut if cut is not None and server.count == 2 else len(data)
                try:
                    self.wfile.write(data[:n])
                    self.wfile.flush()
                    if n < len(data) or not length:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                except OSError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/img"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_stream_that_ends_early_fails_without_a_table(target, gpt):
    dev = target()
    server = Server(gpt.path.read_bytes()[:32 * MiB], length=False)
    try:
        p = cli(server.url, dev)
    finally:
        server.stop()
    out = words(p.stdout + p.stderr)
    assert p.returncode not in (0, 5), out
    assert "truncated" in out and "compressed stream" not in out, out
    with open(dev, "rb") as f:
        assert f.read(MiB) == bytes(MiB), "a partition table over half an image"


def test_206_without_validator_is_not_spliced(target, gpt):
    v1 = gpt.path.read_bytes()
    v2 = os.urandom(len(v1))
    dev = target()
    server = Server(v1, cut=8 * MiB, resume=v2)  # GET 1: the probe; GET 2: cut at 8 MiB
    try:
        plan = restore.plan_restore(server.url, dev, restore.RestoreOptions(), source_role=())
        res = restore.restore(plan)
    finally:
        server.stop()
    # past the GPT headers, which the fitting rewrites (the backup moved to the disk's end)
    with open(dev, "rb") as f:
        f.seek(MiB)
        on_disk = f.read(len(v1) - 2 * MiB)
    assert server.count >= 2, "the download was not cut"
    assert on_disk != (v1[:8 * MiB] + v2[8 * MiB:])[MiB:-MiB], "spliced: " + res.message
    assert res.status != "ok" or on_disk == v1[MiB:-MiB], res.message


def test_menu_target_list_agrees_with_the_gate(tmp_path, target, gpt, env):
    from tui.app import App

    dev, other = target(), target()
    bk = qcow2_over(tmp_path / "bk.qcow2", dev)
    app = App(log_dir=str(env / "log"), list_disks=own_disks(dev, other))
    press(app, "b")
    app.restore.choose_image(str(bk), restore.RestoreOptions())
    from conftest import wait_worker
    screen = wait_worker(app)
    assert "Restore: the image" in screen, screen
    screen = press(app, "enter")
    assert "choose the TARGET" in screen, screen
    reasons = {d.path: r for d, r in app.restore.target_choices()}
    assert reasons[other] is None and dev in (reasons[dev] or ""), reasons
    screen = words(press(app, *["down"] * 5))
    assert "cannot be chosen:" in screen and dev.removeprefix("/dev/") in screen, screen
    # the eligible one: a wrong typed confirmation starts nothing
    before = digest(other)
    press(app, *["up"] * 5, "enter")
    screen = wait_worker(app)
    assert "TARGET (overwritten)" in screen, screen
    name = other.removeprefix("/dev/")
    for ch in "loop999":
        press(app, ch)
    screen = press(app, "enter")
    assert f"Type exactly {name}" in render(app), screen
    assert app.restore.worker is None
    assert digest(other) == before
