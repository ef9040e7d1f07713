"""A copy job of several pairs (``rtk copy SRC1 DST1 SRC2 DST2``) on real loop devices:
both pairs copied, one job report; refused before anything is written when a TARGET is
another pair's SOURCE by an alias (a second loop device over its file, a partition of
it) or the same disk is the TARGET of two pairs; the worst pair's exit code; a pair that
does not verify stops the pairs after it (and, side by side, the rest of its lane);
Ctrl-C; ``--used-blocks`` (an ext4 SOURCE copied by its used blocks, checked clean); the
cluster disk sentence of the summary."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, RTK, MiB, rtk
from loopdev import fuse_disk, loop_device, make_image, run

pytestmark = pytest.mark.host

SIZES = (8 * MiB + 512, 6 * MiB)  # two sources of different sizes


def random_image(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def digest(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def same(a: str, b: str, size: int) -> bool:
    return subprocess.run(["cmp", "-n", str(size), a, b]).returncode == 0


def name(dev: str) -> str:
    return os.path.basename(dev)


@pytest.fixture
def pairs(tmp_path, loops, log_dir):
    """Two pairs of loop devices: (s1, d1, s2, d2)."""
    out = []
    for n, size in enumerate(SIZES, 1):
        out += [loops(random_image(tmp_path / f"s{n}.img", size)),
                loops(make_image(tmp_path / f"d{n}.img", size + 2 * MiB))]
    return out


def job_report(log_dir) -> dict:
    (path,) = Path(log_dir).glob("copy-job-*.json")
    return json.loads(path.read_text())


def test_two_pairs_copied_with_one_job_report(pairs, log_dir):
    s1, d1, s2, d2 = pairs
    p = rtk("copy", s1, d1, s2, d2, "--yes", "--target-id", name(d1), "--target-id", name(d2))
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(s1, d1, SIZES[0]) and same(s2, d2, SIZES[1])
    assert "2 pairs, side by side where they share no device" in p.stderr  # one summary
    assert p.stderr.index("pair 2 of 2:\n") < p.stderr.index("pair 1 of 2 (")
    assert "all 2 pairs copied, verified" in p.stdout
    data = job_report(log_dir)
    assert data["kind"] == "copy-job" and data["result"] == "ok" and data["exit_code"] == 0
    assert [(x["source"]["node"], x["target"]["node"], x["result"]) for x in data["pairs"]] \
        == [(s1, d1, "ok"), (s2, d2, "ok")]
    for x in data["pairs"]:  # each pair keeps its own report, the job points to it
        own = json.loads(Path(x["report"]["json"]).read_text())
        assert own["kind"] == "copy" and own["target"]["node"] == x["target"]["node"]
        assert x["verified"] is True and x["hash"]["source"] == own["hash"]["source"]
    text = next(Path(log_dir).glob("copy-job-*.txt")).read_text()
    assert "Pair 2" in text and "copied, verified" in text


def test_side_by_side_copies_the_same(pairs, log_dir):
    s1, d1, s2, d2 = pairs
    p = rtk("copy", s1, d1, s2, d2, "--concurrent", "--yes", "--target-id", name(d1),
            "--target-id", name(d2))
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(s1, d1, SIZES[0]) and same(s2, d2, SIZES[1])
    assert "side by side" in p.stderr and job_report(log_dir)["order"] == "concurrent"
    reports = {x["report"]["json"] for x in job_report(log_dir)["pairs"]}
    assert len(reports) == 2  # started together, each its own report


def test_target_that_is_another_pairs_source_by_a_second_loop_device(tmp_path, pairs,
                                                                     loops, log_dir):
    s1, d1, s2, d2 = pairs
    alias = loops(tmp_path / "s1.img")  # a second loop device over pair 1's source file
    before = digest(s1), digest(d1)
    p = rtk("copy", s1, d1, s2, alias, "--yes", "--target-id", name(d1), "--target-id",
            name(alias))
    assert p.returncode == 5, p.stdout + p.stderr
    assert f"pair 2 ({s2} -> {alias}): the target {alias}" in p.stderr
    assert f"source of pair 1 {s1}" in p.stderr
    assert (digest(s1), digest(d1)) == before  # nothing written, pair 1 neither
    assert not list(Path(log_dir).glob("copy-*.json"))


def test_target_that_is_a_partition_of_another_pairs_source(tmp_path, loops, pairs,
                                                            log_dir):
    s1, d1, s2, d2 = pairs
    disk_img = random_image(tmp_path / "parted.img", 8 * MiB)  # pair 1: onto d1 (10 MiB)
    subprocess.run(["sfdisk", "-q", str(disk_img)], input="start=2048, size=14336\n",
                   text=True, check=True)
    disk = loops(disk_img, partitions=True)
    part = f"{disk}p1"
    assert os.path.exists(part)
    before = digest(disk)
    p = rtk("copy", disk, d1, s2, part, "--yes", "--target-id", name(d1), "--target-id",
            name(part))
    assert p.returncode == 5, p.stdout + p.stderr
    assert f"pair 2 ({s2} -> {part})" in p.stderr and "source of pair 1" in p.stderr
    assert digest(disk) == before


def test_a_pairs_source_that_is_an_earlier_pairs_target(tmp_path, loops, pairs, log_dir):
    """Pair 1 would write the disk pair 2 reads (by another loop device over its file)."""
    s1, d1, s2, d2 = pairs
    alias = loops(tmp_path / "d1.img")
    d3 = loops(make_image(tmp_path / "d3.img", 12 * MiB))  # as large as the alias, or more
    before = digest(d1)
    p = rtk("copy", s1, d1, alias, d3, "--yes", "--target-id", name(d1), "--target-id",
            name(d3))
    assert p.returncode == 5, p.stdout + p.stderr
    assert f"pair 1 ({s1} -> {d1})" in p.stderr and f"source of pair 2 {alias}" in p.stderr
    assert digest(d1) == before


def test_the_same_target_twice(pairs, log_dir):
    s1, d1, s2, d2 = pairs
    before = digest(d1)
    p = rtk("copy", s1, d1, s2, d1, "--yes", "--target-id", name(d1), "--target-id", name(d1))
    assert p.returncode == 5, p.stdout + p.stderr
    assert f"{d1} is the TARGET of pair 1 and of pair 2" in p.stderr
    assert digest(d1) == before


def test_consents_one_per_target_in_order(pairs, log_dir):
    s1, d1, s2, d2 = pairs
    before = digest(d1), digest(d2)
    p = rtk("copy", s1, d1, s2, d2, "--yes", "--target-id", name(d1))
    assert p.returncode == 5 and "one --target-id per pair" in p.stderr, p.stderr
    p = rtk("copy", s1, d1, s2, d2, "--yes", "--target-id", name(d2), "--target-id", name(d1))
    assert p.returncode == 5 and f"pair 1: --target-id {name(d2)} does not match" in p.stderr
    assert (digest(d1), digest(d2)) == before


def test_usage(pairs, log_dir):
    s1, d1, s2, _d2 = pairs
    p = rtk("copy", s1, d1, s2)
    assert p.returncode == 2 and "3 paths given, the last" in p.stderr, p.stderr
    p = rtk("copy", s1, d1, s2, _d2, "--mapfile", "/tmp/x.map")
    assert p.returncode == 2 and "--mapfile names the mapfile of one pair" in p.stderr


@pytest.fixture
def bad_source(tmp_path, need_root):
    """A loop device over a FUSE file whose reads fail with EIO in 1 KiB at 1 MiB."""
    backing = random_image(tmp_path / "backing.img", SIZES[0])
    with fuse_disk(backing, tmp_path / "fuse", [(MiB, 1024)]) as disk:
        dev = run("losetup", "-r", "-f", "--show", str(disk)).strip()
        try:
            yield dev
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)


def test_unreadable_pair_does_not_stop_the_job_and_sets_the_exit_code(pairs, bad_source,
                                                                      log_dir):
    s1, d1, s2, d2 = pairs
    p = rtk("copy", bad_source, d1, s2, d2, "--yes", "--target-id", name(d1),
            "--target-id", name(d2))
    assert p.returncode == 3, p.stdout + p.stderr
    assert same(s2, d2, SIZES[1])  # pair 2 ran
    assert [x["result"] for x in job_report(log_dir)["pairs"]] == ["unreadable", "ok"]


@pytest.fixture
def lying_target(tmp_path, need_root):
    """A loop device over a FUSE file that drops the writes at 2 MiB (a disk that lies)."""
    backing = random_image(tmp_path / "lying.img", SIZES[0] + 2 * MiB)
    with contextlib.ExitStack() as stack:
        disk = stack.enter_context(fuse_disk(backing, tmp_path / "fuse2", [(2 * MiB, 4096)],
                                             writes="lost"))
        yield stack.enter_context(loop_device(disk, partitions=False))


def test_a_pair_that_does_not_verify_stops_the_job(pairs, lying_target, log_dir):
    """One after another (``--no-concurrent``): the pairs after it are not started."""
    s1, d1, s2, d2 = pairs
    before = digest(d2)
    p = rtk("copy", s1, lying_target, s2, d2, "--no-concurrent", "--yes", "--target-id",
            name(lying_target), "--target-id", name(d2))
    assert p.returncode == 4, p.stdout + p.stderr
    assert digest(d2) == before  # pair 2 was not started
    assert "pair 2: not started" in p.stdout and f"to copy it: rtk copy {s2} {d2}" in p.stdout
    data = job_report(log_dir)
    assert data["result"] == "mismatch" and data["exit_code"] == 4
    assert [(x["result"], x["exit_code"], x["report"] is None) for x in data["pairs"]] == [
        ("mismatch", 4, False), ("not started", None, True)]


def test_side_by_side_a_failure_starts_no_other_pair_of_its_lane(tmp_path, loops, pairs,
                                                                 lying_target, log_dir):
    """Pairs 1 and 2 read one SOURCE (one after another, in one lane), pair 3 shares
    nothing (beside them): pair 1 does not verify, pair 2 is not started, pair 3 ran."""
    s1, d1, s2, d2 = pairs
    d3 = loops(make_image(tmp_path / "d3.img", 12 * MiB))
    before = digest(d1)
    p = rtk("copy", s1, lying_target, s1, d1, s2, d3, "--yes", "--target-id",
            name(lying_target), "--target-id", name(d1), "--target-id", name(d3))
    assert p.returncode == 4, p.stdout + p.stderr
    assert digest(d1) == before and same(s2, d3, SIZES[1])
    assert [x["result"] for x in job_report(log_dir)["pairs"]] == [
        "mismatch", "not started", "ok"]


def ext4_image(path: Path, size: int) -> Path:
    """An ext4 filesystem over old random data, with one file (/services)."""
    random_image(path, size)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    random_image(path.with_name("services"), 300 * 1024)  # the file it holds
    subprocess.run(["debugfs", "-w", "-R", f"write {path.with_name('services')} services",
                    str(path)], check=True, capture_output=True)
    return path


def test_used_blocks_in_a_job(tmp_path, loops, pairs, log_dir):
    """``--used-blocks``: the ext4 pair copies its used blocks only (its filesystem checks
    clean on the target, its file is there), the pair of random data every block."""
    s1, d1, s2, d2 = pairs
    fs = loops(ext4_image(tmp_path / "fs.img", 8 * MiB))
    p = rtk("copy", fs, d1, s2, d2, "--used-blocks", "--yes", "--target-id", name(d1),
            "--target-id", name(d2))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "used blocks only" in p.stderr
    own = [json.loads(Path(x["report"]["json"]).read_text())
           for x in job_report(log_dir)["pairs"]]
    assert own[0]["copy"]["domain"]["bytes"] < 8 * MiB / 2, own[0]["copy"]["domain"]
    assert own[1]["copy"]["domain"]["bytes"] == SIZES[1]  # nothing mapped: all of it
    subprocess.run(["e2fsck", "-fn", d1], check=True, capture_output=True)
    got = subprocess.run(["debugfs", "-R", "cat /services", d1], check=True,
                         capture_output=True).stdout
    assert got == (tmp_path / "services").read_bytes()
    assert same(s2, d2, SIZES[1])


def test_used_blocks_single_pair_and_every_block_by_default(tmp_path, loops, pairs,
                                                            log_dir):
    _s1, d1, _s2, d2 = pairs
    fs = loops(ext4_image(tmp_path / "fs.img", 8 * MiB))
    p = rtk("copy", fs, d1, "--used-blocks", "--yes", "--target-id", name(d1))
    assert p.returncode == 0 and "used blocks of the ext4 filesystem" in p.stdout, p.stderr
    p = rtk("copy", fs, d2, "--yes", "--target-id", name(d2))  # the default: every block
    assert p.returncode == 0, p.stderr
    assert same(fs, d2, 8 * MiB) and "used blocks" not in p.stdout


def test_ctrl_c_stops_the_job_and_says_what_did_not_run(pairs, log_dir):
    """Ctrl-C during pair 1 (one after another): pair 1 cancelled with its mapfile, pair
    2 not started, exit 1; the job's report says so."""
    s1, d1, s2, d2 = pairs
    before = digest(d2)
    proc = subprocess.Popen([*RTK, "copy", s1, d1, s2, d2, "--no-concurrent", "--max-rate",
                             "1M", "--yes", "--target-id", name(d1), "--target-id",
                             name(d2)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err = ""
    while "): started" not in err:  # pair 1 runs from here for 8 s (8 MiB at 1 MiB/s)
        line = proc.stderr.readline()
        assert line, err
        err += line
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    err += rest
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err
    data = job_report(log_dir)
    assert [x["result"] for x in data["pairs"]] == ["cancelled", "not started"]
    assert data["result"] == "cancelled" and data["finished"] is not None
    assert digest(d2) == before and f"to copy it: rtk copy {s2} {d2}" in out


def test_the_summary_says_what_the_copy_does_to_cluster_disks(tmp_path, loops, pairs,
                                                              log_dir):
    """A TARGET that holds the SOURCE's GPT disk GUID: "this LUN held this cluster disk"
    (toolkit.disks.cluster), in the job's summary."""
    _s1, _d1, s2, d2 = pairs
    src = random_image(tmp_path / "gpt.img", 8 * MiB)
    subprocess.run(["sgdisk", "-o", "-n1:1M:+4M", "-t1:0700", str(src)], check=True,
                   capture_output=True)
    held = tmp_path / "held.img"
    held.write_bytes(src.read_bytes() + bytes(2 * MiB))  # the same disk GUID
    a, b = loops(src), loops(held)
    p = rtk("copy", a, b, s2, d2, "--no-verify", "--yes", "--target-id", name(b),
            "--target-id", name(d2))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "  cluster: this LUN held this cluster disk (disk GUID " in p.stderr, p.stderr


def test_each_target_confirmed_at_the_prompt(pairs, log_dir):
    """On a terminal: one prompt per TARGET, in order; both typed, both copied."""
    s1, d1, s2, d2 = pairs
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RTK, "copy", s1, d1, s2, d2], cwd=ROOT, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(slave)
    seen = b""
    try:
        for word in (name(d1), name(d2)):
            deadline = time.monotonic() + 60
            while seen.count(b"to go on: ") < (1 if word == name(d1) else 2) \
                    and time.monotonic() < deadline:
                if select.select([proc.stdout], [], [], 1)[0]:
                    seen += os.read(proc.stdout.fileno(), 4096)
            assert f"Everything on /dev/{word}".encode() in seen, seen
            os.write(master, word.encode() + b"\n")
        rest, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    text = (seen + rest).decode(errors="replace")
    assert proc.returncode == 0, text
    assert text.index("pair 1 of 2: ") < text.index(f"Everything on /dev/{name(d1)}")
    assert same(s1, d1, SIZES[0]) and same(s2, d2, SIZES[1])
