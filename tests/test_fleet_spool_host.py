"""A multicast stream held whole before anything is written (toolkit/restore/spool.py), with
the real tools: udp-sender and receivers (``rtk restore udpcast://...``) in network
namespaces on one bridge (tests/netns.py: 10.213.0.0/24 exists only inside them), each
restoring onto a loop device of its own, its spool in a TMPDIR of its own.

Three receivers hold one stream, check it, then write it; a wrong SHA-256 leaves every disk
untouched, byte for byte (the whole device hashed before and after); a TMPDIR without room
(a small tmpfs) makes the receiver write the stream as it arrives, as the plan says, and a
wrong SHA-256 then overwrites the disk but leaves no table; ``spool=always`` in that small
room stops the receive when it outgrows it, nothing written; a machine whose disk takes
no write at all while the stream runs (a loop device over tests/fusehold.py's file) does
not hold the fleet back: the sender ends, the other machine is done, and that disk is
written once it takes writes again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MiB
from loopdev import loop_device, make_image
from netns import Lan, sh
from restore_images import build_gpt_image, build_mbr_image

from toolkit.restore import multicast

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(not shutil.which("udp-sender"), reason="needs udpcast")]

ROOT = Path(__file__).resolve().parent.parent
FUSEHOLD = ROOT / "tests" / "fusehold.py"
EXIT_MISMATCH = 4


def sha(path, size: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while data := f.read(MiB if left is None else min(MiB, left)):
            h.update(data)
            if left is not None:
                left -= len(data)
    return h.hexdigest()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return build_gpt_image(tmp_path_factory.mktemp("spoolimg") / "gpt.img")


def marked_disk(path: Path, size: int) -> Path:
    """A disk with something at its start, middle and end: "untouched" means something."""
    make_image(path, size)
    with open(path, "r+b") as f:
        for i, off in enumerate((0, size // 2, size - MiB)):
            f.seek(off)
            f.write(bytes([0xA5 + i]) * MiB)
    return path


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir()
    sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        sh("umount", str(path), check=False)


def sender(lan, ns, image, receivers, max_wait=None, rate=None):
    argv = multicast.sender_argv(str(image), receivers=receivers, max_wait=max_wait,
                                 interface="eth0", portbase=9000, rate=rate)
    return subprocess.Popen(lan.argv(ns, argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(proc, timeout: float = 60) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:  # still re-sending to receivers that are gone
        proc.kill()
        proc.wait()


def receiver(lan, ns, dev, url, spool_dir: Path, log: Path):
    argv = [sys.executable, "-m", "toolkit.cli", "restore", url, dev, "--yes",
            "--target-id", os.path.basename(dev)]
    env = {**os.environ, "TMPDIR": str(spool_dir), "RTK_LOG_DIR": str(log)}
    return subprocess.Popen(lan.argv(ns, argv), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def report(out: str) -> dict:
    m = re.search(r"^report: (\S+)\.txt$", out, re.M)
    assert m, out
    return json.loads(Path(m.group(1) + ".json").read_text())


def run_fleet(tmp_path, image, urls, spool_dirs, disks, max_wait=60, linger=60):
    """One sender, a receiver per URL (its own namespace, spool dir, disk); their outputs
    and return codes, and the sender's egress."""
    with Lan() as lan, contextlib.ExitStack() as stack:
        devs = [stack.enter_context(loop_device(d, partitions=False)) for d in disks]
        s = lan.add(0)
        spaces = [lan.add(i + 1) for i in range(len(urls))]
        tx0 = lan.tx_bytes(s)
        snd = sender(lan, s, image.path, len(urls), max_wait=max_wait)
        procs = [receiver(lan, ns, dev, url, sd, tmp_path / f"log{i}")
                 for i, (ns, dev, url, sd) in enumerate(zip(spaces, devs, urls, spool_dirs,
                                                            strict=True))]
        outs = [p.communicate(timeout=240)[0] for p in procs]
        stop(snd, linger)
        return outs, [p.returncode for p in procs], lan.tx_bytes(s) - tx0, snd.returncode


def spool_dirs(tmp_path, n: int) -> list[Path]:
    dirs = [tmp_path / f"spool{i}" for i in range(n)]
    for d in dirs:
        d.mkdir()
    return dirs


