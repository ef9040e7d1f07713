"""The unattended multicast restore's HTTP fallback, with the real tools: a machine that
joins a running stream late (udp-sender and an early receiver in network namespaces on
one bridge, tests/netns.py, 10.213.0.0/24 only inside them) fails the stream without
writing, then restores the same image from ``rtk.fallback=`` over HTTP, with the same
SHA-256, disk and consent; without a fallback the run fails clearly, the disk untouched.

The runner runs in the test's process, its thread moved into the late machine's
namespace (``netns.inside``): udp-receiver and the HTTP server (on that namespace's
127.0.0.1) are there too. Selection and consent as in tests/test_unattended_host.py (a
loop device given a serial, as udev gives a SCSI disk).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB, own_disks
from loopdev import marked_image
from netns import Lan, inside

from toolkit.restore import multicast
from toolkit.unattended import Console, RunReporter, run
from toolkit.unattended.cmdline import Cmdline
from toolkit.unattended.plan import read_plan

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(not shutil.which("udp-sender"), reason="needs udpcast")]

PORT = 9000
SIZE = 72 * MiB + 3217 * 512  # an odd size no other loop device on this host has
MARKER = b"RTK-FLEET-FALLBACK-" * 64


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return ri.build_mbr_image(tmp_path_factory.mktemp("fbimg") / "mbr.img")


def digest(path, n: int | None = None) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(n) if n is not None else f.read()).hexdigest()


@pytest.fixture
def late_machine(rtk_dirs, need_root, image):
    """A stream already running (a sender at 20 Mb/s, about 27 s for the image, and an
    early receiver): the late machine's namespace, yielded once 4 MiB went out."""
    with Lan() as lan:
        s, early, late = lan.add(0), lan.add(1), lan.add(2)
        argv = multicast.sender_argv(str(image.path), receivers=1, rate="20m",
                                     interface="eth0", portbase=PORT)
        snd = subprocess.Popen(lan.argv(s, argv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        spec = multicast.parse(f"udpcast://eth0@{PORT}?start_timeout=30")
        first = subprocess.Popen(lan.argv(early, [*multicast.receiver_argv(spec), "--file",
                                                  "/dev/null"]),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while Lan.tx_bytes(s) < 4 * MiB and time.monotonic() < deadline:
            time.sleep(0.1)
        yield late, snd
        for p in (first, snd):
            p.kill()
            p.wait()


def restore(late: str, image, dev: str, fallback: bool):
    with inside(late):
        server = ri.RangeServer(image.path.parent)  # on the late machine's 127.0.0.1
        try:
            text = (f"rtk.mode=restore rtk.image=udpcast://eth0@{PORT}?start_timeout=5 "
                    f"rtk.sha256={image.sha256} rtk.disk=rule:transport=loop,size={SIZE} "
                    "rtk.consent=serial:RTK-FLEET-1 rtk.done=menu"
                    + (f" rtk.fallback={server.url(image.path.name)}" if fallback else ""))
            con = Console(streams=[io.StringIO()])
            out = run(read_plan(Cmdline(text)), console=con, power=None,
                      list_disks=own_disks(dev, serials={dev: "RTK-FLEET-1"}),
                      reporter=RunReporter(None))
        finally:
            server.stop()
    return out, "\n".join(con.lines)


def test_a_late_machine_falls_back_to_http(image, late_machine, tmp_path, loops):
    late, snd = late_machine
    dev = loops(marked_image(tmp_path / "t.img", SIZE, MARKER))
    out, said = restore(late, image, dev, fallback=True)
    assert snd.poll() is None, "the stream ended before the late machine tried"
    assert out.status == "ok", out.message
    assert f"no multicast sender on {PORT} within 5 s" in out.message, out.message
    assert "from the fallback http://127.0.0.1:" in out.message
    assert "falling back to http://127.0.0.1:" in said and "(nothing was written)" in said
    fb = json.loads(Path(out.reports["json"]).read_text())["fallback"]
    assert fb["status"] == "failed" and fb["written_before"] is False, fb
    assert fb["url"].startswith("http://127.0.0.1:") and "no multicast sender" in fb["reason"]
    assert digest(dev, image.size) == image.sha256  # the image, from HTTP


def test_a_late_machine_without_fallback_fails_untouched(image, late_machine, tmp_path,
                                                         loops):
    late, snd = late_machine
    back = marked_image(tmp_path / "t.img", SIZE, MARKER)
    before = digest(back)
    dev = loops(back)
    out, said = restore(late, image, dev, fallback=False)
    assert snd.poll() is None, "the stream ended before the late machine tried"
    assert out.status == "failed" and not out.written, out.message
    assert f"no multicast sender on {PORT} within 5 s" in out.message, out.message
    assert "nothing was written" in out.message and "Traceback" not in said
    assert digest(dev) == before


def test_fit_failure_after_the_whole_stream_was_written_says_it_was_written(
        image, tmp_path, loops, rtk_dirs, need_root, monkeypatch):
    """The stream is written whole, its first MiB too; then fitting fails (made to): the
    run says the disk was written, not "nothing was written"."""
    from toolkit.restore import fit

    def broken(*a, **k):
        raise fit.FitError("made to fail")
    monkeypatch.setattr(fit, "fit", broken)
    dev = loops(marked_image(tmp_path / "t.img", SIZE, MARKER))
    with Lan() as lan:
        s, ns = lan.add(0), lan.add(1)
        argv = multicast.sender_argv(str(image.path), receivers=1, interface="eth0",
                                     portbase=PORT)
        snd = subprocess.Popen(lan.argv(s, argv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            with inside(ns):
                text = (f"rtk.mode=restore rtk.image=udpcast://eth0@{PORT}?start_timeout=30 "
                        f"rtk.sha256={image.sha256} rtk.disk=rule:transport=loop,size={SIZE} "
                        "rtk.consent=serial:RTK-FLEET-1 rtk.done=menu")
                con = Console(streams=[io.StringIO()])
                out = run(read_plan(Cmdline(text)), console=con, power=None,
                          list_disks=own_disks(dev, serials={dev: "RTK-FLEET-1"}),
                          reporter=RunReporter(None))
        finally:
            snd.kill()
            snd.wait()
    assert digest(dev, image.size) == image.sha256  # the image was written whole
    assert out.status == "failed", out.message
    assert out.written, out.reason
    assert "before writing anything" not in out.reason + out.message, out.reason
    assert json.loads(Path(out.reports["json"]).read_text())["written"] is True


@pytest.mark.parametrize("which", ["fallback", "image"])
def test_a_urls_password_and_token_never_show(which, image, tmp_path, loops, rtk_dirs,
                                              need_root):
    """No sender; rtk.fallback= (or rtk.image=) with user:password@ and ?token=, the file
    missing: neither secret is in the console, the run's message or its reports."""
    back = marked_image(tmp_path / "t.img", SIZE, MARKER)
    before = digest(back)
    dev = loops(back)
    with Lan() as lan:
        ns = lan.add(1)
        with inside(ns):
            server = ri.RangeServer(image.path.parent)
            try:
                host = server.url("").split("//", 1)[1].rstrip("/")
                url = f"http://tech:S3CRETPW@{host}/missing.img?token=T0KEN42"
                img = (f"udpcast://eth0@{PORT}?start_timeout=2 rtk.fallback={url}"
                       if which == "fallback" else url)
                text = (f"rtk.mode=restore rtk.image={img} rtk.sha256={image.sha256} "
                        f"rtk.disk=rule:transport=loop,size={SIZE} "
                        "rtk.consent=serial:RTK-FLEET-1 rtk.done=menu")
                con = Console(streams=[io.StringIO()])
                out = run(read_plan(Cmdline(text)), console=con, power=None,
                          list_disks=own_disks(dev, serials={dev: "RTK-FLEET-1"}),
                          reporter=RunReporter(None))
            finally:
                server.stop()
    everything = "\n".join(con.lines) + out.message + out.reason
    for p in (out.reports or {}).values():
        everything += Path(p).read_text()
    assert out.status != "ok", out.message
    assert "missing.img" in everything, everything  # the URL is named, its secrets not
    assert "S3CRETPW" not in everything and "T0KEN42" not in everything, everything
    assert digest(dev) == before
