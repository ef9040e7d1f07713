"""The unattended runner on real loop devices, with a real image served over HTTP and a
real report server on 127.0.0.1 (recording every POST body).

Consent: :func:`toolkit.selectors.check_consent` only accepts a disk's serial or WWN,
and loop devices have neither (and this host has no udev, so no by-id/by-path
links either): a real loop device can never be consented to, which
``test_loop_device_without_identity_cannot_be_consented`` shows. The other tests
take the real inventory (:func:`toolkit.disks.list_disks`) cut down to the test's own
loop devices, and give one of them a serial, as udev would give a SCSI disk
(``own_disks(..., serials=...)``); selection is by ``rule:transport=loop,size=N``.
Other loop devices attached on the machine change nothing. Needs root; ~15 s.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB, closed_port_url, own_disks
from loopdev import marked_image
from vmlab.report import ReportServer

from toolkit.unattended import Console, ReportClient, RunReporter, run
from toolkit.unattended.cmdline import Cmdline
from toolkit.unattended.plan import Image, Plan, read_plan
from toolkit.unattended.selectors import parse_consent, parse_selector

pytestmark = pytest.mark.host

SIZE = 96 * MiB + 4567 * 512  # an odd size no other loop device on this host has
MARKER = b"RTK-UNATTENDED-MARKER-" * 64


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("uimg")
    built = ri.build_mbr_image(d / "mbr.img")
    srv = ri.RangeServer(d)
    yield built, srv.url("mbr.img"), srv
    srv.stop()


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture
def targets(tmp_path, loops):
    """``targets(n, size)``: n loop devices, each with MARKER at both ends (loop_device
    clears the read-only flag a reused loop device may keep from another test)."""
    count = itertools.count()

    def make(n: int = 1, size: int = SIZE) -> list[str]:
        return [loops(marked_image(tmp_path / f"t{next(count)}.img", size, MARKER))
                for _ in range(n)]
    return make


@pytest.fixture
def server():
    s = ReportServer(fail_first=1)  # the first POST fails: the client must retry
    yield s
    s.stop()


def digest(dev: str, n: int | None = None) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        left = n
        while left is None or left > 0:
            data = f.read(8 * MiB if left is None else min(8 * MiB, left))
            if not data:
                break
            h.update(data)
            if left is not None:
                left -= len(data)
    return h.hexdigest()


class Power:
    def __init__(self):
        self.calls = []

    def __call__(self, action):
        self.calls.append(action)


def plan(url, *, sha, disk=f"rule:transport=loop,size={SIZE}", consent="serial:RTK-LOOP-1",
         report=None, done="poweroff"):
    text = (f"rtk.mode=restore rtk.image={url} rtk.disk={disk} rtk.consent={consent} "
            f"rtk.done={done}" + (f" rtk.sha256={sha}" if sha else "")
            + (f" rtk.report={report}" if report else ""))
    return read_plan(Cmdline(text))


def quiet() -> Console:
    return Console(streams=[io.StringIO()])


def test_restore_success_reports_and_powers_off(image, targets, server):
    built, url, _ = image
    (dev,) = targets()
    power, con = Power(), quiet()
    out = run(plan(url, sha=built.sha256, report=server.url), console=con, power=power,
              list_disks=own_disks(dev, serials={dev: "RTK-LOOP-1"}),
              reporter=RunReporter(ReportClient(server.url, backoff=0.05), interval=0.2))
    assert out.status == "ok", out.message
    assert out.exit_code == 0 and out.action == "poweroff" and power.calls == ["poweroff"]
    assert digest(dev, built.size) == built.sha256  # the image is on the disk, byte for byte
    ev = server.events()
    assert ev[0] == "start" and ev[-1] == "end" and "progress" in ev
    assert server.requests == len(server.bodies) + 1  # the failed first POST was retried
    end = server.bodies[-1]
    assert end["result"] == "ok" and end["error"] is None and end["action"] == "poweroff"
    assert end["hashes"]["image_sha256"] == built.sha256 and end["hashes"]["sha256_match"]
    assert end["disk"]["path"] == dev and end["disk"]["serial"] == "RTK-LOOP-1"
    assert end["timings"]["write"] > 0 and end["image"]["sha256_expected"] == built.sha256
    phases = {b["phase"] for b in server.bodies if b["event"] == "progress"}
    assert {"checksum", "write"} <= phases
    assert {b["run_id"] for b in server.bodies} == {out.run_id}
    assert Path(out.reports["text"]).read_text().startswith("Unattended run")
    assert any("rebooting" in x or "powering off" in x for x in con.lines)


def test_consent_mismatch_writes_nothing(image, targets, server):
    built, url, _ = image
    (dev,) = targets()
    before, power, con = digest(dev), Power(), quiet()
    out = run(plan(url, sha=built.sha256, consent="serial:SOMEONE-ELSE", report=server.url),
              console=con, power=power, list_disks=own_disks(dev, serials={dev: "RTK-LOOP-1"}),
              reporter=RunReporter(ReportClient(server.url, backoff=0.05)))
    assert digest(dev) == before
    assert out.status == "refused" and out.action == "stay" and power.calls == []
    assert "rtk.consent=serial:SOMEONE-ELSE does not name the disk found" in out.message
    end = server.bodies[-1]
    assert end["event"] == "end" and end["result"] == "refused" and end["written"] is False
    assert "does not name the disk found" in end["error"] and end["action"] == "stay"
    assert any("does not name the disk found" in line for line in con.lines)


def test_loop_device_without_identity_cannot_be_consented(image, targets):
    built, url, _ = image
    (dev,) = targets()
    before = digest(dev)
    out = run(plan(url, sha=None), console=quiet(), power=Power(), list_disks=own_disks(dev),
              reporter=RunReporter(None))
    assert out.status == "refused" and "has neither serial nor WWN" in out.message
    assert digest(dev) == before


def test_selector_matching_two_disks_writes_nothing(image, targets, server):
    built, url, _ = image
    a, b = targets(2)
    before = digest(a), digest(b)
    out = run(plan(url, sha=built.sha256, report=server.url), console=quiet(), power=Power(),
              list_disks=own_disks(a, b, serials={a: "RTK-LOOP-1"}),
              reporter=RunReporter(ReportClient(server.url, backoff=0.05)))
    assert (digest(a), digest(b)) == before
    assert out.status == "refused" and out.phase == "select" and out.action == "stay"
    assert "matches 2 disks, it must match exactly one" in out.message
    assert a.rsplit("/", 1)[1] in out.message and b.rsplit("/", 1)[1] in out.message
    assert server.bodies[-1]["error"] == out.message


@pytest.mark.parametrize("case", ["checksum", "too-large", "image-server-down"])
def test_checks_stop_before_the_first_write(image, targets, case):
    built, url, _ = image
    size = 32 * MiB + 4567 * 512 if case == "too-large" else SIZE
    (dev,) = targets(1, size)
    before = digest(dev)
    sha = "0" * 64 if case == "checksum" else built.sha256
    if case == "image-server-down":
        url = closed_port_url().replace("/report", "/mbr.img")
    out = run(plan(url, sha=sha, disk=f"rule:transport=loop,size={size}"), console=quiet(),
              power=Power(), list_disks=own_disks(dev, serials={dev: "RTK-LOOP-1"}),
              reporter=RunReporter(None))
    assert digest(dev) == before
    assert out.action == "stay" and not out.written and out.phase == "check"
    want = {"checksum": "SHA-256 mismatch", "too-large": "smaller than the image",
            "image-server-down": "127.0.0.1"}[case]
    assert want in out.message
    assert out.status == ("mismatch" if case == "checksum" else "refused")


def test_dry_run_writes_nothing(image, targets):
    built, url, _ = image
    (dev,) = targets()
    before, power = digest(dev), Power()
    out = run(plan(url, sha=built.sha256), console=quiet(), power=power, dry_run=True,
              list_disks=own_disks(dev, serials={dev: "RTK-LOOP-1"}), reporter=RunReporter(None))
    assert out.status == "dry-run" and out.exit_code == 0, out.message
    assert out.action == "stay" and power.calls == [] and digest(dev) == before


def test_unreachable_report_server_does_not_block_the_job(image, targets):
    built, url, _ = image
    (dev,) = targets()
    report = closed_port_url()
    client = ReportClient(report, retries=3, backoff=0.1, max_time=1.0)
    t = time.monotonic()
    out = run(plan(url, sha=built.sha256, report=report, done="reboot"), console=quiet(),
              power=Power(), list_disks=own_disks(dev, serials={dev: "RTK-LOOP-1"}),
              reporter=RunReporter(client, interval=0.2))
    assert out.status == "ok", out.message
    assert out.action == "reboot" and digest(dev, built.size) == built.sha256
    assert client.sent == 0 and client.failed >= 2  # start and end, each given up on
    assert time.monotonic() - t < 30


def test_copy_mode_copies_and_verifies(targets, server, tmp_path):
    """Copy mode with the Plan built directly: the source is a loop device picked by a
    rule (on the ISO it is an attached SOURCE LUN, ``iscsi:IQN:LUN``)."""
    src_size = 40 * MiB + 4567 * 512
    (src,) = targets(1, src_size)
    with open(src, "r+b") as f:
        f.write(bytes(range(256)) * (src_size // 256))
    (dst,) = targets()
    p = Plan(mode="copy", image=Image("iscsi", "rule", selector=parse_selector(
        f"rule:transport=loop,size={src_size}")), disk=parse_selector(
        f"rule:transport=loop,size={SIZE}"), consent=parse_consent("serial:RTK-LOOP-2"),
        report=server.url, done="reboot")
    power = Power()
    out = run(p, console=quiet(), power=power,
              list_disks=own_disks(src, dst, serials={dst: "RTK-LOOP-2"}),
              reporter=RunReporter(ReportClient(server.url, backoff=0.05), interval=0.2))
    assert out.status == "ok", out.message
    assert power.calls == ["reboot"] and digest(dst, src_size) == digest(src)
    end = server.bodies[-1]
    assert end["result"] == "ok" and end["hashes"]["verify_match"] is True
    assert end["source"]["path"] == src and end["disk"]["path"] == dst


# --- a copy job of several pairs (plan file pairs:) -------------------------------------------

PAIR_SIZES = (24 * MiB + 512, 20 * MiB + 1024, 30 * MiB, 26 * MiB)  # s1, s2, d1, d2


def _pairs_plan(tmp_path, text: str) -> Plan:
    (tmp_path / "plans").mkdir(exist_ok=True)
    (tmp_path / "plans" / "job.yaml").write_text(text)
    return read_plan(Cmdline("rtk.mode=copy rtk.plan=/plans/job.yaml rtk.done=reboot"),
                     medium=str(tmp_path))


def _pairs_yaml(consent2: str = "serial:RTK-D2", disk2: str = f"size={PAIR_SIZES[3]}",
                src1: str = f"rule:transport=loop,size={PAIR_SIZES[0]}") -> str:
    _s1, s2, d1, _d2 = PAIR_SIZES
    return (f"version: 1\npairs:\n"
            f"  - {{source: '{src1}', disk: 'rule:transport=loop,size={d1}',"
            f" consent: 'serial:RTK-D1'}}\n"
            f"  - {{source: 'rule:transport=loop,size={s2}', disk: 'rule:transport=loop,{disk2}',"
            f" consent: '{consent2}'}}\n")


@pytest.fixture
def job_disks(targets):
    s1, s2, d1, d2 = (targets(1, size)[0] for size in PAIR_SIZES)
    for dev, size in ((s1, PAIR_SIZES[0]), (s2, PAIR_SIZES[1])):
        with open(dev, "r+b") as f:
            f.write(os.urandom(size))
    return s1, s2, d1, d2


def test_copy_job_of_two_pairs_from_a_plan_file(tmp_path, job_disks, server):
    s1, s2, d1, d2 = job_disks
    p = _pairs_plan(tmp_path, _pairs_yaml())
    assert len(p.pairs) == 2 and p.disk is None
    power, con = Power(), quiet()
    out = run(p, console=con, power=power,
              list_disks=own_disks(s1, s2, d1, d2, serials={d1: "RTK-D1", d2: "RTK-D2"}),
              reporter=RunReporter(ReportClient(server.url, backoff=0.05), interval=0.2))
    assert out.status == "ok", out.message
    assert power.calls == ["reboot"] and out.message == "all 2 pairs copied, verified"
    assert digest(d1, PAIR_SIZES[0]) == digest(s1) and digest(d2, PAIR_SIZES[1]) == digest(s2)
    assert "pair 2 of 2: copied, verified" in con.lines, con.lines
    job_report = json.loads(Path(out.reports["copy_json"]).read_text())
    assert job_report["kind"] == "copy-job" and len(job_report["pairs"]) == 2
    end = server.bodies[-1]
    assert end["result"] == "ok" and [x["verify_match"] for x in end["hashes"]["pairs"]] \
        == [True, True]
    assert [x["disk"]["path"] for x in end["pairs"]] == [d1, d2]


def test_copy_job_refused_when_a_target_is_another_pairs_source(tmp_path, job_disks, loops):
    """Pair 2's disk is a second loop device over pair 1's SOURCE file: refused in the
    check phase, nothing written to either target."""
    s1, s2, d1, d2 = job_disks
    alias = loops(Path(tmp_path / "t0.img"))  # the file of s1 (the first image made)
    before = digest(d1), digest(s1)
    p = _pairs_plan(tmp_path, _pairs_yaml("serial:RTK-ALIAS", "serial=RTK-ALIAS",
                                          src1="serial:RTK-S1"))
    out = run(p, console=quiet(), power=Power(), list_disks=own_disks(
        s1, s2, d1, alias, serials={s1: "RTK-S1", d1: "RTK-D1", alias: "RTK-ALIAS"}))
    assert out.status == "refused" and out.phase == "check", out.message
    assert "source of pair 1" in out.message and not out.written
    assert (digest(d1), digest(s1)) == before


def test_copy_job_dry_run_says_each_pair(tmp_path, job_disks):
    s1, s2, d1, d2 = job_disks
    before = digest(d1), digest(d2)
    out = run(_pairs_plan(tmp_path, _pairs_yaml()), console=quiet(), power=Power(),
              list_disks=own_disks(s1, s2, d1, d2, serials={d1: "RTK-D1", d2: "RTK-D2"}),
              dry_run=True)
    assert out.status == "dry-run" and f"would write {d1}, {d2}" in out.message, out.message
    report = json.loads(Path(out.reports["json"]).read_text())
    writes = [w["action"] for w in report["would_do"] if w["phase"] == "write"]
    assert writes[0].startswith(f"copy pair 1: {s1}") and writes[1].startswith(
        f"copy pair 2: {s2}")
    assert (digest(d1), digest(d2)) == before


def test_copy_used_blocks_from_the_plan(tmp_path, targets):
    """``used_blocks: true``: an ext4 SOURCE is copied by its used blocks (the report's
    domain); the target's filesystem checks clean."""
    import subprocess
    src_size = 32 * MiB + 4096
    (src,) = targets(1, src_size)
    with open(src, "r+b") as f:
        f.write(os.urandom(src_size))
    subprocess.run(["mkfs.ext4", "-q", "-F", src], check=True)
    (dst,) = targets()
    p = Plan(mode="copy", image=Image("iscsi", "rule", selector=parse_selector(
        f"rule:transport=loop,size={src_size}")), disk=parse_selector(
        f"rule:transport=loop,size={SIZE}"), consent=parse_consent("serial:RTK-LOOP-2"),
        done="menu", used_blocks=True)
    out = run(p, console=quiet(), power=Power(),
              list_disks=own_disks(src, dst, serials={dst: "RTK-LOOP-2"}))
    assert out.status == "ok", out.message
    report = json.loads(Path(out.reports["copy_json"]).read_text())
    assert report["copy"]["domain"]["bytes"] < src_size / 2, report["copy"]["domain"]
    subprocess.run(["e2fsck", "-fn", dst], check=True, capture_output=True)
