"""The unattended runner without devices: the report client against a real HTTP server
on 127.0.0.1, the iSCSI attach step with the plan's LUN list (the attach function is
a parameter of :func:`toolkit.unattended.run`: this host has no iscsi_tcp), the disk
selection and consent against Disk objects, and the done-action rule."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from conftest import closed_port_url, disk
from vmlab.report import ReportServer

from toolkit import iscsi
from toolkit.iscsi.adm import Chap
from toolkit.jobs.progress import Progress
from toolkit.jobs.report import safe_url
from toolkit.unattended import Console, ReportClient, RunReporter, decide_done, run
from toolkit.unattended.cmdline import Cmdline
from toolkit.unattended.plan import read_plan
from toolkit.unattended.reporter import SCHEMA, scrub
from toolkit.unattended.runner import iscsi_luns
from toolkit.unattended.selectors import SOURCE, TARGET

pytestmark = pytest.mark.usefixtures("rtk_dirs")  # logs and roles in tmp_path

SECRETS = ("s3cretChap1", "t0pMutual2", "srcPass3")


@pytest.fixture
def server():
    s = ReportServer()
    yield s
    s.stop()


GB100 = 100 * 10**9  # the size of the disks below: rtk.disk=rule:size>=50G matches them


def plan_of(text: str):
    return read_plan(Cmdline(text))


def quiet() -> Console:
    return Console(streams=[io.StringIO()])


class Never:
    """A step that must not be reached: fails the test if called."""

    def __init__(self, what):
        self.what = what

    def __call__(self, *a, **kw):
        raise AssertionError(f"{self.what} was called")


# --- report client ---------------------------------------------------------------

def test_client_retries_until_the_server_answers():
    s = ReportServer(fail_first=2)
    try:
        c = ReportClient(s.url, retries=3, backoff=0.01)
        assert c.post({"event": "start"}) is True
        assert s.requests == 3 and s.bodies == [{"event": "start"}]
    finally:
        s.stop()


def test_client_gives_up_after_bounded_tries_and_never_raises():
    s = ReportServer(fail_first=100)
    try:
        c = ReportClient(s.url, retries=2, backoff=0.01)
        assert c.post({"event": "end"}) is False
        assert s.requests == 3 and c.failed == 1 and c.last_error == "HTTP 503"
    finally:
        s.stop()


def test_client_is_bounded_in_time():
    c = ReportClient(closed_port_url(), retries=1000, backoff=0.05, max_time=0.5)
    t = time.monotonic()
    assert c.post({"event": "start"}) is False
    assert time.monotonic() - t < 1.5


def test_progress_is_throttled_and_sent_in_the_background(server):
    rep = RunReporter(ReportClient(server.url), interval=3600, host="n1",
                      macs=["52:54:00:12:34:56"])
    for done in range(0, 100, 10):
        rep.progress(Progress("write", done, 100, 1.0, 1.0, 5.0))
    rep.progress(Progress("verify", 0, 100, 1.0, 1.0, 5.0))  # a new phase goes out at once
    rep.end(result="ok")
    assert [b["event"] for b in rep.posted] == ["progress", "progress", "end"]
    assert server.events()[-1] == "end"
    b = rep.posted[0]
    assert b["schema"] == SCHEMA and b["host"] == {"name": "n1", "macs": ["52:54:00:12:34:56"]}
    assert b["progress"]["bytes_done"] == 0 and b["progress"]["bytes_total"] == 100


def test_scrub_and_safe_url():
    assert scrub({"a": ["x s3cret y"], "s3cret": 1}, ["s3cret"]) == \
        {"a": ["x ******** y"], "********": 1}
    # a one-letter secret is masked in values but renames none of the report's keys
    assert scrub({"phase": "a", "password": "a"}, ["a"]) == \
        {"phase": "********", "password": "********"}
    assert safe_url("https://u:pw@h.example:8443/p/img.raw?token=abc") == \
        "https://h.example:8443/p/img.raw"
    # a multicast location holds no secret: its NIC is not a user name, its hash is kept
    assert safe_url("udpcast://ens16@9000?sha256=ab12") == "udpcast://ens16@9000?sha256=ab12"


def test_the_secrets_of_a_plans_urls_are_masked():
    """rtk.image= and rtk.fallback=: a URL's password (as typed and decoded) and its query
    values; a multicast location has none."""
    from toolkit.unattended.job import plan_secrets
    plan = read_plan(Cmdline(
        "rtk.mode=restore rtk.image=udpcast://eth0@9000?start_timeout=5 "
        "rtk.fallback=http://tech:S3C%2FRET@h.example/x.img?token=T0KEN42&n=1 "
        f"rtk.sha256={'ab' * 32} rtk.disk=rule:transport=loop rtk.consent=serial:X"))
    got = plan_secrets(plan)
    assert {"S3C/RET", "S3C%2FRET", "T0KEN42"} <= set(got), got
    assert "1" not in got and not any("eth0" in g or "9000" in g for g in got), got


def test_done_action_only_after_success():
    assert decide_done("ok", "poweroff") == "poweroff"
    for status in ("refused", "failed", "mismatch", "cancelled", "unreadable"):
        for done in ("reboot", "poweroff", "menu", "shell"):
            assert decide_done(status, done) == "stay"
    assert decide_done("ok", "reboot", dry_run=True) == "stay"


# --- iSCSI attach step -----------------------------------------------------------

PLAN_FILE = """
version: 1
mode: copy
disk: "iscsi:iqn.2026-11.lab.rtk:san:1"
consent: "wwn:0x600000000000000000000000000000aa"
initiator: iqn.2026-11.lab.rtk:node7
report: REPORT
done: poweroff
sources:
  - {host: 10.0.2.2, port: 3262, iqn: "iqn.2026-11.lab.rtk:bdr1", lun: 1,
     chap: {username: bdr, password: "srcPass3"}}
