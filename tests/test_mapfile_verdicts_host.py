"""What a mapfile's verdicts may and may not make a copy skip (issue 13, item 2: "nothing is
skipped because an old file says so"), on real loop devices: a source changed outside
the fingerprint's sampled regions, a pair whose last verification found a difference,
a plain ddrescue mapfile that claims everything finished, a hand-edited rtk mapfile.
Needs root; a few seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import MiB, rtk, words
from loopdev import make_image

from toolkit.blockio.mapfile import Mapfile
from toolkit.copy import binding, fingerprint
from toolkit.copy import engine as copymod

pytestmark = pytest.mark.host

SIZE = 32 * MiB
DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[+-]\d\d:\d\d)?"


def random_image(path: Path, size: int = SIZE) -> Path:
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def digest(dev: str) -> str:
    import hashlib
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def same(a: str, b: str, size: int = SIZE) -> bool:
    return subprocess.run(["cmp", "-n", str(size), a, b], capture_output=True).returncode == 0


def cli_copy(src: str, dst: str, *extra: str) -> subprocess.CompletedProcess:
    return rtk("copy", src, dst, "--yes", "--target-id", os.path.basename(dst), *extra)


def report_of(p: subprocess.CompletedProcess) -> dict:
    text = p.stdout.split("report: ")[1].strip()
    return json.loads(Path(text.removesuffix(".txt") + ".json").read_text())


def unsampled(size: int) -> int:
    """A byte (4 KiB aligned) that no sampled region of the fingerprint covers."""
    n = fingerprint.region_length(size)
    regions = [(p, p + n) for p in fingerprint.offsets(size)]
    pos = 4 * MiB  # dd ... bs=1 seek=4194304, as the review did
    while any(a <= pos < b or a <= pos + 4096 - 1 < b for a, b in regions):
        pos += 4096
    return pos


def change_outside_the_samples(dev: str) -> int:
    pos = unsampled(SIZE)
    subprocess.run(["dd", "if=/dev/urandom", f"of={dev}", "bs=1", f"seek={pos}",
                    "count=4096", "conv=notrunc,fsync", "status=none"], check=True)
    return pos


def copied_then_changed(tmp_path, loops) -> tuple[str, str]:
    src = loops(random_image(tmp_path / "src.img"))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    p = cli_copy(src, dst)
    assert p.returncode == 0, p.stdout + p.stderr
    change_outside_the_samples(src)
    assert fingerprint.take_path(src).difference(fingerprint.take_path(src)) is None
    return src, dst


def test_resumed_mismatch_says_the_source_may_have_changed(tmp_path, loops, log_dir):
    src, dst = copied_then_changed(tmp_path, loops)
    p = cli_copy(src, dst, "--resume")  # the fingerprint cannot see it: verification does
    assert p.returncode == 4, p.stdout + p.stderr
    out = words(p.stdout)
    assert "VERIFICATION FAILED" in out, out
    assert re.search(f"the source may have changed since the copy started on {DATE} "
                     r"\(the fingerprint samples only 16 regions\)", out), out
    assert "--restart copies it again" in out, out
    message = words(report_of(p)["message"])
    assert "the source may have changed since the copy started on" in message, message
    assert "--restart copies it again" in message
    p = cli_copy(src, dst, "--restart")
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(src, dst)


def test_a_pair_known_to_differ_is_never_skipped_unverified(tmp_path, loops, log_dir):
    src, dst = copied_then_changed(tmp_path, loops)
    assert cli_copy(src, dst, "--resume").returncode == 4
    m = Mapfile.load(copymod.default_mapfile(copymod.plan_copy(src, dst)))
    assert m.meta["verified"].startswith("differs ")
    before = digest(dst)
    p = cli_copy(src, dst, "--resume", "--no-verify")
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert re.search(f"the last verification of this pair found a difference on {DATE}",
                     err), err
    assert "--restart copies it again" in err
    assert "--resume without --no-verify verifies again" in err
    assert "nothing left to copy" not in p.stdout
    assert digest(dst) == before
    p = cli_copy(src, dst, "--resume")  # verifies again: still differs
    assert p.returncode == 4, p.stdout + p.stderr
    assert cli_copy(src, dst, "--restart").returncode == 0 and same(src, dst)


def plain_finished_mapfile(path: Path, size: int = SIZE) -> str:
    """A GNU ddrescue mapfile saying everything is finished, without rtk lines."""
    path.write_text("# Mapfile. Created by GNU ddrescue version 1.27\n"
                    "# current_pos  current_status  current_pass\n"
                    f"0x{size:08X}     +               1\n"
                    "#      pos        size  status\n"
                    f"0x00000000  0x{size:08X}  +\n")
    subprocess.run(["ddrescuelog", "-D", str(path)], check=True)  # ddrescue: all done
    return str(path)


def test_a_foreign_finished_mapfile_is_not_taken_on_its_word(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img"))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    plain = plain_finished_mapfile(tmp_path / "plain.map")
    before = digest(dst)
    p = cli_copy(src, dst, "--resume", "--no-verify", "--mapfile", plain)
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert "has no rtk identity lines" in err and "--no-verify" in err, err
    assert "--restart" in err
    assert f"copied {SIZE} bytes" not in p.stdout
    assert digest(dst) == before
    p = cli_copy(src, dst, "--resume", "--mapfile", plain)  # verified: the claim is false
    assert p.returncode == 4, p.stdout + p.stderr
    assert f"copied {SIZE} bytes" not in p.stdout
    assert digest(dst) == before


def test_nothing_copied_is_never_said_copied(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img"))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"],
                   check=True)  # copied by hand before: the claim is true this time
    plain = plain_finished_mapfile(tmp_path / "plain.map")
    p = cli_copy(src, dst, "--resume", "--mapfile", plain)
    assert p.returncode == 0, p.stdout + p.stderr
    out = words(p.stdout)
    assert f"copied {SIZE} bytes" not in out, out
    assert (f"nothing copied in this run: the mapfile says all {SIZE} bytes were copied "
            "before") in out, out
    assert report_of(p)["copy"]["copied_bytes"] == 0


def test_an_edited_rtk_mapfile_is_refused(tmp_path, loops, log_dir):
    a = loops(random_image(tmp_path / "a.img"))
    b = loops(make_image(tmp_path / "b.img", SIZE))
    c = loops(make_image(tmp_path / "c.img", SIZE))
    mapfile = tmp_path / "ab.map"
    assert cli_copy(a, b, "--mapfile", str(mapfile), "--no-verify").returncode == 0
    text = mapfile.read_text()
    assert "# rtk-check: " in text
    # naive tampering: the target line rewritten to name another disk
    c_id = json.dumps(binding.identity_record(copymod.plan_copy(a, c).target), sort_keys=True)
    edited = re.sub(r"^# rtk-target: .*$", f"# rtk-target: {c_id}", text, flags=re.M)
    assert edited != text
    mapfile.write_text(edited)
    before = digest(c)
    p = cli_copy(a, c, "--resume", "--no-verify", "--mapfile", str(mapfile))
    assert p.returncode == 5, p.stdout + p.stderr
    err = words(p.stderr)
    assert f"the mapfile {mapfile} fails its integrity check" in err, err
    assert "--restart" in err
    assert digest(c) == before
    # an edited block status, and the check line removed: refused too
    mapfile.write_text(text.replace("  +\n", "  ?\n", 1))
    p = cli_copy(a, b, "--resume", "--mapfile", str(mapfile))
    assert p.returncode == 5 and "fails its integrity check" in words(p.stderr), p.stderr
    mapfile.write_text(re.sub(r"^# rtk-check: .*\n", "", text, flags=re.M))
    p = cli_copy(a, b, "--resume", "--mapfile", str(mapfile))
    assert p.returncode == 5 and "no rtk-check line" in words(p.stderr), p.stderr
    mapfile.write_text(text)  # untouched: resumes
    p = cli_copy(a, b, "--resume", "--mapfile", str(mapfile))
    assert p.returncode == 0, p.stdout + p.stderr
    assert cli_copy(a, c, "--restart", "--mapfile", str(mapfile)).returncode == 0
    assert same(a, c)
