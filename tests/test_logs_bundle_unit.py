"""The logs bundle without devices: what it holds, no CHAP secret anywhere in it (a plan
file, roles, an iSCSI log, open-iscsi's records and the kernel command line with known
secrets among the sources), missing tools said in its index, the POST to a real HTTP
server on 127.0.0.1, the Logs screen's "save bundle" (keys typed, screen read), and the
unattended plan's ``bundle: true`` (the bundle event at the report server)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import dialog, guest_disks, guest_probe, type_text, wait_worker, words
from screen import press, render
from vmlab.report import ReportServer

from toolkit import iscsi
from toolkit.system import bundle
from toolkit.unattended import Console, run
from toolkit.unattended.cmdline import Cmdline
from toolkit.unattended.plan import PlanError, read_plan
from toolkit.unattended.selectors import TARGET
from tui.app import App

pytestmark = pytest.mark.unit

PLAN_SECRET = "planChapS3cret"  # in a plan file kept beside the reports
LOG_SECRET = "logged-unmasked-7"  # an old iscsi.log line, iscsiadm's -v
ROLES_SECRET = "rolesPw-42"  # a roles file that should never have held one
NODE_SECRET = "nodeDbSecret9"  # open-iscsi's node record (and a bare mention elsewhere)
CMDLINE_SECRET = "cmd:line@pw"  # iscsi:user:PASSWORD@ on the kernel command line, encoded
GIVEN_SECRET = "givenS3cret%x"  # passed by the caller (the unattended run's plan secrets)
SECRETS = (PLAN_SECRET, LOG_SECRET, ROLES_SECRET, NODE_SECRET, CMDLINE_SECRET, GIVEN_SECRET)


@pytest.fixture
def sources(rtk_dirs, monkeypatch):
    """A state directory, a run directory, an /etc/iscsi and a /proc/cmdline, each holding
    secrets the way they could really appear; the disk probe replayed from a guest."""
    log, run_dir, root = rtk_dirs / "log", rtk_dirs / "run", rtk_dirs
    log.mkdir()
    run_dir.mkdir()
    (log / "copy-20261122-101500.txt").write_text("copy report\nresult: verified\n")
    (log / "copy-a--b.map").write_text("# Mapfile\n0x00000000     +               1\n"
                                       "0x00000000  0x00100000  +\n")
    (log / "site-plan.yaml").write_text(
        "targets:\n  - {host: 10.0.2.3, iqn: iqn.2026-11.lab.rtk:san,\n"
        f"     chap: {{username: bob, password: \"{PLAN_SECRET}\"}}}}\n")
    (log / "iscsi.log").write_text(
        "2026-11-22T10:00:00+01:00 $ iscsiadm -m node -T iqn.2026-11.lab.rtk:san -p "
        f"10.0.2.3:3260 -o update -n node.session.auth.password -v {LOG_SECRET}\n"
        f"  | login with {LOG_SECRET} failed\n")
    (log / "tools.log").write_text(f"a tool said {NODE_SECRET} and {GIVEN_SECRET}\n"
                                   f"and percent-encoded: {GIVEN_SECRET.replace('%', '%25')}\n")
    (log / "partial.json.99.tmp").write_text("{")
    (run_dir / "roles.json").write_text(json.dumps(
        {"iqn.x:1": {"role": "TARGET", "chap": {"password": ROLES_SECRET}}}))
    db = root / "etc-iscsi" / "nodes" / "iqn.2026-11.lab.rtk:san" / "10.0.2.3,3260,1"
    db.mkdir(parents=True)
    (db / "default").write_text("node.name = iqn.2026-11.lab.rtk:san\n"
                                "node.session.auth.username = bob\n"
                                f"node.session.auth.password = {NODE_SECRET}\n")
    user, pw = "bob", CMDLINE_SECRET.replace(":", "%3A").replace("@", "%40")
    (root / "cmdline").write_text(f"boot=live rtk.target=iscsi:{user}:{pw}@10.0.2.3::::"
                                  "iqn.2026-11.lab.rtk:san\n")
    monkeypatch.setattr("toolkit.disks.probe.probe", guest_probe)
    return {"state": str(log), "run": str(run_dir), "iscsi_db": str(root / "etc-iscsi"),
            "cmdline": str(root / "cmdline")}


def unpack(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def assert_no_secret(files: dict[str, bytes], secrets=SECRETS) -> None:
    for secret in secrets:
        for form in {secret, secret.replace("%", "%25"),
                     secret.replace(":", "%3A").replace("@", "%40")}:
            hits = [n for n, d in files.items() if form.encode() in d or form in n]
            assert not hits, f"{form!r} in {hits}"


def test_bundle_holds_everything_and_no_secret(sources, tmp_path):
    b = bundle.build(str(tmp_path / "b.tar.gz"), secrets=[GIVEN_SECRET], **sources)
    data = Path(b.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == b.sha256 and len(data) == b.size
    files = unpack(data)
    top = "b/"
    assert {f"{top}{n}" for n in (
        "INDEX.txt", "index.json", "state/copy-20261122-101500.txt", "state/copy-a--b.map",
        "state/iscsi.log", "state/site-plan.yaml", "state/tools.log", "run/roles.json",
        "system/disks-probe.json", "system/iscsi-sessions.json", "system/cmdline.txt",
        "system/about.txt")} <= set(files)
    assert not any(n.endswith(".tmp") for n in files)
    assert json.loads(files[top + "system/disks-probe.json"]) == guest_probe()
    assert b"result: verified" in files[top + "state/copy-20261122-101500.txt"]
    assert_no_secret(files)
    assert b"-n node.session.auth.password -v ********" in files[top + "state/iscsi.log"]
    assert b"iscsi:********@10.0.2.3" in files[top + "system/cmdline.txt"]
    index = files[top + "INDEX.txt"].decode()
    assert "state/copy-a--b.map" in index and "masked" in index


def test_missing_tools_are_said_in_the_index(sources, tmp_path, monkeypatch):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    b = bundle.build(str(tmp_path / "b.tar.gz"), **sources)
    missing = {e.name: e.note for e in b.missing()}
    assert missing["system/journal.txt"] == "journalctl is not installed (systemd)"
    assert missing["system/dmesg.txt"] == "dmesg is not installed (util-linux)"
    assert missing["system/iscsiadm-session.txt"] == "iscsiadm is not installed (open-iscsi)"
    files = unpack(Path(b.path).read_bytes())
    index = files["b/INDEX.txt"].decode()
    assert "Not collected:" in index and "journalctl is not installed (systemd)" in index
    assert "b/state/copy-a--b.map" in files  # the rest is there


def test_secret_shapes_are_masked_where_they_are():
    text = ('password: "abc def"\n{"password_in": "x1y2"}\nnode.session.auth.password = p\n'
            "https://user:urlpass@10.0.0.5/p iscsi:a:b:c:d@h::::iqn.x\n"
            "plan.targets[1].chap.password: required\n")
    out = bundle.mask(text, [])
    for gone in ("abc def", "x1y2", "= p", "urlpass", "a:b:c:d"):
        assert gone not in out
    assert "https://user:********@10.0.0.5/p" in out and "iscsi:********@h" in out


# --- POST to a real server ---------------------------------------------------------------

class UploadServer:
    """Records each POST's headers and body; answers 500 to the first ``fail_first``."""

    def __init__(self, fail_first: int = 0, status: int = 201):
        self.posts: list[tuple[dict, bytes]] = []
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                if outer.requests <= fail_first:
                    self.send_response(500)
                else:
                    outer.posts.append((dict(self.headers), data))
                    self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/bundles"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upload():
    s = UploadServer(fail_first=1)
    yield s
    s.stop()


