"""Multicast images in the unattended plan: the ``udpcast://`` image, its required SHA-256,
the HTTP ``fallback`` (rtk.fallback=, fallback: in the plan file) and when the job uses
it. The restore steps (plan_restore, check_image, restore) are replaced: no device, no
network."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from conftest import disk

import toolkit.restore
from toolkit.unattended import Console, RunReporter, run
from toolkit.unattended.cmdline import Cmdline, CmdlineError
from toolkit.unattended.job import Job
from toolkit.unattended.plan import SCHEMA, PlanError, read_plan, schema_errors

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("rtk_dirs")]

SHA = "ab" * 32
OTHER = "cd" * 32
GB100 = 100 * 10**9
FALLBACK = "http://10.0.0.5/images/node.img.zst"
BASE = "rtk.mode=restore rtk.disk=serial:A1 rtk.consent=serial:A1"


def plan_of(text: str):
    return read_plan(Cmdline(text))


def quiet() -> Console:
    return Console(streams=[io.StringIO()])


# --- the plan: udpcast image, SHA-256 required, the fallback field -----------------------

def test_udpcast_image_with_the_urls_sha256():
    p = plan_of(f"{BASE} rtk.image=udpcast://eth0@9000?sha256={SHA}")
    assert p.image.kind == "udpcast" and p.image.location.endswith(SHA)
    assert p.expected_sha256 == SHA and p.sha256 is None


def test_udpcast_image_with_rtk_sha256():
    p = plan_of(f"{BASE} rtk.image=udpcast://9000 rtk.sha256={SHA.upper()}")
    assert p.expected_sha256 == SHA


def test_udpcast_image_without_a_sha256_is_refused_with_the_reason():
    with pytest.raises(PlanError) as e:
        plan_of(f"{BASE} rtk.image=udpcast://eth0@9000")
    assert "needs its SHA-256" in str(e.value) and "read only once" in str(e.value)


def test_two_different_sha256_are_refused():
    with pytest.raises(PlanError, match="give one SHA-256"):
        plan_of(f"{BASE} rtk.image=udpcast://9000?sha256={SHA} rtk.sha256={OTHER}")


def test_a_malformed_udpcast_image_names_the_parameter():
    with pytest.raises(CmdlineError, match=r"^rtk.image: the port base must be even"):
        plan_of(f"{BASE} rtk.image=udpcast://9001?sha256={SHA}")


def test_udpcast_is_not_a_copy_source():
    with pytest.raises(PlanError, match="rtk.mode=copy copies a disk"):
        plan_of(f"rtk.mode=copy rtk.image=udpcast://9000?sha256={SHA} rtk.disk=serial:A1 "
                "rtk.consent=serial:A1")


def test_fallback_on_the_command_line():
    p = plan_of(f"{BASE} rtk.image=udpcast://9000?sha256={SHA} rtk.fallback={FALLBACK}")
    assert p.fallback == FALLBACK


def test_fallback_must_be_an_http_url():
    with pytest.raises(CmdlineError, match="rtk.fallback: expected an http"):
        plan_of(f"{BASE} rtk.image=udpcast://9000?sha256={SHA} rtk.fallback=/images/x.img")


def test_fallback_only_for_a_udpcast_image():
    with pytest.raises(PlanError, match="is not one; drop the fallback"):
        plan_of(f"{BASE} rtk.image=http://10.0.0.5/x.img rtk.fallback={FALLBACK}")


def test_fallback_and_image_in_the_plan_file(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({
        "version": 1, "mode": "restore", "image": f"udpcast://eth1@9002?sha256={SHA}",
        "fallback": FALLBACK, "disk": "serial:A1", "consent": "serial:A1"}))
    p = read_plan(Cmdline("rtk.plan=/plan.json"), medium=str(tmp_path))
    assert (p.image.kind, p.fallback, p.expected_sha256) == ("udpcast", FALLBACK, SHA)


def test_the_schema_knows_udpcast_and_fallback():
    ok = {"image": f"udpcast://9000?sha256={SHA}", "fallback": FALLBACK}
    assert schema_errors(ok, SCHEMA) == []
    assert schema_errors({"fallback": "ftp://x/y"}, SCHEMA)


# --- the fallback decision, the restore steps replaced ------------------------------------

class Steps:
    """Fake plan_restore / check_image / restore: each restore returns the next status."""

    def __init__(self, *outcomes, refuse_check: str | None = None):
        self.outcomes = list(outcomes)  # (status, wrote) per restore call
        self.planned, self.restored, self.hashed = [], [], []
        self.refuse_check = refuse_check

    def plan_restore(self, location, path, opts, disks=None):
        if self.refuse_check and location == self.refuse_check:
            raise toolkit.restore.Refused("the fallback server: 404 Not Found")
        self.planned.append((location, path, opts.sha256))
        img = SimpleNamespace(location=location, kind="raw", size=None,
                              expected_sha256=opts.sha256, sha256_from="command line")
        return SimpleNamespace(image=img, warnings=[], target=SimpleNamespace(size=GB100),
                               checked=None)

    def check_image(self, rplan, progress=None):
        self.hashed.append(rplan.image.location)
        if rplan.image.location.startswith("udpcast://"):
            return None  # as toolkit.restore.check_image: a live stream, checked while written
        return SimpleNamespace(sha256=rplan.image.expected_sha256, spool=None,
                               close=lambda: None)

    def restore(self, rplan, progress=None, consent=None):
        status, wiped = self.outcomes.pop(0)
        self.restored.append((rplan.image.location, consent))
        msg = {"ok": "restored 64 bytes", "failed": "no multicast sender on 9000 within 5 s",
               "mismatch": "SHA-256 mismatch", "refused": "streams a qcow2 image"}[status]
        return SimpleNamespace(status=status, message=msg, to_dict=lambda: {}, report=None,
                               input_sha256=SHA, sha256_match=status == "ok",
                               image_hash=None, algorithm="blake3", image_size=None,
                               wiped=wiped, touched=wiped)  # touched: it wrote at all

    def hooks(self) -> dict:
        return {"plan_restore": self.plan_restore, "check_image": self.check_image,
                "restore": self.restore}


def job_for(steps: Steps, fallback: str | None = FALLBACK) -> Job:
    text = f"{BASE} rtk.image=udpcast://9000?sha256={SHA}" + (
        f" rtk.fallback={fallback}" if fallback else "")
    job = Job(plan_of(text), RunReporter(None), quiet(), dry_run=False, medium="/nonexistent",
              hooks=steps.hooks())
    job.disk = disk("sda", "A1", size=GB100)
    return job


def write(job: Job):
    return job.write_restore(job.check_restore([job.disk]))


def test_no_sender_nothing_written_falls_back_once_with_the_same_checks():
    steps = Steps(("failed", False), ("ok", False))
    job = job_for(steps)
    status, message = write(job)
    assert status == "ok" and "from the fallback" in message and "no multicast" in message
    assert [p[0] for p in steps.planned] == [job.plan.image.location, FALLBACK]
    assert all(p[2] == SHA for p in steps.planned)  # the same SHA-256 for the fallback
    assert steps.hashed[-1] == FALLBACK  # the HTTP image: checked before writing
    (_, c1), (_, c2) = steps.restored
    assert c1 == c2  # the same consent
    assert job.fallback["written_before"] is False and job.written


def test_a_stream_lost_after_writing_still_falls_back():
    steps = Steps(("failed", True), ("ok", False))
    job = job_for(steps)
    status, _ = write(job)
    assert status == "ok" and job.fallback["written_before"] is True


def test_a_wrong_stream_falls_back_to_the_checked_http_image():
    steps = Steps(("mismatch", True), ("ok", False))
    assert write(job_for(steps))[0] == "ok"


def test_a_refusal_is_not_retried():
    steps = Steps(("refused", False))
    job = job_for(steps)
    status, _ = write(job)
    assert status == "refused" and len(steps.restored) == 1 and job.fallback is None
    assert not job.written


def test_no_fallback_in_the_plan_no_retry_and_nothing_written_is_said():
    steps = Steps(("failed", False))
    job = job_for(steps, fallback=None)
    assert write(job)[0] == "failed" and len(steps.restored) == 1
    assert not job.written  # the stream failed before the first write


def test_success_needs_no_fallback():
    steps = Steps(("ok", False))
    assert write(job_for(steps))[0] == "ok" and len(steps.restored) == 1


def test_both_failing_says_both():
    steps = Steps(("failed", False), ("failed", False))
    status, message = write(job_for(steps))
    assert status == "failed" and "the fallback" in message and "failed too" in message


def test_fallback_refused_after_a_partial_write_is_a_failure_not_a_refusal():
    from toolkit.unattended.job import Stop
    steps = Steps(("failed", True), refuse_check=FALLBACK)
    with pytest.raises(Stop) as e:
        write(job_for(steps))
    assert e.value.status == "failed" and "did not pass its checks" in str(e.value)
    steps = Steps(("failed", False), refuse_check=FALLBACK)
    with pytest.raises(Stop) as e:
        write(job_for(steps))
    assert e.value.status == "refused"


def test_the_whole_run_uses_the_fallback(monkeypatch):
    steps = Steps(("failed", False), ("ok", False))
    for name in ("plan_restore", "check_image", "restore"):
        monkeypatch.setattr(toolkit.restore, name, getattr(steps, name))
    p = plan_of(f"{BASE} rtk.image=udpcast://9000?sha256={SHA} rtk.fallback={FALLBACK} "
                "rtk.done=menu")
    out = run(p, console=quiet(), list_disks=lambda: [disk("sda", "A1", size=GB100)],
              power=None, reporter=RunReporter(None))
    assert out.status == "ok" and "from the fallback" in out.message and out.written