def test_three_receivers_hold_the_stream_then_write_it(tmp_path, image, need_root):
    disks = [make_image(tmp_path / f"disk{i}.img", image.size) for i in range(3)]
    dirs = spool_dirs(tmp_path, 3)
    url = f"udpcast://eth0@9000?sha256={image.sha256}&start_timeout=60"
    outs, codes, egress, sent = run_fleet(tmp_path, image, [url] * 3, dirs, disks)
    assert sent == 0
    for out, code, d, disk in zip(outs, codes, dirs, disks, strict=True):
        assert code == 0, out
        assert f"warning: the multicast stream is held in {d} (disk, room for " in out, out
        phases = re.findall(r"^(receive|write|verify|finish) ", out, re.M)
        n = phases.count("receive")
        assert n and phases[:n] == ["receive"] * n and len(phases) > n, out  # then the disk
        rep = report(out)
        held = rep["image"]["spool"]
        assert held["hold"] and held["directory"] == str(d) and held["mode"] == "auto", held
        assert held["received"] == image.size and held["bound_from"] == "target"
        assert rep["image"]["sha256_match"] is True and rep["status"] == "ok"
        assert sha(disk) == image.sha256  # the image, byte for byte
        assert list(d.iterdir()) == []  # the spool is gone
    assert egress < 1.5 * image.size


def test_a_wrong_sha256_leaves_every_disk_untouched(tmp_path, image, need_root):
    disks = [marked_disk(tmp_path / f"disk{i}.img", image.size) for i in range(3)]
    dirs = spool_dirs(tmp_path, 3)
    with contextlib.ExitStack() as stack:  # the devices themselves, hashed whole
        devs = [stack.enter_context(loop_device(d, partitions=False)) for d in disks]
        before = [sha(dev) for dev in devs]
    url = f"udpcast://eth0@9000?sha256={'0' * 64}&start_timeout=60"
    outs, codes, _, _ = run_fleet(tmp_path, image, [url] * 3, dirs, disks)
    for out, code, d in zip(outs, codes, dirs, strict=True):
        assert code == EXIT_MISMATCH, out
        assert f"hashes to {image.sha256}, expected {'0' * 64}" in out, out
        assert f"nothing was written (the stream was held in {d}, and is deleted)" in out
        assert report(out)["image"]["spool"]["received"] == image.size
        assert list(d.iterdir()) == []
    with contextlib.ExitStack() as stack:
        devs = [stack.enter_context(loop_device(d, partitions=False)) for d in disks]
        assert [sha(dev) for dev in devs] == before  # not a byte written


def test_a_stream_longer_than_its_size_or_its_target_stops_with_nothing_written(
        tmp_path, image, need_root):
    """One stream, three machines: size= right (held, with a known total), size= a MiB
    short (not the planned image: mismatch when it passes that), no size= and a 32 MiB
    target (more than any image that fits it can be: refused). The two that stop tell the
    sender they leave (udp-receiver stopped with SIGINT), so the first is not slowed down:
    with SIGTERM the sender re-sent to them at a crawl for minutes."""
    disks = [marked_disk(tmp_path / "disk0.img", image.size),
             marked_disk(tmp_path / "disk1.img", image.size),
             marked_disk(tmp_path / "disk2.img", 32 * MiB)]
    before = [sha(d) for d in disks]
    dirs = spool_dirs(tmp_path, 3)
    base = f"udpcast://eth0@9000?sha256={image.sha256}&start_timeout=60"
    urls = [f"{base}&size={image.size}", f"{base}&size={image.size - MiB}", base]
    t0 = time.monotonic()
    outs, codes, _, _ = run_fleet(tmp_path, image, urls, dirs, disks, linger=10)
    assert codes[0] == 0, outs[0]
    assert time.monotonic() - t0 < 90  # about 7 s here
    held = report(outs[0])["image"]["spool"]
    assert (held["bound"], held["bound_from"], held["received"]) == (
        image.size, "size=", image.size), held
    assert re.search(r"^receive +\d+\.\d%", outs[0], re.M), outs[0]  # a total: a percentage
    assert sha(disks[0], image.size) == image.sha256
    assert codes[1] == EXIT_MISMATCH, outs[1]
    assert f"more than its size= ({image.size - MiB}): not the planned image; nothing was " \
           "written" in outs[1], outs[1]
    assert codes[2] == 5, outs[2]  # refused
    assert "more than any image that fits the target could be (34734080 bytes, its size " \
           "33554432 plus 1/256 and 1 MiB); nothing was written" in outs[2], outs[2]
    assert [sha(d) for d in disks[1:]] == before[1:]
    for d in dirs:
        assert list(d.iterdir()) == []


