"""Bad input never ends in a Python traceback, and ``rtk unattended --dry-run`` changes
nothing (issue 13, items 4 and 5), without devices.

The dry run's steps that change the machine (apply_network, attach, set_initiator, the
restore itself) are replaced by recorders: a dry run must call none of them, and its
report must say what a real run would do. The command line cases run ``rtk`` as a
subprocess and check its exit code, a plain message and no "Traceback" on stderr.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import types
from pathlib import Path

import pytest
from conftest import ROOT, RTK, closed_port_url, disk, rtk

from toolkit import exitcodes
from toolkit.unattended import Console, RunReporter, run
from toolkit.unattended.cmdline import Cmdline
from toolkit.unattended.plan import read_plan

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("rtk_dirs")]

GB100 = 100 * 10**9
IQN = "iqn.2026-11.lab.rtk:san"


class Recorder:
    """A step that changes the machine: records its calls (a dry run makes none)."""

    def __init__(self, result=None):
        self.calls: list = []
        self.result = result

    def __call__(self, *a, **kw):
        self.calls.append((a, kw))
        return self.result


@pytest.fixture
def portal():
    """A TCP port on 127.0.0.1 that accepts connections: an iSCSI portal that answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def steps(monkeypatch):
    """Every step of a run that changes something, as recorders; the restore's check
    (which needs a device) answers with a plan for a raw image that fits."""
    from toolkit import restore
    rec = types.SimpleNamespace(network=Recorder(), attach=Recorder(), initiator=Recorder(),
                                restore=Recorder(), copy=Recorder(), power=Recorder())
    monkeypatch.setattr(restore, "restore", rec.restore)

    def plan_restore(location, target, opts, disks=None):
        img = types.SimpleNamespace(kind="file", format="raw", size=10**9,
                                    expected_sha256=None, sha256_from=None)
        return types.SimpleNamespace(image=img, warnings=[],
                                     target=types.SimpleNamespace(size=GB100))
    monkeypatch.setattr(restore, "plan_restore", plan_restore)
    from toolkit.copy import engine
    monkeypatch.setattr(engine, "copy", rec.copy)
    return rec


def dry_run(text: str, rec, disks, tmp_path: Path):
    medium = tmp_path / "medium"
    medium.mkdir(exist_ok=True)
    (medium / "w.img").write_bytes(b"\0" * 4096)
    plan = read_plan(Cmdline(text), medium=str(medium))
    out = run(plan, console=Console(streams=[io.StringIO()]), reporter=RunReporter(None),
              power=rec.power, list_disks=lambda: disks, attach=rec.attach,
              set_initiator=rec.initiator, apply_network=rec.network,
              known_nics=lambda: ["ens3", "ens4"], dry_run=True, medium=str(medium))
    return out, json.loads(Path(out.reports["json"]).read_text())


def assert_changed_nothing(rec, out):
    assert rec.network.calls == [], "a dry run applied network settings"
    assert rec.initiator.calls == [], "a dry run set the initiator name"
    assert rec.attach.calls == [], "a dry run attached an iSCSI LUN"
    assert rec.restore.calls == [] and rec.copy.calls == [], "a dry run wrote"
    assert rec.power.calls == [] and not out.written and out.action == "stay"


FULL = ("rtk.mode=restore rtk.image=/w.img rtk.disk=serial:A1 rtk.consent=serial:A1 "
        "rtk.initiator=iqn.2026-11.lab.rtk:node7 "
        "ip=10.0.2.15::10.0.2.2:255.255.255.0::ens3:none:9000 nameserver=10.0.2.3 "
        "rtk.target=iscsi:127.0.0.1::{port}:1:" + IQN)


