"""``rtk fleet serve`` as an image server runs it: in a network namespace on a bridge
(tests/netns.py, 10.213.0.0/24 only inside the namespaces), its plan line used as is by
a machine's ``rtk restore`` in another namespace, onto a loop device; its refusals."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import netns
import pytest
from conftest import MiB
from loopdev import loop_device, make_image
from netns import Lan
from restore_images import build_gpt_image

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(not shutil.which("udp-sender"), reason="needs udpcast")]

RTK = [sys.executable, "-m", "toolkit.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_serve_prints_the_plan_line_and_sends_once(tmp_path, rtk_dirs, need_root):
    image = build_gpt_image(tmp_path / "node.img")
    back = make_image(tmp_path / "disk.img", image.size)
    with Lan() as lan, loop_device(back, partitions=False) as dev:
        s, r = lan.add(0), lan.add(1)
        serve = subprocess.Popen(lan.argv(s, [*RTK, "fleet", "serve", str(image.path),
                                              "--receivers", "1", "--interface", "eth0"]),
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        lines = [serve.stdout.readline() for _ in range(3)]
        assert lines[0] == f"sha256 {image.sha256}\n", lines
        m = re.match(r"plan image: (udpcast://\S+) ", lines[1])
        # rdv=: the sender's address on --interface (another sender on 9000 is not joined)
        assert m and m.group(1) == (f"udpcast://9000?sha256={image.sha256}&size={image.size}"
                                    f"&rdv={netns.NET}.10"), lines
        assert lines[2].startswith("$ udp-sender --file ") and "--min-receivers 1" in lines[2]
        # the machine: the plan line, its own NIC before the port base
        url = m.group(1).replace("udpcast://", "udpcast://eth0@") + "&start_timeout=30"
        rec = subprocess.run(lan.argv(r, [*RTK, "restore", url, dev, "--yes", "--target-id",
                                          os.path.basename(dev)]),
                             cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert rec.returncode == 0, rec.stdout + rec.stderr
        assert serve.wait(60) == 0, serve.stdout.read()
    with open(back, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == image.sha256


@pytest.mark.parametrize("args, code, says", [
    (["/nonexistent.img", "--receivers", "2"], 5, "/nonexistent.img is not a file"),
    (["IMAGE", "--receivers", "0"], 2, "--receivers: at least 1"),
    (["IMAGE", "--receivers", "2", "--portbase", "9001"], 2, "--portbase: even"),
    (["IMAGE", "--receivers", "2", "--rate", "fast"], 2, "--rate fast: expected bits"),
])
def test_serve_refuses_in_plain_words(tmp_path, args, code, says):
    img = tmp_path / "a.img"
    img.write_bytes(bytes(MiB))
    p = subprocess.run([*RTK, "fleet", "serve", *[str(img) if a == "IMAGE" else a
                                                  for a in args]],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == code, p.stdout + p.stderr
    assert says in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_sigterm_leaves_no_sender_behind(tmp_path, need_root):
    image = build_gpt_image(tmp_path / "node.img")
    with Lan() as lan:
        s = lan.add(0)
        serve = subprocess.Popen(lan.argv(s, [*RTK, "fleet", "serve", str(image.path),
                                              "--receivers", "2", "--interface", "eth0"]),
                                 cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(4)
        serve.send_signal(signal.SIGTERM)  # a supervisor stopping the wrapper
        serve.wait(20)
        time.sleep(1)
        left = subprocess.run(["ip", "netns", "pids", s], capture_output=True,
                              text=True).stdout.split()
    assert left == [], f"udp-sender still serves port 9000: pids {left}"


def test_exit_0_only_when_a_machine_was_there_at_the_end(tmp_path, need_root):
    from toolkit.restore import multicast
    path = tmp_path / "big.img"
    path.write_bytes(os.urandom(40 * MiB))
    with Lan() as lan:
        s, r = lan.add(0), lan.add(1)
        serve = subprocess.Popen(lan.argv(s, [*RTK, "fleet", "serve", str(path), "--receivers",
                                              "1", "--interface", "eth0", "--rate", "40m"]),
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        spec = multicast.parse("udpcast://eth0@9000?start_timeout=15")
        rc = subprocess.Popen(lan.argv(r, [*multicast.receiver_argv(spec), "--file",
                                           "/dev/null"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(4)
        rc.send_signal(signal.SIGINT)  # the only machine leaves (Esc in its menu)
        rc.wait()
        code = serve.wait(120)
        out = serve.stdout.read()
    assert "Transfer complete." in out, out[-600:]  # udp-sender itself exits 0
    assert code == 1 and "no machine was still receiving at the end" in out, out[-600:]