def test_no_room_writes_it_as_it_arrives_and_a_wrong_one_leaves_no_table(tmp_path, image,
                                                                         need_root):
    """The documented fallback: a spool directory without room (a 16 MiB tmpfs for a
    64 MiB target) and the plan says so; a wrong SHA-256 is then found after the rest is
    written: the disk is overwritten, its first and last MiB zero, no table."""
    disk = marked_disk(tmp_path / "disk.img", image.size)
    with tmpfs(tmp_path / "small", "16m") as small:
        url = f"udpcast://eth0@9000?sha256={'0' * 64}&start_timeout=60"
        outs, codes, _, _ = run_fleet(tmp_path, image, [url], [small], [disk])
    out, = outs
    assert codes == [EXIT_MISMATCH], out
    assert ("warning: no room to hold the stream: a wrong image overwrites the disk but "
            "leaves no valid partition table") in out, out
    assert "the most room to hold it is 0 B in" in out and ", RAM; docs/fleet.md)" in out
    assert "first MiB was not written (no partition table" in out, out
    assert report(out)["image"]["spool"]["hold"] is False
    with open(disk, "rb") as f, open(image.path, "rb") as im:
        head = f.read(MiB)
        im.seek(MiB)
        assert f.read(image.size - 2 * MiB) == im.read(image.size - 2 * MiB)  # overwritten
        assert head == bytes(MiB) and f.read() == bytes(MiB)  # no table, no backup GPT
    assert "PTTYPE" not in sh("blkid", "-p", str(disk), check=False).stdout


def test_always_in_too_small_a_room_stops_with_nothing_written(tmp_path, image, need_root):
    """spool=always in a 96 MiB tmpfs: room for 32 MiB (64 MiB stay free), a 64 MiB
    stream: the receive stops when it outgrows it; the disk untouched."""
    disk = marked_disk(tmp_path / "disk.img", image.size)
    before = sha(disk)
    with tmpfs(tmp_path / "small", "96m") as small:
        url = f"udpcast://eth0@9000?sha256={image.sha256}&start_timeout=60&spool=always"
        outs, codes, _, _ = run_fleet(tmp_path, image, [url], [small], [disk], linger=5)
        assert list(small.iterdir()) == []
    out, = outs
    assert codes == [1], out
    assert f"warning: spool=always: the multicast stream is held in {small} (RAM, " in out
    assert "if it outgrows that room, the receive stops and nothing is written" in out
    assert f"the multicast stream outgrew the room to hold it in {small} at byte " in out, out
    assert "the receive stopped; nothing was written" in out
    assert not re.search(r"^write ", out, re.M), out
    assert sha(disk) == before