def test_dry_run_changes_nothing_and_reports_what_a_real_run_would_do(steps, portal,
                                                                      tmp_path):
    out, report = dry_run(FULL.format(port=portal), steps,
                          [disk("sda", "A1", size=GB100)], tmp_path)
    assert_changed_nothing(steps, out)
    assert out.status == "dry-run" and out.exit_code == 0, out.message
    would = report["would_do"]
    assert [w["phase"] for w in would] == ["network", "iscsi", "iscsi", "write", "done"]
    net, ini, att, write, done = would
    assert net["settings"]["iface"] == "ens3" and net["settings"]["address"] == "10.0.2.15/24"
    assert net["settings"]["mtu"] == 9000 and net["settings"]["dns"] == ["10.0.2.3"]
    assert ini["initiator"] == "iqn.2026-11.lab.rtk:node7"
    assert att["iqn"] == IQN and att["lun"] == 1 and att["role"] == "TARGET"
    assert att["portal_answers"] is True
    assert write["disk"] == "/dev/sda" and "w.img" in write["action"]
    assert done["action"] == "then reboot"
    text = Path(out.reports["text"]).read_text()
    assert "would apply" in text and f"would attach TARGET {IQN} LUN 1" in text


def test_dry_run_validates_the_network_settings_and_the_nics(steps, portal, tmp_path):
    text = FULL.format(port=portal).replace("ens3:none", "ens9:none")
    out, report = dry_run(text, steps, [disk("sda", "A1", size=GB100)], tmp_path)
    assert_changed_nothing(steps, out)
    assert out.status == "refused" and out.phase == "network" and out.exit_code == 5
    assert "ens9" in out.message and "ens3" in out.message  # the NICs that are here


def test_dry_run_checks_that_the_portal_answers_without_logging_in(steps, tmp_path):
    port = int(closed_port_url().rsplit(":", 1)[1].split("/")[0])
    out, _ = dry_run(FULL.format(port=port), steps, [disk("sda", "A1", size=GB100)], tmp_path)
    assert_changed_nothing(steps, out)
    assert out.status == "refused" and out.phase == "iscsi"
    assert "does not answer" in out.message and "refused" in out.message


def test_dry_run_selects_only_among_the_disks_present(steps, portal, tmp_path):
    """The disk is the LUN the run would attach: not attached, so not checked; the
    report says so, and the run still changes nothing."""
    text = FULL.format(port=portal).replace("rtk.disk=serial:A1", f"rtk.disk=iscsi:{IQN}:1")
    out, report = dry_run(text, steps, [disk("sda", "A1", size=GB100)], tmp_path)
    assert_changed_nothing(steps, out)
    assert out.status == "dry-run" and out.exit_code == 0 and out.phase == "select"
    assert "not attached in a dry run" in out.message
    assert report["not_checked"] and "select" in report["not_checked"][0]
    assert [w["phase"] for w in report["would_do"]] == ["network", "iscsi", "iscsi"]


def test_dry_run_still_refuses_a_disk_that_is_not_there(steps, tmp_path):
    text = "rtk.mode=restore rtk.image=/w.img rtk.disk=serial:NOPE rtk.consent=serial:NOPE"
    out, _ = dry_run(text, steps, [disk("sda", "A1", size=GB100)], tmp_path)
    assert_changed_nothing(steps, out)
    assert out.status == "refused" and out.phase == "select" and "no disk matches" in out.message


# --- the command line: exit code, a plain message, no traceback --------------------------

def no_traceback(r, code: int, *words: str) -> str:
    err = r.stderr + r.stdout
    assert "Traceback" not in err, err
    assert r.returncode == code, (r.returncode, err)
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture
def medium(tmp_path) -> Path:
    m = tmp_path / "medium"
    m.mkdir()
    return m


def unattended(medium: Path, cmdline: str):
    return rtk("unattended", "--dry-run", "--no-power", "--medium", str(medium),
               "--cmdline", cmdline, env_extra={"RTK_LOG_DIR": str(medium.parent / "log"),
                                                "RTK_RUN_DIR": str(medium.parent / "run")})


PLAN = "rtk.mode=restore rtk.plan=/{name}"


def test_a_plan_nested_1000_levels_deep(medium):
    (medium / "deep.json").write_text("[" * 1000 + "]" * 1000)
    (medium / "deep.yaml").write_text("a: " + "[" * 1000 + "]" * 1000)
    for name in ("deep.json", "deep.yaml"):
        no_traceback(unattended(medium, PLAN.format(name=name)), exitcodes.EXIT_USAGE,
                     "the plan file is nested too deeply")


