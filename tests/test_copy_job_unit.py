"""A copy job of several pairs, without devices: the cross-pair refusals on hand-built
disks, the worst status, the job's message and report, the progress of every pair and
of the whole job, the menu's job screens as text."""

from __future__ import annotations

import pytest
from conftest import MiB, disk, partition
from screen import render

from toolkit.copy import job
from toolkit.copy.engine import CopyPlan, CopyResult
from toolkit.copy.job_progress import JobMeter
from toolkit.copy.job_report import job_message, pair_verdict, report_data, report_text
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.jobs.progress import Progress

pytestmark = pytest.mark.unit


def plan(src, dst) -> CopyPlan:
    return CopyPlan(endpoint_from_disk(*src) if isinstance(src, tuple) else
                    endpoint_from_disk(src),
                    endpoint_from_disk(*dst) if isinstance(dst, tuple) else
                    endpoint_from_disk(dst))


def test_the_same_target_twice_is_refused():
    sda, sdb, sdc = disk("sda", "A"), disk("sdb", "B", size=200 * MiB), disk("sdc", "C")
    problems = job.cross_problems([plan(sda, sdb), plan(sdc, sdb)], deep=False)
    assert problems == ["pair 1 (/dev/sda -> /dev/sdb): the target is the target of pair 2: "
                        "/dev/sdb and /dev/sdb are the same device (/dev/sdb)"]


def test_a_target_on_another_pairs_source_is_refused():
    sda, sdb, sdc = disk("sda", "A"), disk("sdb", "B"), disk("sdc", "C")
    p1 = partition(sda, 1, MiB, 40 * MiB)
    problems = job.cross_problems([plan(sda, sdb), plan(sdc, (sda, p1))], deep=False)
    assert len(problems) == 1 and problems[0].startswith("pair 2 (/dev/sdc -> /dev/sda1): ")
    assert "the target /dev/sda1 is a partition of the source of pair 1" in problems[0]
    # the same LUN through another path (its serial): pair 1 writes what pair 2 reads
    other_path = disk("sdd", "B")
    problems = job.cross_problems([plan(sda, sdb), plan(other_path, sdc)], deep=False)
    assert problems and problems[0].startswith("pair 1 (/dev/sda -> /dev/sdb): ")
    assert "source of pair 2" in problems[0] and "serial" in problems[0]


def test_pairs_apart_and_one_source_read_twice_are_fine():
    sda, sdb, sdc, sdd = (disk(n, n.upper()) for n in ("sda", "sdb", "sdc", "sdd"))
    assert job.cross_problems([plan(sda, sdb), plan(sdc, sdd)], deep=False) == []
    assert job.cross_problems([plan(sda, sdb), plan(sda, sdd)], deep=False) == []


@pytest.mark.parametrize(("statuses", "expected"), [
    (["ok", "ok"], "ok"), (["ok", "unreadable"], "unreadable"),
    (["unreadable", "refused", "not started"], "refused"),
    (["ok", "failed", "not started"], "failed"), (["mismatch", "failed"], "mismatch"),
    (["cancelled", "not started"], "cancelled"), (["not started"], None)])
def test_the_job_is_its_worst_pair(statuses, expected):
    assert job.worst(statuses) == expected


def outcome(n: int, status: str, message: str = "", verified: bool | None = None):
    p = plan(disk(f"sd{'ace'[n - 1]}", "S"), disk(f"sd{'bdf'[n - 1]}", "T"))
    o = job.PairOutcome(n, p, status, message)
    if status not in ("not started", "running", "refused"):
        from toolkit.blockio.verify import VerifyOutcome
        o.result = CopyResult("copy", status, message, p.source.describe(),
                              p.target.describe(), p.source.size, 1.0, 2.0, "blake3")
        if verified is not None:
            o.result.verify = VerifyOutcome(match=verified, method="read back target")
    return o


def test_the_jobs_message_names_every_pair_not_copied():
    ok = [outcome(1, "ok", "copied", True), outcome(2, "ok", "copied", True)]
    assert job_message(ok) == "all 2 pairs copied, verified"
    assert pair_verdict(ok[0]) == "copied, verified"
    mixed = [outcome(1, "failed", "write error at byte 4096"), outcome(2, "not started"),
             outcome(3, "unreadable", "completed with 512 unreadable bytes")]
    text = job_message(mixed)
    assert text.startswith("1 of 3 pairs copied; pair 1: FAILED: write error at byte 4096; "
                           "pair 2: not started; pair 3: copied, with unreadable ranges")
    assert job_message(mixed, final=False) == "running: 2 of 3 pairs ended, 1 copied"


