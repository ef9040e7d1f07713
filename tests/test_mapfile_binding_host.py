"""A copy's mapfile is bound to its pair and to the source's content (issue 13, item 2),
on real loop devices: a changed source, another pair, a plain ddrescue mapfile, a pair
copied before, an interrupted copy; ``rtk copy`` needs ``--resume`` or ``--restart`` to
go on when a mapfile for the pair exists; the menu asks. Needs root; a few seconds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, RTK, MiB, choose, own_disks, rtk, type_text, wait_result, words
from loopdev import make_image, run
from screen import press
from test_tui_copy_host import pair  # noqa: F401  (the menu's fixture: src, dst, small)

from toolkit.blockio.mapfile import Mapfile
from toolkit.copy import engine as copymod

pytestmark = pytest.mark.host

SIZE = 24 * MiB + 3 * 512  # odd: not a multiple of the chunk nor of the sample regions
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[+-]\d\d:\d\d)?"


def random_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def digest(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def same(a: str, b: str, size: int) -> bool:
    return subprocess.run(["cmp", "-n", str(size), a, b], capture_output=True).returncode == 0


def cli_copy(src: str, dst: str, *extra: str) -> subprocess.CompletedProcess:
    return rtk("copy", src, dst, "--yes", "--target-id", os.path.basename(dst), *extra)


def report_of(p: subprocess.CompletedProcess) -> dict:
    text = p.stdout.split("report: ")[1].strip()
    return json.loads(Path(text.removesuffix(".txt") + ".json").read_text())


def overwrite(dev: str, pos: int, data: bytes) -> None:
    """Change the source through its device, on the disk when this returns."""
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, pos)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_changed_source_is_refused_until_restart(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    p = cli_copy(src, dst)
    assert p.returncode == 0, p.stdout + p.stderr
    overwrite(src, 0, os.urandom(4096))  # a new partition table on a re-used snapshot LUN
    before = digest(dst)
    p = cli_copy(src, dst)  # neither flag: refused, saying what the mapfile says
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert re.search(f"this pair was already copied on {DATE}, verified identical on {DATE}",
                     err), err
    assert "the source changed since the copy started on" in err
    assert "--resume" in err and "--restart" in err
    p = cli_copy(src, dst, "--resume")
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert re.search(f"the source changed since the copy started on {DATE}: the region at "
                     "byte 0 differs: start over with --restart", err), err
    assert digest(dst) == before  # nothing written by the refused runs
    p = cli_copy(src, dst, "--restart")
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(src, dst, SIZE)
    assert report_of(p)["copy"]["copied_bytes"] == SIZE


def test_change_in_the_last_mib_is_found(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    assert cli_copy(src, dst, "--no-verify").returncode == 0
    overwrite(src, SIZE - 512, os.urandom(512))  # the backup GPT header's sector
    p = cli_copy(src, dst, "--resume")
    assert p.returncode == 5 and "the source changed since" in p.stderr, p.stderr
    region = int(re.search(r"region at byte (\d+) differs", p.stderr).group(1))
    assert SIZE - MiB <= region < SIZE


def test_interrupted_copy_needs_resume_and_resumes(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    mapfile = copymod.default_mapfile(copymod.plan_copy(src, dst))
    proc = subprocess.Popen([*RTK, "copy", src, dst, "--yes", "--target-id",
                             os.path.basename(dst), "--max-rate", "8M",
                             "--mapfile-interval", "0.1", "--chunk-size", "1M"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, done = time.monotonic() + 20, 0
        while time.monotonic() < deadline and done < 4 * MiB:
            time.sleep(0.05)
            with contextlib.suppress(FileNotFoundError, ValueError):
                done = Mapfile.load(mapfile).bytes_with("+")
        assert proc.poll() is None, "the copy ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)  # stops cleanly, as Ctrl-C does
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "--resume" in out, out
    stopped = Mapfile.load(mapfile).bytes_with("+")
    assert 0 < stopped < SIZE
    p = cli_copy(src, dst)  # neither flag: refused, saying what the mapfile says
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert re.search(f"interrupted copy of this pair, started on {DATE}", err), err
    assert "--resume continues it" in err and "--restart" in err
    assert Mapfile.load(mapfile).bytes_with("+") == stopped
    p = cli_copy(src, dst, "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(src, dst, SIZE)
    data = report_of(p)
    assert data["copy"]["resumed"] is True and data["copy"]["copied_bytes"] <= SIZE - stopped
    assert data["verify"]["result"] == "match"


def test_mapfile_of_another_pair_is_refused_naming_both(tmp_path, loops, log_dir):
    a = loops(random_image(tmp_path / "a.img", SIZE))
    b = loops(make_image(tmp_path / "b.img", SIZE))
    c = loops(make_image(tmp_path / "c.img", SIZE + MiB))
    mapfile = str(tmp_path / "ab.map")
    assert cli_copy(a, b, "--mapfile", mapfile, "--no-verify").returncode == 0
    before = digest(c)
    for flags in ([], ["--resume"]):
        p = cli_copy(a, c, "--mapfile", mapfile, *flags)
        assert p.returncode == 5, (flags, p.stdout + p.stderr)
        err = words(p.stderr)
        assert f"the mapfile {mapfile} belongs to the copy of SOURCE" in err, err
        assert str(tmp_path / "b.img") in err and str(tmp_path / "c.img") in err
        assert "onto TARGET" in err and "not of" in err
    assert digest(c) == before
    assert cli_copy(a, c, "--mapfile", mapfile, "--restart").returncode == 0
    assert same(a, c, SIZE)


def test_a_renamed_target_resumes_a_replaced_one_is_refused(tmp_path, loops, log_dir):
    """The same file under another /dev/loopN is the same disk (the identity survives a
    rename); a new file at the same path is another disk, whatever its name."""
    src = loops(random_image(tmp_path / "src.img", SIZE))
    dst_img = make_image(tmp_path / "dst.img", SIZE)
    dst = loops(dst_img)
    assert cli_copy(src, dst, "--no-verify").returncode == 0
    run("losetup", "-d", dst)
    loops(make_image(tmp_path / "placeholder.img", MiB))  # takes the freed number
    dst2 = loops(dst_img)
    assert dst2 != dst
    p = cli_copy(src, dst2, "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert report_of(p)["copy"]["copied_bytes"] == 0 and same(src, dst2, SIZE)
    run("losetup", "-d", dst2)
    dst_img.unlink()
    dst3 = loops(make_image(tmp_path / "dst.img", SIZE))  # a new file, the same name
    p = cli_copy(src, dst3, "--resume")
    assert p.returncode == 5, p.stdout + p.stderr
    assert "belongs to the copy of SOURCE" in words(p.stderr)
    assert "inode" in p.stderr


def test_plain_ddrescue_mapfile_only_when_named(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    default = copymod.default_mapfile(copymod.plan_copy(src, dst))
    os.makedirs(os.path.dirname(default), exist_ok=True)
    run("ddrescue", "-q", "-f", "-s", str(8 * MiB), src, dst, default)  # the first 8 MiB
    plain = Mapfile.load(default)
    assert not any(k.startswith(("source", "target", "fingerprint")) for k in plain.meta)
    assert plain.bytes_with("+") == 8 * MiB
    before = digest(dst)
    for flags in ([], ["--resume"]):  # at the default place: never picked up
        p = cli_copy(src, dst, *flags)
        assert p.returncode == 5, (flags, p.stdout + p.stderr)
        err = words(p.stderr)
        assert "has no rtk identity lines" in err and "--mapfile" in err, err
    assert digest(dst) == before
    other = str(tmp_path / "short.map")  # named, but of another size
    run("ddrescue", "-q", "-f", str(random_image(tmp_path / "small.img", MiB)),
        str(make_image(tmp_path / "scratch.img", MiB)), other)
    p = cli_copy(src, dst, "--mapfile", other, "--resume")
    assert p.returncode == 5 and "covers" in p.stderr, p.stdout + p.stderr
    p = cli_copy(src, dst, "--mapfile", default, "--resume")  # named: used, with a warning
    assert p.returncode == 0, p.stdout + p.stderr
    assert "its origin is unknown" in words(p.stderr)
    assert same(src, dst, SIZE)
    data = report_of(p)
    assert data["copy"]["resumed"] is True and data["copy"]["copied_bytes"] == SIZE - 8 * MiB
    assert any("origin is unknown" in w for w in data["warnings"])
    adopted = Mapfile.load(default)  # from now on bound to this pair
    assert {"source", "target", "fingerprint"} <= set(adopted.meta)


def test_finished_pair_says_when_and_whether_verified(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    assert cli_copy(src, dst, "--no-verify").returncode == 0
    p = cli_copy(src, dst)
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert re.search(f"this pair was already copied on {DATE}, not verified", err), err
    assert "--resume" in err and "--restart" in err
    p = cli_copy(src, dst, "--resume")  # nothing to copy: verifies
    assert p.returncode == 0, p.stdout + p.stderr
    data = report_of(p)
    assert data["copy"]["copied_bytes"] == 0 and data["verify"]["result"] == "match"
    m = Mapfile.load(copymod.default_mapfile(copymod.plan_copy(src, dst)))
    assert m.meta["verified"].startswith("identical ")
    p = cli_copy(src, dst)
    assert p.returncode == 5
    assert re.search(f"this pair was already copied on {DATE}, verified identical on {DATE}",
                     words(p.stderr)), p.stderr


def test_fingerprint_is_cheap_on_a_16_tb_lun(tmp_path, loops, log_dir):
    """16 sampled regions of a 16 TB device, read with O_DIRECT: well under a second
    (a sparse file: what this measures is the reading and hashing, not a disk's seeks)."""
    from toolkit.copy import fingerprint

    size = 16 * 10**12 // 4096 * 4096
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(size)
    dev = loops(img)
    t = time.monotonic()
    fp = fingerprint.take_path(dev)
    took = time.monotonic() - t
    assert fp.size == size and len(fp.samples) == 16
    assert took < 1.0, took
    print(f"fingerprint of a 16 TB loop device: {took * 1000:.1f} ms")


# --- the menu ---------------------------------------------------------------------------


def _to_summary(app, src, dst, small) -> str:
    press(app, "c")
    choose(app, [d.path for d in app.copy.disks], src)
    eligible = [d.path for d, r in app.copy.target_choices(app.copy.source) if r is None]
    return choose(app, eligible, dst)


def test_menu_asks_about_a_pair_already_copied(pair):  # noqa: F811
    from tui.app import App

    src, dst, small, log_dir = pair
    size = 24 * MiB + 3 * 512
    identity = os.path.basename(dst)
    assert cli_copy(src, dst).returncode == 0
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, dst, small))
    screen = words(_to_summary(app, src, dst, small))
    assert re.search(f"already copied on {DATE}, verified identical", screen), screen
    assert "Verify again" in screen and "Start over" in screen
    type_text(app, identity)  # the default: nothing to copy, verify again
    press(app, "enter")
    screen = wait_result(app, app.copy)
    assert "VERIFIED IDENTICAL" in screen, screen
    assert app.copy.result.copied_bytes == 0 and app.copy.result.resumed
    press(app, "enter")
    screen = _to_summary(app, src, dst, small)
    screen = press(app, "up", "up", "up", "up", " ")  # the option "Start over"
    assert "(X) Start over" in screen, screen
    press(app, *["down"] * 4)
    type_text(app, identity)
    press(app, "enter")
    screen = wait_result(app, app.copy)
    assert "VERIFIED IDENTICAL" in screen, screen
    assert app.copy.result.copied_bytes == size and not app.copy.result.resumed
    subprocess.run(["cmp", "-n", str(size), src, dst], check=True)


def test_menu_offers_only_start_over_for_a_changed_source(pair):  # noqa: F811
    from tui.app import App

    src, dst, small, log_dir = pair
    assert cli_copy(src, dst, "--no-verify").returncode == 0
    overwrite(src, 0, os.urandom(4096))
    app = App(log_dir=str(log_dir), list_disks=own_disks(src, dst, small))
    screen = words(_to_summary(app, src, dst, small))
    assert "the source changed since the copy started on" in screen, screen
    assert "Verify again" not in screen and "Resume" not in screen
    type_text(app, os.path.basename(dst))
    press(app, "enter")
    screen = wait_result(app, app.copy)
    assert "VERIFIED IDENTICAL" in screen, screen
    subprocess.run(["cmp", "-n", str(24 * MiB + 3 * 512), src, dst], check=True)
