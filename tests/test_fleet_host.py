"""Multicast restores (udpcast) in network namespaces on one bridge (tests/netns.py).

Every address is in 10.213.0.0/24 and exists only inside the namespaces the test
makes and removes; each receiver restores with ``rtk restore udpcast://...`` run
inside its namespace onto a loop device of its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.loopdev import loop_device, make_image
from tests.netns import Lan
from tests.restore_images import build_gpt_image

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, loops)"),
              pytest.mark.skipif(not shutil.which("udp-sender"), reason="needs udpcast")]

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def sha(path: str, size: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left is None or left > 0:
            data = f.read(MiB if left is None else min(MiB, left))
            if not data:
                break
            h.update(data)
            if left is not None:
                left -= len(data)
    return h.hexdigest()


def sender(lan, ns, image, receivers, port=9000, max_wait=None, rate=None,
           retries_until_drop=5000):
    """udp-sender in ``ns``. It drops a receiver that misses ``retries_until_drop``
    retransmissions (udpcast's default is 200): a receiver only slowed by a loaded test
    machine would otherwise see its stream stop (exit 1 after "Transfer complete.")."""
    from toolkit.restore import multicast
    argv = multicast.sender_argv(str(image), receivers=receivers, max_wait=max_wait,
                                 interface="eth0", portbase=port, rate=rate,
                                 retries_until_drop=retries_until_drop)
    return subprocess.Popen(lan.argv(ns, argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def receiver(lan, ns, dev, url, env=None):
    argv = [sys.executable, "-m", "toolkit.cli", "restore", url, dev, "--yes",
            "--target-id", os.path.basename(dev)]
    return subprocess.Popen(lan.argv(ns, argv), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RTK_LOG_DIR": str(env)} if env else None)


@pytest.fixture
def image(tmp_path):
    return build_gpt_image(tmp_path / "image.img").path


def disks(tmp_path, n, size=64 * MiB):  # the image's size: no fitting
    return [make_image(tmp_path / f"disk{i}.img", size) for i in range(n)]


def test_three_receivers_restore_one_stream(tmp_path, image):
    digest = sha(str(image))
    size = os.path.getsize(image)
    backs = disks(tmp_path, 3)
    with Lan() as lan, loop_device(backs[0], partitions=False) as d0, \
            loop_device(backs[1], partitions=False) as d1, \
            loop_device(backs[2], partitions=False) as d2:
        s = lan.add(0)
        rs = [lan.add(i + 1) for i in range(3)]
        tx0 = lan.tx_bytes(s)
        snd = sender(lan, s, image, 3, max_wait=60)
        url = f"udpcast://eth0@9000?sha256={digest}&start_timeout=30"
        procs = [receiver(lan, ns, dev, url, tmp_path / f"log{i}")
                 for i, (ns, dev) in enumerate(zip(rs, (d0, d1, d2), strict=True))]
        outs = [p.communicate(timeout=180)[0] for p in procs]
        assert snd.wait(60) == 0, snd.stderr.read()
        egress = lan.tx_bytes(s) - tx0
        for p, out in zip(procs, outs, strict=True):
            assert p.returncode == 0, out
        for dev in (d0, d1, d2):
            assert sha(dev, size) == digest
    print(f"sender egress {egress} bytes for 3 receivers: {egress / size:.3f}x the image")
    assert egress < 1.5 * size


def test_late_receiver_fails_clearly_without_writing(tmp_path, image):
    back, = disks(tmp_path, 1)
    with open(back, "r+b") as f:  # a recognisable disk: it must stay as it was
        f.write(b"\xa5" * MiB)
    before = sha(str(back))
    with Lan() as lan, loop_device(back, partitions=False) as dev:
        s, first, late = lan.add(0), lan.add(1), lan.add(2)
        other = make_image(tmp_path / "first.img", 64 * MiB)
        with loop_device(other, partitions=False) as d_first:
            snd = sender(lan, s, image, 1, rate="60m")  # about 9 s for 64 MiB
            tx0 = lan.tx_bytes(s)
            hashed = f"sha256={sha(str(image))}"
            p1 = receiver(lan, first, d_first, f"udpcast://eth0@9000?start_timeout=30&{hashed}")
            # the stream runs, then the late machine joins
            deadline = time.monotonic() + 60
            while lan.tx_bytes(s) - tx0 < 4 * MiB and time.monotonic() < deadline:
                time.sleep(0.1)
            p2 = receiver(lan, late, dev, f"udpcast://eth0@9000?start_timeout=5&{hashed}")
            out2 = p2.communicate(timeout=120)[0]
            p1.communicate(timeout=180)
            stop_sender(snd)
        assert p2.returncode != 0, out2
        assert p1.returncode == 0
        assert "no multicast sender on 9000 within 5 s" in out2, out2
        assert "nothing was written" in out2
    assert sha(str(back)) == before  # not a byte written


def stop_sender(snd, timeout: float = 60) -> None:
    """Let udp-sender end; on a loaded machine it may still be re-sending to receivers
    that are gone, so it is killed after ``timeout``."""
    try:
        snd.wait(timeout)
    except subprocess.TimeoutExpired:
        snd.kill()
        snd.wait()


def test_wrong_sha256_with_spool_never_leaves_no_valid_disk(tmp_path, image):
    """spool=never: the stream is written as it arrives (as without room to hold it,
    tests/test_fleet_spool_host.py), so a wrong SHA-256 is found after the rest is
    written: the disk is overwritten but left without a table."""
    size = os.path.getsize(image)
    backs = disks(tmp_path, 2)
    wrong = "0" * 64
    with Lan() as lan, loop_device(backs[0], partitions=False) as d0, \
            loop_device(backs[1], partitions=False) as d1:
        s = lan.add(0)
        rs = [lan.add(1), lan.add(2)]
        snd = sender(lan, s, image, 2, max_wait=60)
        url = f"udpcast://eth0@9000?sha256={wrong}&start_timeout=30&spool=never"
        procs = [receiver(lan, ns, dev, url) for ns, dev in zip(rs, (d0, d1), strict=True)]
        outs = [p.communicate(timeout=180)[0] for p in procs]
        stop_sender(snd)  # its own exit is not what this test is about
        for p, out in zip(procs, outs, strict=True):
            assert p.returncode != 0, out
            assert "warning: spool=never: the multicast stream is written onto the disk" in out
            assert "first MiB was not written" in out, out
        for dev in (d0, d1):
            with open(dev, "rb") as f:
                head = f.read(MiB)
                f.seek(-MiB, os.SEEK_END)
                tail = f.read(MiB)
            assert head == bytes(MiB), "the first MiB (the table) must be zero"
            assert tail == bytes(MiB), "the last MiB (the backup GPT) must be zero"
            blkid = subprocess.run(["blkid", "-p", dev], capture_output=True, text=True)
            assert "PTTYPE" not in blkid.stdout
    assert size