targets:
  - host: 10.0.2.3
    iqn: "iqn.2026-11.lab.rtk:san"
    lun: 1
    chap: {username: bob, password: "s3cretChap1"}
    mutual: {username: san, password: "t0pMutual2"}
"""


@pytest.fixture
def chap_plan(tmp_path, server):
    (tmp_path / "medium").mkdir()
    (tmp_path / "medium" / "site.yaml").write_text(PLAN_FILE.replace("REPORT", server.url))
    return read_plan(Cmdline("rtk.plan=/site.yaml"), medium=str(tmp_path / "medium"))


def test_luns_to_attach_come_from_the_plan_sources_first(chap_plan):
    luns = iscsi_luns(chap_plan)
    assert [(x.role, x.iqn, x.host, x.port, x.lun) for x in luns] == [
        (SOURCE, "iqn.2026-11.lab.rtk:bdr1", "10.0.2.2", 3262, 1),
        (TARGET, "iqn.2026-11.lab.rtk:san", "10.0.2.3", 3260, 1)]


def test_attach_step_attaches_each_lun_with_its_role_and_chap(chap_plan, server):
    calls, initiator = [], []

    def attach(host, iqn, role, *, port, lun, chap, mutual):
        calls.append((host, iqn, role, port, lun, chap, mutual))
        return iscsi.AttachResult(iqn, f"{host}:{port}", role, None, [], [], [])

    out = run(chap_plan, console=quiet(), attach=attach, set_initiator=initiator.append,
              list_disks=lambda: [disk("sda", serial="OTHER", size=GB100)], power=Never("power"),
              apply_network=Never("network"))
    assert initiator == ["iqn.2026-11.lab.rtk:node7"]
    assert calls == [
        ("10.0.2.2", "iqn.2026-11.lab.rtk:bdr1", SOURCE, 3262, 1, Chap("bdr", "srcPass3"), None),
        ("10.0.2.3", "iqn.2026-11.lab.rtk:san", TARGET, 3260, 1, Chap("bob", "s3cretChap1"),
         Chap("san", "t0pMutual2"))]
    # the LUN disk is not in the (fake) inventory: stopped at the selection, nothing written
    assert out.status == "refused" and out.phase == "select" and out.action == "stay"
    assert "no disk matches rtk.disk=iscsi:iqn.2026-11.lab.rtk:san:1" in out.message


def test_chap_failure_stops_before_writing_and_no_secret_leaves(chap_plan, server, tmp_path):
    def attach(host, iqn, role, **kw):
        if role == TARGET:
            raise iscsi.IscsiAuthError(f"login to {iqn} refused: authentication failure "
                                       f"(iscsiadm exit 24) secret {kw['chap'].password}")
        return iscsi.AttachResult(iqn, host, role, None, [], [], [])

    con = quiet()
    out = run(chap_plan, console=con, attach=attach, set_initiator=lambda n: None,
              list_disks=Never("list_disks"), power=Never("power"))
    assert out.status == "refused" and out.exit_code == 5 and out.phase == "iscsi"
    assert out.action == "stay" and not out.written
    assert "CHAP authentication failed for TARGET iqn.2026-11.lab.rtk:san LUN 1" in out.message
    assert server.events() == ["start", "progress", "end"]
    end = server.bodies[-1]
    assert end["result"] == "refused" and "CHAP authentication failed" in end["error"]
    assert end["action"] == "stay"
    screen = "\n".join(con.lines)
    assert "CHAP authentication failed" in screen and "STOPPED" in screen
    local = Path(out.reports["json"]).read_text() + Path(out.reports["text"]).read_text()
    for secret in SECRETS:
        assert all(secret.encode() not in raw for raw in server.raw), secret
        assert secret not in screen and secret not in out.message and secret not in local
    assert "********" in json.dumps(server.bodies[0]["plan"])


def test_unreachable_portal_stops(chap_plan):
    def attach(host, iqn, role, **kw):
        raise iscsi.IscsiPortalUnreachable(f"{host}:3262 does not answer")

    out = run(chap_plan, console=quiet(), attach=attach, set_initiator=lambda n: None,
              list_disks=Never("list_disks"), power=Never("power"),
              reporter=RunReporter(None))
    assert out.status == "refused" and "portal unreachable" in out.message


# --- selection and consent (Disk objects, no devices) ------------------------------

def test_two_matching_disks_stop(server):
    p = plan_of(f"rtk.mode=restore rtk.image=http://10.0.2.2/w.img rtk.disk=rule:size>=50G "
                f"rtk.consent=serial:A1 rtk.report={server.url}")
    out = run(p, console=quiet(), list_disks=lambda: [disk("sda", "A1", size=GB100),
                                                      disk("sdb", "B2", size=GB100)],
              power=Never("power"), attach=Never("attach"))
    assert out.status == "refused" and out.phase == "select" and out.action == "stay"
    assert "matches 2 disks" in out.message and "sda" in out.message and "sdb" in out.message
    assert server.bodies[-1]["error"] == out.message


def test_consent_must_name_the_disk_found(server):
    p = plan_of(f"rtk.mode=restore rtk.image=http://10.0.2.2/w.img rtk.disk=serial:A1 "
                f"rtk.consent=serial:B2 rtk.report={server.url}")
    out = run(p, console=quiet(), list_disks=lambda: [disk("sda", "A1", size=GB100),
                                                      disk("sdb", "B2", size=GB100)],
              power=Never("power"))
    assert out.status == "refused" and "does not name the disk found" in out.message
    assert server.bodies[-1]["disk"]["serial"] == "A1"


def test_a_secret_inside_another_is_masked_whole():
    from toolkit.iscsi.adm import redact
    # the longer secret first: masking "s3cret" first would leave "X-********-tail" visible
    assert redact("pw=X-s3cret-tail and s3cret", ["s3cret", "X-s3cret-tail"]) == \
        "pw=******** and ********"
    assert scrub({"k X-s3cret-tail": ["s3cret"]}, ["s3cret", "X-s3cret-tail"]) == \
        {"k ********": ["********"]}