def test_post_sends_the_file_and_retries_a_5xx(sources, tmp_path, upload):
    b = bundle.build(str(tmp_path / "b.tar.gz"), **sources)
    posted = bundle.post(b, upload.url, backoff=0.01)
    assert posted.ok and posted.status == 201 and posted.tries == 2
    headers, body = upload.posts[0]
    assert headers["Content-Type"] == "application/gzip"
    assert headers["X-RTK-Bundle-SHA256"] == b.sha256 == hashlib.sha256(body).hexdigest()
    refused = UploadServer(status=404)
    try:
        p = bundle.post(b, refused.url.replace("http://", "http://u:pw@"), backoff=0.01)
        assert not p.ok and p.error == "HTTP 404" and p.tries == 1 and "pw" not in p.url
    finally:
        refused.stop()


# --- the Logs screen --------------------------------------------------------------------------

@pytest.fixture
def app(sources):
    a = App(log_dir=sources["state"], list_disks=lambda: guest_disks())
    a.logs.list_disks = lambda: guest_disks()
    return a


def test_logs_screen_sends_the_bundle_to_a_url(app, upload):
    screen = press(app, "l")
    assert "s save bundle" in screen.splitlines()[-1]
    press(app, "s")
    screen = wait_worker(app)
    assert "Save a logs bundle" in screen and "Send to a URL" in screen
    assert "/dev/vda1" in screen  # a filesystem that could be mounted for it
    lines = screen.splitlines()
    beside = [i for i, line in enumerate(lines) if "Beside the state" in line]
    assert beside  # tmp_path is on a disk
    screen = press(app, "down", "enter")  # the second line: Send to a URL
    assert "Logs bundle: send to a URL" in screen
    type_text(app, "ftp://x")
    assert "must start with http://" in words(press(app, "enter"))
    press(app, *["backspace"] * 7)
    type_text(app, upload.url)
    press(app, "enter")
    screen = wait_worker(app)
    text = dialog(screen)
    assert "Logs bundle saved" in screen and f"sent to {upload.url} (HTTP 201)" in text
    headers, body = upload.posts[-1]
    files = unpack(body)
    name = headers["X-RTK-Bundle"].removesuffix(".tar.gz")
    assert f"{name}/state/copy-20261122-101500.txt" in files
    assert_no_secret(files, (PLAN_SECRET, LOG_SECRET, ROLES_SECRET))
    press(app, "enter")
    assert "Logs" in render(app).splitlines()[1]


