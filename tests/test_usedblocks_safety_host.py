"""Used blocks never leaves out bytes that a map does not vouch for, on real loop devices:
a Windows dynamic disk (LDM, MBR type 0x42) whose volume C spans two extents around
volume D is copied in full (partclone would map C as one run from the partition's start,
and C's "free tail" is D's bytes); a partition mounted read-write through another loop
device over its byte range (an alias the inventory does not see) is copied in full.

Needs root, ntfsprogs (mkntfs, ntfscp, ntfsresize, ntfsfix, ntfs-3g), partclone, sfdisk.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from conftest import MiB, choose, own_disks, type_text, wait_result, words
from screen import press, render
from writeguard import write_guard  # noqa: F401  (the runtime write guard, autouse)

from toolkit.copy import usedblocks
from toolkit.copy.plan import check_pair
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks

pytestmark = pytest.mark.host


def run(*cmd, ok=(0,), **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert p.returncode in ok, f"{cmd}: {p.returncode}\n{p.stdout}{p.stderr}"
    return p


def random_file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def dynamic_disk(tmp_path) -> tuple[Path, bytes]:
    """An MBR disk with one type-0x42 (LDM) partition at 1 MiB holding, physically,
    [C's first 24 MiB][D: 24 MiB NTFS with a 6 MiB file][C's last 24 MiB]: C's boot
    sector says C is 48 MiB. Returns the image and D's bytes."""
    c, d = tmp_path / "c.img", tmp_path / "d.img"
    for img in (c, d):
        with open(img, "wb") as f:
            f.truncate(24 * MiB)
    run("mkntfs", "-Q", "-F", "-L", "C", c)
    run("mkntfs", "-Q", "-F", "-L", "D", d)
    run("ntfscp", "-f", d, random_file(tmp_path / "payload.bin", 6 * MiB, 7), "payload.bin")
    with open(c, "r+b") as f:
        f.truncate(48 * MiB)
    run("ntfsresize", "-f", "-f", "-s", str(48 * MiB), c, ok=(0, 1), input="y\n")
    run("ntfsfix", "-d", c)
    disk = random_file(tmp_path / "disk.img", 96 * MiB, 1)
    cb, db = c.read_bytes(), d.read_bytes()
    with open(disk, "r+b") as f:
        f.seek(1 * MiB)
        f.write(cb[:24 * MiB] + db + cb[24 * MiB:])
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, type=42\n",
                   text=True, check=True, capture_output=True)
    return disk, db


def test_a_dynamic_disk_partition_is_copied_in_full_and_keeps_the_volume_inside_it(
        tmp_path, loops):
    disk, _db = dynamic_disk(tmp_path)
    src = loops(disk)
    end = resolve(src, list_disks())
    domain = usedblocks.used_domain(end)
    d_start, d_end = 25 * MiB, 49 * MiB
    assert usedblocks.covered(domain.ranges, d_start, d_end) == d_end - d_start, (
        f"volume D is not wholly in the domain: {domain.summary()}; "
        f"{[(p.number, p.fstype, p.tool, p.note) for p in domain.parts]}")
    p1 = next(p for p in domain.parts if p.number == 1)
    assert p1.tool is None and "dynamic disk (LDM)" in p1.note, p1
    assert usedblocks.recognised(end) == []


def test_the_menu_does_not_recommend_used_blocks_on_a_dynamic_disk_and_d_is_copied(
        tmp_path, loops, log_dir):
    from tui.app import App
    disk, db = dynamic_disk(tmp_path)
    src = loops(disk)
    dst = loops(random_file(tmp_path / "dst.img", 96 * MiB, 2))
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, dst))
    press(app, "c")
    choose(app, [d.path for d in app.copy.disks], src)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    choose(app, eligible, dst)
    tall = words(render(app, (100, 60)))
    assert "Used blocks only" not in tall, tall
    type_text(app, dst.removeprefix("/dev/"))
    press(app, "enter")
    assert app.copy.worker is not None, render(app, (100, 60))
    screen = wait_result(app, app.copy, timeout=180)
    with open(dst, "rb") as f:
        f.seek(25 * MiB)
        assert f.read(24 * MiB) == db, f"volume D is not on the target:\n{screen}"


def test_a_partition_mounted_through_another_loop_device_is_copied_in_full(tmp_path, loops):
    img = random_file(tmp_path / "src.img", 64 * MiB, 3)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\nstart=2048, size=40M\n",
                   text=True, check=True, capture_output=True)
    src = loops(img, partitions=True)
    run("mkntfs", "-Q", "-L", "Vol1", f"{src}p1")
    dst = loops(random_file(tmp_path / "dst.img", 64 * MiB, 4))
    end = resolve(src, list_disks())
    assert next(p for p in usedblocks.used_domain(end).parts if p.number == 1).tool
    alias = run("losetup", "-f", "--show", "-o", str(MiB), "--sizelimit", str(40 * MiB),
                src).stdout.strip()
    point = tmp_path / "mnt"
    point.mkdir()
    try:
        run("ntfs-3g", alias, point)
        try:
            end = resolve(src, list_disks())
            p1 = next(p for p in usedblocks.used_domain(end).parts if p.number == 1)
            assert p1.tool is None, f"mounted through {alias} at {point}, but mapped: {p1}"
            assert f"mounted at {point}" in p1.note and alias in p1.note, p1.note
            assert usedblocks.recognised(end) == []
            _problems, warnings = check_pair(end, resolve(dst, list_disks()), deep=True)
            assert any(f"mounted at {point}" in w for w in warnings), warnings
        finally:
            run("umount", point)
    finally:
        run("losetup", "-d", alias)