def test_a_plan_that_is_not_utf8(medium):
    (medium / "bad.yaml").write_bytes(b"mode: restore\nimage: \xff\n")
    err = no_traceback(unattended(medium, PLAN.format(name="bad.yaml")), exitcodes.EXIT_USAGE,
                       "the plan file is not UTF-8 text (byte 0xff at position 21)")
    assert "codec" not in err


def test_a_plan_that_is_a_directory_or_a_fifo(medium):
    (medium / "adir").mkdir()
    os.mkfifo(medium / "fifo")
    no_traceback(unattended(medium, PLAN.format(name="adir")), exitcodes.EXIT_USAGE,
                 "is a directory")
    no_traceback(unattended(medium, PLAN.format(name="fifo")), exitcodes.EXIT_USAGE,
                 "not a regular file")


@pytest.mark.parametrize(("url", "why"), [
    (closed_port_url().replace("/report", "/p.yaml"), "connection refused"),
    ("http://bob:s3cret@name.invalid/p.yaml?token=abc", "host name not resolved"),
])
def test_a_plan_that_cannot_be_fetched(medium, url, why):
    err = no_traceback(unattended(medium, f"rtk.mode=restore rtk.plan={url}"),
                       exitcodes.EXIT_USAGE, "cannot fetch the plan", why)
    assert "ConnectionError" not in err and "s3cret" not in err and "token" not in err


@pytest.mark.parametrize("param", [
    "rtk.image=http://h:99999/w.img", "rtk.report=http://h:abc/r", "rtk.plan=http://h:0x1/p",
    "rtk.disk=iscsi:iqn.2026-11.lab.rtk:san:\u00b2", "ip=ens3:dhcp:\u00b2",
    "ip=10.0.0.2::10.0.0.1:\u00b2::ens3:none", "rtk.target=iscsi:10.0.0.1:::\u00b2:" + IQN,
    "rtk.disk=rule:size>=" + "9" * 400, "rtk.disk=rule:lun=\u00b2",
])
def test_garbage_kernel_parameters(medium, param):
    base = "rtk.mode=restore rtk.image=/w.img rtk.disk=serial:A rtk.consent=serial:A"
    err = no_traceback(unattended(medium, f"{base} {param}"), exitcodes.EXIT_USAGE,
                       "INVALID PARAMETERS", param.split("=")[0])
    assert "invalid literal" not in err and "Port" not in err


@pytest.mark.parametrize("args", [["net"], ["iscsi"], []])
def test_a_missing_subcommand_in_plain_words(args):
    err = no_traceback(rtk(*args), exitcodes.EXIT_USAGE, "give a command")
    assert "required:" not in err


def test_ctrl_c_or_end_of_input_at_the_confirmation_prompt(monkeypatch, capsys):
    from toolkit.cli import common
    target = types.SimpleNamespace(identity="S1", node="/dev/sdz", label=lambda: "/dev/sdz",
                                   disk=None)
    args = types.SimpleNamespace(yes=False, target_id=None)
    monkeypatch.setattr(common.sys, "stdin", types.SimpleNamespace(isatty=lambda: True))
    for exc in (KeyboardInterrupt, EOFError):
        def answer(prompt, exc=exc):
            raise exc
        monkeypatch.setattr("builtins.input", answer)
        assert common.confirm_target(args, target) == "cancelled, nothing written"
        assert not common.confirmed(args, target, "copy")
        assert "copy refused: cancelled, nothing written" in capsys.readouterr().err


@pytest.mark.parametrize(("algo", "hexhash", "why"), [
    ("blake3", "abcd", "64 hexadecimal digits"),
    ("sha256", "zz" * 32, "not hexadecimal"),
    ("blake3", "", "64 hexadecimal digits"),
])
def test_verify_refuses_a_malformed_hash_before_reading(algo, hexhash, why, tmp_path):
    # the disk does not exist: a refusal that names the hash came before any look at it
    err = no_traceback(rtk("verify", str(tmp_path / "nodisk"), "--hash", hexhash,
                           "--algo", algo), exitcodes.EXIT_USAGE, "--hash", why)
    assert "nodisk" not in err