def test_logs_screen_saves_the_bundle_beside_the_state(app, sources):
    press(app, "l", "s")
    wait_worker(app)
    press(app, "enter")  # Beside the state
    screen = wait_worker(app)
    saved = os.listdir(Path(sources["state"]).parent / "bundles")
    assert len(saved) == 1 and saved[0].startswith("rtk-bundle-") and saved[0] in words(screen)


# --- the unattended plan's bundle: true ------------------------------------------------------

PLAN_FILE = """
version: 1
mode: copy
disk: "iscsi:iqn.2026-11.lab.rtk:san:1"
consent: "wwn:0x600000000000000000000000000000aa"
report: REPORT
bundle: true
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


def test_plan_bundle_needs_a_report_server(tmp_path):
    (tmp_path / "p.yaml").write_text(PLAN_FILE.replace("report: REPORT\n", ""))
    with pytest.raises(PlanError, match="bundle: true .* needs rtk.report="):
        read_plan(Cmdline("rtk.plan=/p.yaml"), medium=str(tmp_path))
    (tmp_path / "q.yaml").write_text(PLAN_FILE.replace("bundle: true", "bundle: 1"))
    with pytest.raises(PlanError, match="plan.bundle: expected true or false"):
        read_plan(Cmdline("rtk.plan=/q.yaml"), medium=str(tmp_path))


def test_unattended_run_sends_the_bundle_at_the_end(sources, tmp_path):
    server = ReportServer()
    try:
        (tmp_path / "medium").mkdir()
        (tmp_path / "medium" / "p.yaml").write_text(PLAN_FILE.replace("REPORT", server.url))
        plan = read_plan(Cmdline("rtk.plan=/p.yaml"), medium=str(tmp_path / "medium"))
        assert plan.bundle

        def attach(host, iqn, role, **kw):  # the TARGET fails, saying its secret
            if role == TARGET:
                raise OSError(f"login failed with {kw['chap'].password}")
            return iscsi.AttachResult(iqn, host, role, None, [], [], [])

        con = Console(streams=[io.StringIO()])
        out = run(plan, console=con, attach=attach, set_initiator=lambda n: None, power=None)
        assert out.status != "ok" and out.action == "stay"
        assert server.events()[-2:] == ["bundle", "end"]
        event = server.bodies[-2]
        assert event["run_id"] == out.run_id and event["seq"] + 1 == server.bodies[-1]["seq"]
        data = base64.b64decode(event["bundle"]["data"])
        assert hashlib.sha256(data).hexdigest() == event["bundle"]["sha256"]
        files = unpack(data)
        assert any("/state/unattended-" in n and n.endswith(".json") for n in files)
        assert_no_secret(files, ("s3cretChap1", "t0pMutual2", "srcPass3", PLAN_SECRET,
                                 LOG_SECRET))
        end = server.bodies[-1]
        assert end["bundle"]["sent"] is True and end["bundle"]["name"] == event["bundle"]["name"]
        assert "data" not in end["bundle"]
        for raw in server.raw:
            assert b"s3cretChap1" not in raw and b"t0pMutual2" not in raw
        assert any("logs bundle" in line and "sent to" in line for line in con.lines)
    finally:
        server.stop()


@pytest.mark.parametrize("line, secret", [
    ("iscsiadm -m node -o update --name node.session.auth.password --value LongOpt5",
     "LongOpt5"),
    ("['iscsiadm', '-m', 'node', '-n', 'node.session.auth.password', '-v', 'ListForm6']",
     "ListForm6"),
    ("iscsiadm -n node.session.auth.password_in --value=Eq9x", "Eq9x"),
    ("iscsiadm -m node -n node.session.auth.password -v Short7 -o update", "Short7"),
])
def test_iscsiadm_password_values_are_masked_in_every_form(line, secret):
    """A log line is the only place such a secret may be (the node record deleted at
    logout): long options, '=' and a Python list of arguments are masked too."""
    from toolkit.system.bundle_secrets import found_secrets, mask

    assert secret in found_secrets(line)
    assert secret not in mask(line, [])


def test_a_mistyped_password_and_the_remote_password_are_masked():
    """A plan's typo (``password:X``, ``password X``: one YAML key, or no YAML at all)
    and remote access's password, which sshd's journal has when someone typed it as the
    user name (the bundle holds the journal)."""
    from toolkit.system import remote
    from toolkit.system.bundle_secrets import known_secrets, mask

    plan = ("targets: [{host: 10.0.0.30, iqn: iqn.2001-05.com.san:csv1,\n"
            "           chap: {username: node, password:san-secret},\n"
            "           mutual: {username: m, password san-secret2}}]\n")
    block = "targets:\n  - chap:\n      username: node\n      password san-secret3\n"
    known = known_secrets([("p.yaml", plan), ("q.yaml", block)])
    assert {"san-secret", "san-secret2"} <= known
    log = "plan.targets[0].chap.password:san-secret: unknown key (an old message)\n"
    out = mask(plan + block + log, known)
    assert "san-secret" not in out, out
    assert "password ********" in out and "password:********" in out
    password = remote.make_password()
    journal = (f"Dec 02 01:20:03 rtk sshd-session[812]: Invalid user {password} from "
               "10.0.2.2 port 40000\nDec 02 01:20:09 rtk rtk-remote: password login off\n"
               "uuid 123e4567-e89b-12d3-a456-426614174000, disk wwn-0x5000c500a1b2c3d4\n")
    out = mask(journal, [])
    assert password not in out and "Invalid user ******** from 10.0.2.2" in out
    assert "password login off" in out  # ordinary words stay
    assert "123e4567-e89b-12d3-a456-426614174000" in out and "wwn-0x5000c500a1b2c3d4" in out
