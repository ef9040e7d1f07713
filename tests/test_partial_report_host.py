"""A copy's report exists from its start and says how far it got: written when the copy
starts (result "running", both identities, the mapfile), rewritten in place at each
mapfile save, replaced by the final report (the same files). After kill -9 (a power cut,
as far as the report can tell) it parses and says what was done; a --resume run then
completes with its own report. On real loop devices; needs root; a few seconds."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import RTK, MiB, rtk
from loopdev import make_image
from test_copy_host import quick_options, random_image, same

from toolkit.blockio.mapfile import FINISHED, Mapfile, MapfileError
from toolkit.copy import engine as copymod

pytestmark = pytest.mark.host

SIZE = 32 * MiB


def reports(log_dir: Path) -> list[Path]:
    return sorted(Path(log_dir).glob("copy-2*.json"))  # not the mapfile (copy-SRC--DST.map)


def load(path: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


def wait_for_progress(log_dir: Path, timeout: float = 60) -> tuple[int, dict]:
    """Until the mapfile records copied bytes and the running report says so too (it is
    rewritten right after each mapfile save): (bytes the mapfile records, the report)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for path in Path(log_dir).glob("copy-*.map"):
            with contextlib.suppress(MapfileError, OSError):
                done = Mapfile.load(str(path)).bytes_with(FINISHED)
        data = [d for d in map(load, reports(log_dir)) if d]
        if done and data and (data[0]["copy"]["done_bytes"] or 0) > 0:
            return done, data[0]
        time.sleep(0.05)
    raise AssertionError(f"no copied bytes recorded in {log_dir} after {timeout} s")


def test_kill_9_leaves_a_report_that_says_what_was_done(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE, seed=21))
    dst = loops(make_image(tmp_path / "dst.img", 40 * MiB))
    target_id = Path(dst).name
    args = ["copy", src, dst, "--yes", "--target-id", target_id, "--chunk-size", "1M"]
    proc = subprocess.Popen([*RTK, *args, "--max-rate", "4M", "--mapfile-interval", "0.2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_progress(log_dir)
        assert proc.poll() is None, "the copy ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    [partial] = reports(log_dir)
    data = json.loads(partial.read_text())  # parses: written atomically
    mapfile = Mapfile.load(data["copy"]["mapfile"])
    assert data["result"] == "running" and data["exit_code"] is None
    assert data["finished"] is None and data["updated"] >= data["started"]
    assert "interrupted" in data["message"] and data["copy"]["mapfile"] in data["message"]
    assert data["copy"]["phase"] == "copy"
    assert 0 < data["copy"]["done_bytes"] <= mapfile.bytes_with(FINISHED) < SIZE
    assert data["source"]["node"] == src and data["target"]["node"] == dst
    assert data["source"]["backing_file"] == str(tmp_path / "src.img")
    assert data["target"]["backing_file"] == str(tmp_path / "dst.img")
    text = partial.with_suffix(".txt").read_text()
    assert "RUNNING" in text and "mapfile" in text
    assert not list(Path(log_dir).glob("*.tmp"))  # no temporary file left in sight

    p = rtk(*args, "--resume")
    assert p.returncode == 0, p.stdout + p.stderr
    assert same(src, dst, SIZE)
    final = Path(p.stdout.split("report: ")[1].strip()).with_suffix(".json")
    done = json.loads(final.read_text())
    assert final != partial and done["result"] == "ok" and done["exit_code"] == 0
    assert done["copy"]["resumed"] is True and done["copy"]["done_bytes"] == SIZE
    assert done["finished"] and done["copy"]["phase"] is None
    assert done["verify"]["result"] == "match"
    # the interrupted run's report is still there, as it was: the record of that run
    assert json.loads(partial.read_text()) == data


def test_running_report_is_rewritten_then_replaced_by_the_final_one(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE, seed=22))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    seen: list[dict] = []

    def progress(p):
        for path in reports(log_dir):
            data = load(path)
            key = data and (data["result"], data["updated"], data["copy"]["phase"],
                            data["copy"]["done_bytes"])
            if data and (not seen or key != seen[-1]["key"]):
                seen.append({**data, "path": str(path), "key": key})

    opts = quick_options(max_rate=16 * MiB, chunk_size=MiB, mapfile_interval=0.3,
                         progress_interval=0.05)
    result = copymod.copy(copymod.plan_copy(src, dst), opts, progress=progress)
    assert result.status == "ok", result.message
    running = [d for d in seen if d["result"] == "running"]
    assert running[0]["copy"]["done_bytes"] == 0  # written when the copy starts
    dones = [d["copy"]["done_bytes"] for d in running]
    assert dones == sorted(dones) and len(set(dones)) >= 3, dones  # rewritten as it goes
    assert running[-1]["copy"]["phase"] == "verify" and dones[-1] == SIZE
    assert {d["path"] for d in seen} == {result.report.json}  # one file, rewritten
    assert [str(p) for p in reports(log_dir)] == [result.report.json]
    final = json.loads(Path(result.report.json).read_text())
    assert final["result"] == "ok" and final["copy"]["done_bytes"] == SIZE
    assert "RUNNING" not in Path(result.report.text).read_text()


def test_a_copy_that_raises_leaves_a_failed_report_not_a_running_one(
        tmp_path, loops, log_dir, hashing_fails_at):
    src = loops(random_image(tmp_path / "src.img", SIZE, seed=23))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    hashing_fails_at(8 * MiB)
    with pytest.raises(MemoryError, match="made to fail"):
        copymod.copy(copymod.plan_copy(src, dst), quick_options(chunk_size=MiB))
    [path] = reports(log_dir)
    data = json.loads(path.read_text())
    assert data["result"] == "failed" and data["exit_code"] == 1
    assert "made to fail" in data["message"] and data["copy"]["mapfile"] in data["message"]


def test_refused_copy_writes_no_report(tmp_path, loops, log_dir):
    src = loops(random_image(tmp_path / "src.img", SIZE, seed=24))
    dst = loops(make_image(tmp_path / "dst.img", SIZE))
    plan = copymod.plan_copy(src, dst)
    copymod.copy(plan, quick_options(chunk_size=MiB))
    before = reports(log_dir)
    with pytest.raises(copymod.Refused):  # the pair's mapfile is there, no --resume
        copymod.copy(plan, quick_options(chunk_size=MiB))
    assert reports(log_dir) == before


def test_restore_writes_a_running_report_then_the_final_one_in_its_place(tmp_path, loops,
                                                                         rtk_dirs):
    from toolkit import restore

    image = random_image(tmp_path / "image.img", 16 * MiB, seed=25)
    dev = loops(make_image(tmp_path / "target.img", 32 * MiB))
    seen: list[tuple[str, dict]] = []

    def progress(p):
        for path in Path(rtk_dirs / "log").glob("restore-*.json"):
            data = load(path)
            if data and (not seen or seen[-1][1]["status"] != data["status"]):
                seen.append((str(path), data))

    plan = restore.plan_restore(str(image), dev, restore.RestoreOptions(interval=0),
                                source_role=())
    res = restore.restore(plan, progress=progress)
    path, running = seen[0]
    assert running["status"] == "running" and running["exit_code"] is None
    assert running["finished"] is None and str(image) in running["message"]
    assert running["target"]["node"] == dev
    assert [str(p) for p in Path(rtk_dirs / "log").glob("restore-*")] in (
        [path, res.report.text], [res.report.text, path])  # the same files, replaced
    final = json.loads(Path(path).read_text())
    assert final["status"] == res.status != "running" and final["exit_code"] == res.exit_code