def test_a_malformed_mapfile_in_plain_words(tmp_path):
    from toolkit.blockio.mapfile import Mapfile, MapfileError
    cases = {"garbage": b"garbage\n", "binary": b"\xff\xfe\x00\x01",
             "gap": b"0x0 + 1\n0x0 0x200 +\n0x400 0x200 -\n", "empty": b"",
             "badpass": b"0x0 + abc\n0x0 0x200 +\n", "long": b"0x0 + 1\n" + b"9" * 5000 + b"\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MapfileError) as e:
            Mapfile.load(str(tmp_path / name))
        assert str(e.value).startswith(f"the mapfile {tmp_path / name} "), str(e.value)
    (tmp_path / "adir").mkdir()
    with pytest.raises(MapfileError, match="is a directory"):
        Mapfile.load(str(tmp_path / "adir"))
    with pytest.raises(MapfileError, match="not a regular file"):
        Mapfile.load("/dev/null")


# --- found by fuzzing every subcommand ------------------------------------------------------

@pytest.mark.parametrize(("args", "code", "words"), [
    (["net", "ping", "localhost", "--count", "9" * 20], 2, "must be from 1 to 10000"),
    (["copy", "/nodisk", "/nodisk2", "--max-rate", "abc"], 2, "is not a size"),
    (["verify", "/nodisk", "--hash", "0" * 64, "--size", "1e400k"], 2, "is not a size"),
    (["copy", "/nodisk", "/nodisk2", "--mapfile", ""], 5, "--mapfile needs a path"),
    (["copy", "/nodisk", "/nodisk2", "--mapfile", "/etc/hostname/map"], 5,
     "/etc/hostname is not a directory"),
    (["iscsi", "initiator", "--set", ""], 2, "--set needs the initiator name"),
])
def test_fuzzed_command_lines(args, code, words):
    err = no_traceback(rtk(*args), code, words)
    assert "_size" not in err and "invalid" not in err


def test_a_chap_secret_file_that_is_not_utf8(tmp_path):
    (tmp_path / "secret").write_bytes(b"\xffpw\n")
    err = no_traceback(rtk("iscsi", "attach", "192.0.2.1", "iqn.2026-11.lab.rtk:san", "--role",
                           "target", "--chap-user", "u", "--chap-secret-file",
                           str(tmp_path / "secret")), 2, "is not UTF-8 text (byte 0xff")
    assert "codec" not in err


def test_output_on_a_full_disk():
    with open("/dev/full", "w") as full:
        r = subprocess.run([*RTK, "disks", "--json"], cwd=ROOT, stdout=full,
                           stderr=subprocess.PIPE, text=True)
    assert "Traceback" not in r.stderr and r.returncode == 1
    assert "rtk disks: no space left on device" in r.stderr


@pytest.mark.parametrize(("text", "words"), [
    ("targets: [{host: \"a b\", iqn: \"iqn.2026-11.lab.rtk:san\"}]",
     "plan.targets[0].host: 'a b' is not a server name"),
    ("targets: [{host: \"[::1\", iqn: \"iqn.2026-11.lab.rtk:san\"}]",
     "plan.targets[0].host: '[::1' is not a server name"),
])
def test_a_plan_with_a_bad_portal_host(medium, text, words):
    (medium / "p.yaml").write_text(f"mode: restore\n{text}\n")
    no_traceback(unattended(medium, PLAN.format(name="p.yaml")), exitcodes.EXIT_USAGE, words)


def test_an_image_path_with_a_control_character(medium):
    r = unattended(medium, "rtk.mode=restore rtk.image=/a%00b rtk.disk=serial:A "
                           "rtk.consent=serial:A")
    no_traceback(r, exitcodes.EXIT_USAGE, "rtk.image: the path holds a control character")


def test_why_a_plan_cannot_be_fetched_in_plain_words():
    import requests

    from toolkit.net.http import http_failure as _unreachable
    assert _unreachable(requests.ConnectTimeout("x")) == "timed out"
    refused = requests.ConnectionError(OSError("x"))
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert _unreachable(refused) == "connection refused"
    assert _unreachable(requests.ConnectionError("x")) == "cannot connect to the server"