@contextlib.contextmanager
def held_disk(tmp_path, size: int):
    """A loop device over tests/fusehold.py's file: it takes no write while the flag file
    exists. Yields (device, flag, backing file)."""
    backing = marked_disk(tmp_path / "held.img", size)
    mnt, flag = tmp_path / "held", tmp_path / "hold-writes"
    mnt.mkdir()
    flag.touch()
    server = subprocess.Popen([sys.executable, str(FUSEHOLD), str(backing), str(mnt),
                               str(flag)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not (mnt / "disk.img").exists():
            assert time.monotonic() < deadline and server.poll() is None, server.stdout.read1()
            time.sleep(0.05)
        with loop_device(mnt / "disk.img", partitions=False) as dev:
            yield dev, flag, backing
    finally:
        flag.unlink(missing_ok=True)
        for _ in range(20):  # the loop device may still be letting go
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        stop(server, 10)


def test_a_disk_that_takes_no_write_does_not_hold_the_fleet_back(tmp_path, image,
                                                                  need_root):
    """The slowest disk does not pace the fleet: the stream is held whole before the disk
    is written, so the sender ends (every machine got it all) and the other machine is
    restored while one disk has not taken a single write; that one is restored after."""
    fast = make_image(tmp_path / "fast.img", image.size)
    dirs = spool_dirs(tmp_path, 2)
    url = f"udpcast://eth0@9000?sha256={image.sha256}&start_timeout=60"
    with held_disk(tmp_path, image.size) as (slow, flag, backing), Lan() as lan, \
            loop_device(fast, partitions=False) as quick:
        before = sha(backing)
        s, a, b = lan.add(0), lan.add(1), lan.add(2)
        snd = sender(lan, s, image.path, 2, max_wait=60)
        pa = receiver(lan, a, quick, url, dirs[0], tmp_path / "log0")
        pb = receiver(lan, b, slow, url, dirs[1], tmp_path / "log1")
        try:
            assert snd.wait(120) == 0, snd.stderr.read()  # all sent, to both
            out_a = pa.communicate(timeout=240)[0]
            assert pa.returncode == 0, out_a
            assert pb.poll() is None  # the other one waits for its disk...
            assert sha(backing) == before  # ...which has not taken a byte
        finally:
            flag.unlink()  # the disk takes writes again
        out_b = pb.communicate(timeout=240)[0]
    assert pb.returncode == 0, out_b
    assert report(out_b)["image"]["spool"]["received"] == image.size
    assert sha(fast) == image.sha256 and sha(backing) == image.sha256


@pytest.fixture(scope="module")
def mbr_image(tmp_path_factory):
    return build_mbr_image(tmp_path_factory.mktemp("spoolmbr") / "mbr.img")


@pytest.mark.parametrize("compress", [False, True], ids=["plain-spool-never-size", "zstd-held"])
def test_mbr_image_larger_than_the_target_is_refused_before_writing(
        tmp_path, mbr_image, compress, need_root):
    """An MBR image whose last partition ends at 64 MiB, a 48 MiB target holding a GPT of
    its own: the first MiB says so (the plain stream's size= too) before anything is
    written; the target is left byte for byte."""
    src = mbr_image.path
    if compress:
        src = tmp_path / "mbr.img.zst"
        subprocess.run(["zstd", "-q", "-f", str(mbr_image.path), "-o", str(src)], check=True)
    disk = make_image(tmp_path / "disk.img", 48 * MiB)
    sh("sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(disk))
    before = sha(disk)
    q = f"size={src.stat().st_size}" + ("" if compress else "&spool=never")
    url = f"udpcast://eth0@9000?sha256={sha(src)}&start_timeout=60&{q}"
    outs, codes, _, _ = run_fleet(tmp_path, _Sent(src), [url], spool_dirs(tmp_path, 1), [disk],
                                  linger=10)
    assert codes[0] == 5, outs[0]  # refused
    assert "more than the target's 50331648: nothing was written" in outs[0], outs[0]
    assert sha(disk) == before


def test_a_tar_gz_streamed_is_refused_before_writing(tmp_path, need_root):
    """A tar.gz made by tar, streamed as it arrives (spool=never): refused from its first
    MiB in plain words; the target is left byte for byte."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.bin").write_bytes(os.urandom(4 * MiB))
    arch = tmp_path / "backup.tar.gz"
    subprocess.run(["tar", "-czf", str(arch), "-C", str(files), "."], check=True)
    disk = marked_disk(tmp_path / "disk.img", 32 * MiB)
    before = sha(disk)
    url = f"udpcast://eth0@9000?sha256={sha(arch)}&start_timeout=60&spool=never"
    outs, codes, _, _ = run_fleet(tmp_path, _Sent(arch), [url], spool_dirs(tmp_path, 1),
                                  [disk], linger=10)
    assert codes[0] == 5, outs[0]
    assert "this is a tar archive, not a disk image" in outs[0], outs[0]
    assert sha(disk) == before


class _Sent:
    """What run_fleet sends: a file's path."""

    def __init__(self, path: Path):
        self.path = path