def test_the_job_report_lists_each_pair():
    outs = [outcome(1, "mismatch", "VERIFICATION FAILED", False), outcome(2, "not started")]
    r = job.JobResult("mismatch", job_message(outs), outs, False, 1.0, 5.0)
    data = report_data(r)
    assert data["kind"] == "copy-job" and data["exit_code"] == 4
    assert data["order"] == "sequential" and data["duration_seconds"] == 4.0
    assert [(x["pair"], x["result"], x["exit_code"], x["verified"]) for x in data["pairs"]] \
        == [(1, "mismatch", 4, False), (2, "not started", None, None)]
    text = report_text(r)
    assert "MISMATCH (exit code 4)" in text and "Pair 2\n  result:   not started" in text


def test_progress_of_each_pair_and_of_the_job():
    events = []
    meter = JobMeter([100 * MiB, 50 * MiB], [True, False], events.append)
    assert meter.snapshot().total == 250 * MiB  # 100 copied + 100 read back + 50
    meter.started(0)
    meter.for_pair(0)(Progress("copy", 50 * MiB, 100 * MiB, 10.0, 10.0, 5.0))
    jp = events[-1]
    assert jp.done == 50 * MiB and jp.states == ("running", "not started")
    assert jp.line().startswith("pair 1: copy 50.0% ") and "all 2 pairs 20.0%" in jp.line()
    meter.for_pair(0)(Progress("verify", 25 * MiB, 100 * MiB, 10.0, 10.0, 7.0))
    assert events[-1].done == 125 * MiB and events[-1].phase == "verify"
    meter.ended(0, "ok")
    assert events[-1].done == 200 * MiB and events[-1].pair_line(1) == "pair 1 of 2: ok"
    meter.not_run(1)  # stopped: pair 2 is not ahead any more
    assert events[-1].done == events[-1].total == 200 * MiB
    waiting = Progress("waiting", 0, 50 * MiB, 0.0, 0.0, None, note="SOURCE path lost")
    meter.started(1)
    meter.for_pair(1)(waiting)
    assert events[-1].overall.note == "SOURCE path lost"
    assert "pair 2: SOURCE path lost" in events[-1].line()


def test_the_menu_job_screens_as_text():
    from tui.views.copy_job import CopyJobProgressView, CopyJobResultView, CopyJobView

    plans = [plan(disk("sda", "A"), disk("sdb", "B")), plan(disk("sdc", "C"), disk("sdd", "D"))]
    view = CopyJobView(plans, ["this LUN held this cluster disk", None], ["pair 1: 1 NTFS"],
                       lambda **kw: kw, lambda: None)
    screen = render(type("A", (), {"root": view})(), (80, 80))
    assert "Pair 1 of 2" in screen and "Pair 2 of 2" in screen
    assert "this LUN held this cluster disk" in screen
    assert "(X) Used blocks only (recommended: pair 1: 1 NTFS)" in screen
    assert "(X) Side by side" in screen and "< Confirm the 2 targets >" in screen
    meter = JobMeter([100 * MiB, 50 * MiB], [True, True], None)
    meter.started(0)
    meter.for_pair(0)(Progress("copy", 50 * MiB, 100 * MiB, 2e6, 2e6, 5.0))
    progress = CopyJobProgressView(plans, lambda: None)
    progress.update(meter.snapshot())
    screen = render(type("A", (), {"root": progress})())
    assert "pair 1: /dev/sda → /dev/sdb  copy  50.0%  2.0 MB/s" in screen
    assert "pair 2: /dev/sdc → /dev/sdd  not started" in screen
    outs = [outcome(1, "ok", "copied", True), outcome(2, "failed", "write error")]
    r = job.JobResult("failed", job_message(outs), outs, False, 1.0, 2.0)
    screen = render(type("A", (), {"root": CopyJobResultView(
        r, [pair_verdict(o) for o in outs], False, lambda: None)})())
    assert "FAILED: NOT EVERY PAIR WAS COPIED AND VERIFIED" in screen
    assert "pair 2: /dev/sdc → /dev/sdd: FAILED: write error" in screen


def test_a_progress_line_that_cannot_be_written_does_not_stop_the_job(monkeypatch):
    """stderr a closed pipe (``rtk copy ... 2>&1 | head``): the pair events and progress
    lines are dropped, the job (and its report) goes on."""
    import sys

    from toolkit.cli.copy_job import JobLine

    class Closed:
        def write(self, _text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self):
            return False
    monkeypatch.setattr(sys, "stderr", Closed())
    line = JobLine(2)
    one = outcome(1, "running")
    line.pair(one)  # raised BrokenPipeError before
    line.pair(outcome(1, "ok", "copied", True))
    assert line.gone
