"""iSCSI parsers, exit codes and secret masking, fed with output captured in the
live system (tests/fixtures/iscsi/, exit codes in exit-codes.tsv)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from toolkit import exitcodes
from toolkit.cli import main as cli
from toolkit.iscsi import adm, errors, parse, sessions
from toolkit.iscsi.errors import error_for
from toolkit.jobs import report

FIX = Path(__file__).parent / "fixtures" / "iscsi"
BDR, SAN = "iqn.2026-11.lab.rtk:bdr", "iqn.2026-11.lab.rtk:san"


def fixture(name: str) -> str:
    return (FIX / f"{name}.txt").read_text()


def exit_code(name: str) -> int:
    for line in (FIX / "exit-codes.tsv").read_text().splitlines():
        fname, rc, _cmd = line.split("\t", 2)
        if fname == name:
            return int(rc)
    raise KeyError(name)


def test_discovery_records():
    recs = parse.parse_portal_records(fixture("discovery-sendtargets"))
    assert [(r.address, r.port, r.tpgt, r.iqn) for r in recs] == [
        ("127.0.0.1", 3262, 1, BDR), ("127.0.0.1", 3262, 1, SAN)]
    assert recs[0].portal == "127.0.0.1:3262"


def test_node_records_and_ipv6():
    recs = parse.parse_portal_records(fixture("node-list-two"))
    assert [(r.address, r.iqn, r.tpgt) for r in recs] == [
        ("10.0.2.2", BDR, 4294967295), ("10.0.2.2", SAN, 4294967295)]
    assert parse.parse_portal_records(fixture("node-list-empty")) == []
    v6 = parse.parse_portal_records("[fd00::5]:3260,1 iqn.2000-01.com.x:t")[0]
    assert (v6.address, v6.portal) == ("fd00::5", "[fd00::5]:3260")


def test_session_list():
    got = parse.parse_session_list(fixture("session-list"))
    assert [(s.sid, s.address, s.port, s.iqn) for s in got] == [
        (4, "10.0.2.2", 3262, SAN), (6, "10.0.2.2", 3262, BDR)]
    assert parse.parse_session_list(fixture("session-list-empty")) == []


def test_session_detail():
    san, bdr = parse.parse_session_detail(fixture("session-P3"))
    assert (san.target, san.portal, san.sid, san.state) == (SAN, "10.0.2.2:3262", 4,
                                                           "LOGGED IN")
    assert san.chap_username == "sanuser" and san.luns == {0: None, 1: "sda"}
    assert bdr.chap_username is None and bdr.luns == {0: None, 1: "sdb", 2: "sdc"}
    assert bdr.initiator_name.startswith("iqn.2005-03.org.open-iscsi:")


def test_initiator_name():
    assert parse.parse_initiator_name("## x\nInitiatorName=iqn.2005-03.org.open-iscsi:6d66\n") \
        == "iqn.2005-03.org.open-iscsi:6d66"
    assert parse.parse_initiator_name("") is None
    assert parse.valid_iscsi_name("iqn.1991-05.com.microsoft:server1")
    assert parse.valid_iscsi_name("eui.02004567A425678D")
    for bad in ("iqn.2026.lab:x", "server1", "iqn.2026-11.lab.rtk:a b"):
        assert not parse.valid_iscsi_name(bad), bad


def test_persistent_reservations():
    assert parse.parse_pr_keys(fixture("pr-keys-none")) == []
    assert parse.parse_pr_keys(fixture("pr-keys")) == ["0x1234abcd"]
    assert parse.parse_pr_reservation(fixture("pr-reservation-none")) == (None, None)
    assert parse.parse_pr_reservation(fixture("pr-reservation")) == (
        "0x1234abcd", "Write Exclusive, registrants only")


def test_reservation_warning():
    from toolkit.iscsi.reservations import reservation_warning

    held = parse.Reservation(["0x1234abcd"], "0x1234abcd", "Write Exclusive")
    w = reservation_warning("/dev/sda", held)
    assert "0x1234abcd" in w and "cluster node" in w
    assert reservation_warning("/dev/sda", parse.Reservation()) is None


@pytest.mark.parametrize("name, cls", [
    ("login-wrong-chap", errors.IscsiAuthError),
    ("login-unreachable", errors.IscsiPortalUnreachable),
    ("discovery-unreachable", errors.IscsiPortalUnreachable),
    ("login-unknown-target", errors.IscsiTargetNotFound),
    ("login-session-exists", errors.IscsiSessionExists),
    ("iscsid-masked-login", errors.IscsidNotRunning),
    ("node-delete-again", errors.IscsiTargetNotFound),
])
def test_real_exit_codes_map_to_errors(name, cls):
    e = error_for(exit_code(name), "doing it", output=fixture(name))
    assert type(e) is cls and isinstance(e, errors.IscsiError)
    assert e.code == exit_code(name) and str(e).startswith("doing it failed")
    assert e.hint in str(e)


def test_error_message_names_the_reason():
    e = error_for(24, "login", output=fixture("login-wrong-chap"))
    assert "authorization failure" in e.message and e.exit_code == errors.EXIT_AUTH


def test_mask_args():
    cmd = ["iscsiadm", "-m", "node", "-T", SAN, "-o", "update",
           "-n", "node.session.auth.password_in", "-v", "S3cret!"]
    assert adm.mask_args(cmd)[-1] == "********"
    cmd = ["iscsiadm", "-m", "node", "-o", "update", "-n", "node.session.auth.username",
           "-v", "sanuser"]
    assert adm.mask_args(cmd)[-1] == "sanuser"
    assert adm.mask_args(["x", "--foo=S3cret!"], ["S3cret!"]) == ["x", "--foo=********"]
    assert "S3cret" not in repr(adm.Chap("u", "S3cret"))


def test_secrets_never_logged_nor_raised(log_dir, monkeypatch):
    """Every command line in iscsi.log and in exceptions has the secret masked."""
    secret = "Very-Secret-42"
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        rc = 24 if "--login" in cmd else 0
        return subprocess.CompletedProcess(cmd, rc, f"echo {secret}\n", fixture("login-wrong-chap"))

    monkeypatch.setattr(adm.subprocess, "run", fake_run)
    adm.node_update(SAN, "10.0.2.2", 3262, "node.session.auth.password", secret, secret=True)
    adm.discoverydb_update("10.0.2.2", 3262, "discovery.sendtargets.auth.password", secret,
                           secret=True)
    with pytest.raises(errors.IscsiAuthError) as ei:
        adm.node_login(SAN, "10.0.2.2", 3262, secrets=[secret])
    assert secret in calls[0]  # iscsiadm itself gets it
    log = (log_dir / "iscsi.log").read_text()
    assert secret not in log and log.count("********") >= 3
    assert secret not in str(ei.value) and secret not in json.dumps(ei.value.to_dict())
    assert report.log_dir() == str(log_dir)


def test_sessions_from_sysfs(tmp_path):
    """A sysfs tree laid out as in the guest (fixture sysfs-tree.txt)."""
    sys_root, dev = tmp_path / "sys", tmp_path / "dev"
    lines = fixture("sysfs-tree").splitlines()
    assert "/sys/devices/platform/host3/session6/target3:0:0/3:0:0:2/block/sdc" in lines
    for sid, host, target, luns in ((4, 2, SAN, ["sda"]), (6, 3, BDR, ["sdb", "sdc"])):
        sdev = sys_root / f"devices/platform/host{host}/session{sid}"
        (sdev / f"iscsi_session/session{sid}").mkdir(parents=True)
        (sdev / f"iscsi_session/session{sid}/targetname").write_text(target + "\n")
        (sdev / f"iscsi_session/session{sid}/state").write_text("LOGGED_IN\n")
        (sdev / f"iscsi_session/session{sid}/device").symlink_to(sdev)
        cls = sys_root / "class/iscsi_session"
        cls.mkdir(parents=True, exist_ok=True)
        (cls / f"session{sid}").symlink_to(sdev / f"iscsi_session/session{sid}")
        conn = sys_root / f"class/iscsi_connection/connection{sid}:0"
        conn.mkdir(parents=True)
        (conn / "persistent_address").write_text("10.0.2.2\n")
        (conn / "persistent_port").write_text("3262\n")
        (sdev / f"target{host}:0:0/{host}:0:0:0").mkdir(parents=True)  # controller LUN
        for lun, name in enumerate(luns, start=1):
            (sdev / f"target{host}:0:0/{host}:0:0:{lun}/block/{name}").mkdir(parents=True)
    (dev / "disk/by-path").mkdir(parents=True)
    for line in lines:
        if " -> " in line:
            link, target = line.split()[-3], line.split()[-1]
            (dev / "disk/by-path" / link).symlink_to(target)
    got = sessions.list_sessions(str(sys_root), str(dev))
    assert [(s.sid, s.target, s.portal, s.host) for s in got] == [
        (4, SAN, "10.0.2.2:3262", 2), (6, BDR, "10.0.2.2:3262", 3)]
    bdr = got[1]
    assert [(x.lun, x.hctl, x.device) for x in bdr.luns] == [
        (0, "3:0:0:0", None), (1, "3:0:0:1", "/dev/sdb"), (2, "3:0:0:2", "/dev/sdc")]
    assert bdr.luns[2].by_path == [f"/dev/disk/by-path/ip-10.0.2.2:3262-iscsi-{BDR}-lun-2"]
    assert bdr.luns[1].key(BDR) == f"{BDR}:1"


def test_split_portal():
    from toolkit.iscsi import split_portal

    assert split_portal("10.0.2.2") == ("10.0.2.2", 3260)
    assert split_portal("10.0.2.2", 3262) == ("10.0.2.2", 3262)
    assert split_portal("10.0.2.2:3299", 3262) == ("10.0.2.2", 3299)
    assert split_portal("[fd00::5]:3261") == ("fd00::5", 3261)
    assert split_portal("fd00::5") == ("fd00::5", 3260)


@pytest.mark.parametrize("text, message", [
    ("[fd00::1", "portal '[fd00::1' is missing its closing ']'"),
    ("[fd00::1]3260", "portal '[fd00::1]3260': after ']' a portal takes ':PORT'"),
    ("[fd00::1]:", "portal '[fd00::1]:' has no port after ':'"),
    ("[fd00::1]::3260", "portal '[fd00::1]::3260': the port ':3260' is not a number"),
    ("10.0.2.2:", "portal '10.0.2.2:' has no port after ':'"),
    ("10.0.2.2:+3260", "the port '+3260' is not a number"),
    ("fd00::1]:3260", "portal 'fd00::1]:3260' has a ']' without its opening '['"),
    ("[]:3260", "portal '[]:3260' has no address"),
    (":3260", "portal ':3260' has no address"),
    ("", "no address"),
    ("   ", "no address"),
    ("10.0.2.2:0", "port 0 is outside 1-65535"),
    ("10.0.2.2:65536", "port 65536 is outside 1-65535"),
    ("[fd00::1]:99999", "port 99999 is outside 1-65535"),
    ("10.0.2.2 3260", "portal '10.0.2.2 3260' has a space in it"),
    ("10.0.2.2[1]", "portal '10.0.2.2[1]' has a '[' that does not start it"),
    ("[fd00::[1]:3260", "portal '[fd00::[1]:3260' has a '[' or ']' inside the address"),
])
def test_split_portal_refuses_malformed_portals(text, message):
    from toolkit.iscsi import split_portal

    with pytest.raises(ValueError) as e:
        split_portal(text)
    assert message in str(e.value)


def test_split_portal_refuses_an_explicit_port_out_of_range():
    from toolkit.iscsi import split_portal

    for port in (0, 65536, -1):
        with pytest.raises(ValueError, match=f"port {port} is outside 1-65535"):
            split_portal("10.0.2.2", port)
    assert split_portal(" [fd00::1]:3261 ") == ("fd00::1", 3261)
    assert split_portal("[10.0.2.2]:3261") == ("10.0.2.2", 3261)


def test_cli_discover_of_a_malformed_portal_is_a_usage_error(tmp_path):
    from conftest import rtk

    for portal, message in (("[fd00::1", "is missing its closing ']'"),
                            ("[fd00::1]3260", "after ']' a portal takes ':PORT'"),
                            ("10.0.2.2:70000", "port 70000 is outside 1-65535")):
        p = rtk("iscsi", "discover", portal, env_extra={"RTK_LOG_DIR": str(tmp_path)})
        assert p.returncode == exitcodes.EXIT_USAGE, p.stderr
        assert p.stderr.startswith("rtk iscsi: ") and message in p.stderr
        assert "Traceback" not in p.stderr and p.stdout == ""
    p = rtk("iscsi", "discover", "10.0.2.2", "--port", "0",
            env_extra={"RTK_LOG_DIR": str(tmp_path)})
    assert p.returncode == exitcodes.EXIT_USAGE and "port 0 is outside 1-65535" in p.stderr


def test_discover_replaces_unreachable_portal(monkeypatch):
    from toolkit.iscsi import manager

    monkeypatch.setattr(manager, "ensure_iscsid", lambda: "iqn.x")
    monkeypatch.setattr(adm, "discovery_sendtargets",
                        lambda h, p: fixture("discovery-sendtargets"))
    res = manager.discover("10.0.2.2", 3262)
    assert [(t.iqn, t.host, t.port) for t in res.targets] == [
        (BDR, "10.0.2.2", 3262), (SAN, "10.0.2.2", 3262)]
    assert len(res.notes) == 2 and "127.0.0.1:3262" in res.notes[0]
    assert "using 10.0.2.2:3262" in res.notes[0]
    assert "loopback or NAT" in res.notes[0]


def test_discovery_note_blames_the_port_when_only_the_port_differs(monkeypatch):
    """The target advertises the very address typed, on a port closed from here: the
    note says so, instead of blaming a loopback or NAT address."""
    from toolkit.iscsi import manager

    monkeypatch.setattr(manager, "ensure_iscsid", lambda: "iqn.x")
    monkeypatch.setattr(adm, "discovery_sendtargets",
                        lambda h, p: fixture("discovery-sendtargets"))
    monkeypatch.setattr(manager, "_unreachable", lambda host, port: True)
    res = manager.discover("127.0.0.1", 3263)  # advertised: 127.0.0.1:3262
    assert "its port is closed here" in res.notes[0], res.notes[0]
    assert "NAT" not in res.notes[0]


def test_cli_secret_options(tmp_path, monkeypatch, capsys):
    """Secrets come from a file or the environment; they never reach the output."""
    from toolkit import iscsi

    seen = {}

    def fake_attach(host, iqn, role, **kw):
        seen.update(kw, host=host, iqn=iqn, role=role)
        return iscsi.AttachResult(iqn, f"{host}:3262", role, None, [], [], [])

    monkeypatch.setattr(iscsi, "attach", fake_attach)
    (tmp_path / "s").write_text("FileSecret-1\n")
    monkeypatch.setenv("MUTUAL", "EnvSecret-2")
    rc = cli.main(["iscsi", "attach", "10.0.2.2:3262", SAN, "--role", "target", "--json",
                   "--chap-user", "u", "--chap-secret-file", str(tmp_path / "s"),
                   "--mutual-user", "m", "--mutual-secret-env", "MUTUAL"])
    out = capsys.readouterr()
    assert rc == 0 and seen["chap"].password == "FileSecret-1"
    assert seen["mutual"].password == "EnvSecret-2" and seen["role"] == "TARGET"
    assert "Secret" not in out.out + out.err
    assert json.loads(out.out)["role"] == "TARGET"
    rc = cli.main(["iscsi", "attach", "h", SAN, "--role", "source", "--chap-user", "u"])
    assert rc == exitcodes.EXIT_USAGE and "secret" in capsys.readouterr().err


def test_cli_error_exit_code(monkeypatch, capsys):
    from toolkit import iscsi

    def fail(*a, **kw):
        raise error_for(24, "login", command="iscsiadm ...", output=fixture("login-wrong-chap"))

    monkeypatch.setattr(iscsi, "attach", fail)
    rc = cli.main(["iscsi", "attach", "h", SAN, "--role", "target", "--json"])
    out = capsys.readouterr()
    assert rc == errors.EXIT_AUTH == 10
    assert json.loads(out.out)["error"] == "IscsiAuthError" and "CHAP" in out.err
