"""The unattended plan: rtk.* parameters, the plan file's schema, loading (path,
URL), the command line over the file, completeness per mode, no secret shown."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import requests
from restore_images import RangeServer, self_signed

from toolkit.iscsi.adm import Chap
from toolkit.net.errors import NetRefused
from toolkit.unattended import plan as planmod
from toolkit.unattended.cmdline import Cmdline, CmdlineError
from toolkit.unattended.plan import (
    SCHEMA,
    Plan,
    PlanError,
    check,
    from_cmdline,
    from_file,
    load_plan,
    read_plan,
    schema_errors,
)

IQN = "iqn.2026-11.lab.rtk:san"
SHA = "ab" * 32
RESTORE = ("BOOT_IMAGE=/live/vmlinuz boot=live rtk.mode=restore rtk.image=/images/w.img "
           "rtk.disk=serial:beaf11 rtk.consent=serial:beaf11")


def plan_of(line: str, medium: str = "/nonexistent") -> Plan:
    return read_plan(Cmdline(line), medium=medium)


def test_no_mode_is_the_menu():
    p = plan_of("BOOT_IMAGE=/live/vmlinuz boot=live quiet")
    assert p == Plan() and p.mode is None and p.verify and p.done == "reboot"


def test_every_parameter():
    p = plan_of(f"rtk.mode=restore rtk.image=https://img.example/w%20s.img rtk.sha256={SHA} "
                "rtk.disk=rule:transport=nvme,size>=100G,model~Samsung "
                "rtk.consent=wwn:0x5002538e40a1b2c3 rtk.verify=no rtk.grow=yes "
                "rtk.report=https://rep.example/r rtk.done=poweroff "
                "rtk.initiator=iqn.2026-11.lab.rtk:host1 ip=ens3:dhcp nameserver=10.0.0.53 "
                f"rtk.source=iscsi:10.0.2.2::3262:1:{IQN}:bdr rtk.target=iscsi:10.0.2.2::::{IQN} "
                f"rtk.target=iscsi:[fd00::2]::::{IQN}:two")
    assert (p.mode, p.sha256, p.verify, p.grow, p.done) == ("restore", SHA, False, True,
                                                             "poweroff")
    assert p.image.kind == "url" and p.image.location == "https://img.example/w%20s.img"
    assert str(p.disk) == "rule:transport=nvme,size>=100G,model~Samsung"
    assert str(p.consent) == "wwn:0x5002538e40a1b2c3"
    assert p.report == "https://rep.example/r" and p.initiator == "iqn.2026-11.lab.rtk:host1"
    assert [(x.role, x.port, x.lun, x.iqn) for x in p.sources] == \
        [("SOURCE", 3262, 1, f"{IQN}:bdr")]
    assert [(x.role, x.host) for x in p.targets] == [("TARGET", "10.0.2.2"), ("TARGET", "fd00::2")]
    assert [s.to_dict()["dns"] for s in p.network_settings(["ens3"])] == [["10.0.0.53"]]
    with pytest.raises(NetRefused, match="unknown NIC 'ens3'"):
        p.network_settings(["eth0"])


@pytest.mark.parametrize("image, kind, location", [
    ("/images/w.img", "path", "/images/w.img"),
    ("images/a%20b.img", "path", "/images/a b.img"),
    ("http://10.0.2.2:8080/w.img", "url", "http://10.0.2.2:8080/w.img"),
    (f"iscsi:{IQN}:3", "iscsi", f"iscsi:{IQN}:3"),
    (f"iscsi:u:pw@10.0.2.2::::{IQN}", "iscsi", f"iscsi:{IQN}:0"),
])
def test_image_forms(image, kind, location):
    img = plan_of(f"rtk.image={image}").image
    assert (img.kind, img.location) == (kind, location)
    if kind == "iscsi":
        assert (img.selector.iqn, img.selector.kind) == (IQN, "iscsi")
        assert img.lun is None if image.startswith("iscsi:iqn") else img.lun.chap.username == "u"


@pytest.mark.parametrize("line, message", [
    ("rtk.mode=auto", "rtk.mode=auto: expected restore or copy"),
    ("rtk.mode=", "rtk.mode=: expected restore or copy"),
    ("rtk.mode", "rtk.mode needs a value"),
    ("rtk.verify=maybe", "rtk.verify=maybe: expected yes or no"),
    ("rtk.grow=1", "rtk.grow=1: expected yes or no"),
    ("rtk.done=halt", "rtk.done=halt: expected reboot or poweroff or menu or shell"),
    ("rtk.consnet=serial:x", "unknown parameter rtk.consnet: the rtk. parameters are"),
    ("rtk.sha256=abc", "rtk.sha256: expected 64 hexadecimal digits"),
    ("rtk.initiator=host1", "rtk.initiator=host1: not an iSCSI name"),
    ("rtk.report=ftp://h/r", "rtk.report: expected an http:// or https:// URL"),
    ("rtk.image=/a/../etc/shadow", "expected a path on the boot medium"),
    ("rtk.image=", "expected a path on the boot medium"),
    ("rtk.disk=/dev/sdb", "kernel names such as /dev/sdb change between boots"),
    ("rtk.consent=rule:size>1G", "consent is serial:<serial> or wwn:<wwn>"),
    ("rtk.target=10.0.0.1::::iqn.2001-05.a:b", "rtk.target=10.0.0.1::::iqn.2001-05.a:b: "
     "expected iscsi:"),
    ("ip=10.0.0.5::10.0.0.1:24::eth0", "ip=10.0.0.5::10.0.0.1:24::eth0: expected"),
    ("rtk.plan=/x/../y", "rtk.plan: expected a path"),
])
def test_bad_parameters(line, message):
    with pytest.raises(CmdlineError, match=message.replace(".", r"\.").replace("?", r"\?")):
        plan_of(line)


@pytest.mark.parametrize("line, message", [
    ("rtk.mode=restore", "rtk.mode=restore needs rtk.image= (or image: in the plan file), "
     "rtk.disk= (or disk: in the plan file), rtk.consent= (or consent: in the plan file)"),
    ("rtk.mode=restore rtk.image=/w.img rtk.disk=serial:a", "needs rtk.consent="),
    ("rtk.mode=copy rtk.disk=serial:a rtk.consent=serial:a", "needs the source"),
    (f"rtk.mode=copy rtk.disk=serial:a rtk.consent=serial:a rtk.source=iscsi:h::::{IQN} "
     f"rtk.source=iscsi:h::::{IQN}:2", "exactly one rtk.source="),
    ("rtk.mode=copy rtk.disk=serial:a rtk.consent=serial:a rtk.image=/w.img",
     "must be an iscsi: LUN, not a path"),
])
def test_incomplete_plans(line, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_of(line)


def test_complete_plans():
    assert plan_of(RESTORE).mode == "restore"
    p = plan_of(f"rtk.mode=copy rtk.disk=serial:a rtk.consent=serial:a "
                f"rtk.source=iscsi:h::::{IQN}")
    assert p.image is None and len(p.sources) == 1


# --- plan file -----------------------------------------------------------------------------

GOOD = {"version": 1, "mode": "restore", "image": "/images/w.img", "sha256": SHA.upper(),
        "disk": "serial:beaf11", "consent": "serial:beaf11", "verify": True, "grow": False,
        "done": "menu", "report": "https://rep.example/r", "initiator": "iqn.2026-11.lab.rtk:h",
        "nameservers": ["10.0.0.53"],
        "network": [{"nic": "ens3", "mode": "static", "address": "10.0.0.5/24",
                     "gateway": "10.0.0.1", "mtu": 9000, "vlan": 42, "dns": ["10.0.0.54"]}],
        "sources": [{"host": "10.0.2.2", "port": 3262, "iqn": f"{IQN}:bdr", "lun": 1}],
        "targets": [{"host": "[fd00::2]", "iqn": IQN,
                     "chap": {"username": "bob", "password": "hunter22"},
                     "mutual": {"username": "san", "password": "hunter33"}}]}


def test_file_values():
    v = from_file(GOOD)
    assert v["sha256"] == SHA and v["done"] == "menu" and str(v["disk"]) == "serial:beaf11"
    assert v["network"][0].iface == "ens3.42" and v["network"][0].dns == ("10.0.0.54",)
    nets = Plan(network=(v["network"][0], replace(v["network"][0], nic="ens4", dns=())),
                nameservers=("10.0.0.53",)).network_settings(["ens3", "ens4"])
    assert [s.dns for s in nets] == [("10.0.0.54",), ("10.0.0.53",)]
    assert v["targets"][0].host == "fd00::2" and v["targets"][0].chap == Chap("bob", "hunter22")
    assert v["targets"][0].mutual == Chap("san", "hunter33") and v["sources"][0].lun == 1
    p = check(Plan(**v))
    for text in (repr(p), str(p), json.dumps(p.to_dict())):
        assert "hunter" not in text


def test_schema_errors_are_path_qualified_all_at_once_and_show_no_value():
    bad = {"mode": "restore", "verify": "yes", "colour": "red", "sha256": "xyz",
           "targets": [{"host": "h", "iqn": IQN, "chap": {"username": "u", "password": "p"}},
                       {"host": "h", "iqn": IQN, "port": 0, "chap": {"username": "u"}}],
           "network": [{"mode": "dhcp"}], "nameservers": "10.0.0.1",
           "sources": [{"host": "", "iqn": IQN, "lun": True, "chap": {"username": "u",
                                                                      "password": 12345}}]}
    errors = schema_errors(bad, SCHEMA)
    assert errors == [
        "plan.verify: expected true or false",
        "plan.colour: unknown key (known: " + ", ".join(SCHEMA["properties"]) + ")",
        "plan.sha256: does not match ^[0-9a-fA-F]{64}$",
        "plan.targets[1].port: must be from 1 to 65535",
        "plan.targets[1].chap.password: required",
        "plan.network[0].nic: required",
        "plan.nameservers: expected a list",
        "plan.sources[0].host: must not be empty",
        "plan.sources[0].lun: expected an integer",
        "plan.sources[0].chap.password: expected a string",
    ]
    with pytest.raises(PlanError, match=r"(?s)does not fit the schema:\n  plan.verify.*"
                       r"plan.targets\[1\].chap.password: required"):
        from_file(bad)
    assert schema_errors([], SCHEMA) == ["plan: expected a mapping"]
    assert schema_errors({"done": "halt"}, SCHEMA) == \
        ["plan.done: expected one of reboot, poweroff, menu, shell"]


@pytest.mark.parametrize("data, message", [
    ({"disk": "/dev/sda"}, "plan.disk=/dev/sda: kernel names"),
    ({"targets": [{"host": "h", "iqn": "iqn.x"}]}, r"plan.targets\[0\].iqn=iqn.x: not an iSCSI"),
    ({"nameservers": ["ns1"]}, "plan.nameservers=ns1: not an IPv4 or IPv6 address"),
    ({"image": "ftp://h/w.img"}, "plan.image: expected a path"),
])
def test_file_value_errors(data, message):
    with pytest.raises(PlanError, match=message):
        from_file(data)


YAML = f"""\
# the recommended place for CHAP secrets
mode: restore
image: http://10.0.2.2/w.img
targets:
  - host: 10.0.2.2
    iqn: {IQN}
    lun: 1
    chap: {{username: bob, password: "hunter22"}}
verify: no
"""


def test_load_yaml_and_json_from_the_boot_medium(tmp_path):
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "p.yaml").write_text(YAML)
    (tmp_path / "plans" / "p.json").write_text(json.dumps(GOOD))
    assert load_plan("/plans/p.yaml", str(tmp_path))["verify"] is False
    assert load_plan("plans/p.json", str(tmp_path)) == GOOD
    with pytest.raises(PlanError, match="rtk.plan=/plans/none.yaml: cannot read .*none.yaml: "
                       "No such file"):
        load_plan("/plans/none.yaml", str(tmp_path))


@pytest.mark.parametrize("name, text, message", [
    ("p.json", '{"mode": "restore",}', "plan p.json: not valid JSON: line 1 column 20"),
    ("p.yaml", "mode: [restore\npassword: hunter22\n", "plan p.yaml: not valid YAML: line"),
    ("p.yaml", "- a\n- b\n", "expected a mapping"),
    ("p.yaml", "", "expected a mapping"),
])
def test_unreadable_plan_files(name, text, message):
    with pytest.raises(PlanError, match=message) as e:
        planmod.parse_plan_text(text, name)
    assert "hunter" not in str(e.value)


def test_load_from_url_verifies_tls_and_hides_credentials(tmp_path, monkeypatch):
    """A real HTTPS server on 127.0.0.1 with a self-signed certificate."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "p.yaml").write_text(YAML)
    cert, _key = tls = self_signed(tmp_path)
    srv = RangeServer(tmp_path / "www", tls=tls)
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # this machine trusts it
        assert load_plan(srv.url("p.yaml"))["mode"] == "restore"
        secret_url = srv.url("p.json?token=hunter33").replace("https://", "https://u:hunter22@")
        with pytest.raises(PlanError, match=r"rtk.plan=https://127.0.0.1:\d+/p.json: cannot "
                           "fetch the plan: HTTP 404") as e:
            load_plan(secret_url)
        assert "hunter" not in str(e.value)
        # the system's CAs do not know the certificate: refused, TLS is verified
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
        with pytest.raises(PlanError, match="cannot fetch the plan: SSLError"):
            load_plan(srv.url("p.yaml"))
    finally:
        srv.stop()


def test_command_line_overrides_the_file_and_keeps_its_chap(tmp_path):
    (tmp_path / "p.yaml").write_text(YAML)
    p = plan_of(f"rtk.plan=/p.yaml rtk.verify=yes rtk.disk=serial:beaf11 "
                f"rtk.consent=serial:beaf11 rtk.target=iscsi:10.0.2.9::::{IQN} "
                f"rtk.target=iscsi:a:b@10.0.2.9::::{IQN}:other", str(tmp_path))
    assert p.verify is True and p.image.location == "http://10.0.2.2/w.img"
    assert p.plan == "/p.yaml"
    assert [(t.host, t.lun, t.chap) for t in p.targets] == [
        ("10.0.2.9", 0, Chap("bob", "hunter22")), ("10.0.2.9", 0, Chap("a", "b"))]
    q = plan_of("rtk.plan=/p.yaml rtk.disk=serial:x rtk.consent=serial:x", str(tmp_path))
    assert q.verify is False and q.targets[0].lun == 1 and q.targets[0].chap.username == "bob"


def test_cmdline_values_are_only_those_given():
    assert from_cmdline(Cmdline("quiet ip=dhcp rtk.grow=no")) == {"grow": False}


# --- property-based: the schema ------------------------------------------------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SECRET_MARK = "Zq-SECRET-7"  # every CHAP password below carries it: errors must never show it
_text = st.text(min_size=0, max_size=12)
_secret = _text.map(lambda s: SECRET_MARK + s)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000),
                     st.floats(allow_nan=False), _text)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
_keys = st.sampled_from([*SCHEMA["properties"], "consnet", "Mode", ""])
_chap = st.fixed_dictionaries({"username": _text, "password": st.one_of(_secret, _json)})
_luns = st.fixed_dictionaries({"host": st.one_of(_text, st.just("10.0.2.2")), "iqn": st.one_of(
    _text, st.just("iqn.2026-11.lab.rtk:san"))}, optional={
    "lun": st.integers(-2, 5), "port": st.integers(0, 70000), "chap": _chap,
    "mutual": st.one_of(_chap, st.dictionaries(st.sampled_from(["username", "password", "x"]),
                                               _secret))})


@settings(max_examples=300, deadline=None)
@example({"version": None, "mode": [], "network": [{"\r": None}]})  # found by hypothesis
@given(st.dictionaries(_keys, st.one_of(_json, st.lists(_luns, max_size=2)), max_size=6))
def test_any_plan_file_is_accepted_or_refused_with_paths_and_no_values(data):
    """Whatever a plan file holds: from_file() returns, or raises PlanError naming each
    problem by its path; no other exception, and never a CHAP password in the message."""
    try:
        from_file(data)
    except PlanError as e:
        text = str(e)
        assert SECRET_MARK not in text
        if text.startswith("the plan file does not fit the schema:"):
            lines = text.splitlines()[1:]
            assert lines and all(re.match(r"  plan(\.|\[|:)", line) for line in lines), text
    errors = schema_errors(data, SCHEMA)
    assert all(SECRET_MARK not in e for e in errors)
    # every unknown top-level key is named
    for k in data:
        if k not in SCHEMA["properties"]:
            assert f"plan.{planmod._key(k)}: unknown key" in "\n".join(errors)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_plan_text_is_a_mapping_or_a_clear_error(text):
    for name in ("p.yaml", "p.json"):
        try:
            data = planmod.parse_plan_text(text, name)
        except PlanError as e:
            assert str(e).startswith(f"plan {name}: ")
        else:
            assert isinstance(data, dict)


def test_rtk_data_is_a_known_parameter_of_an_unattended_boot():
    """rtk.data=UUID=... names the RTK-DATA partition (read at boot by the state
    service); an unattended plan on the same command line must not call it unknown."""
    plan = plan_of("rtk.mode=restore rtk.image=/w.img rtk.disk=serial:A rtk.consent=serial:A "
                   "rtk.data=UUID=1234-ABCD")
    assert plan.mode == "restore"


# --- a copy job of several pairs (plan file pairs:) -------------------------------------------

PAIRS = {"version": 1, "mode": "copy", "used_blocks": True, "pairs": [
    {"source": "iscsi:iqn.2026-11.lab.rtk:bdr1:1", "disk": "iscsi:iqn.2026-11.lab.rtk:san:1",
     "consent": "wwn:0x60000000000000000e00000000010001"},
    {"source": "iscsi:iqn.2026-11.lab.rtk:bdr1:2", "disk": "serial:SAN-LUN-2",
     "consent": "serial:SAN-LUN-2"}]}


def test_a_plan_with_two_pairs():
    p = check(Plan(**from_file(PAIRS)))
    assert [(str(x.source), str(x.disk), str(x.consent)) for x in p.pairs] == [
        ("iscsi:iqn.2026-11.lab.rtk:bdr1:1", "iscsi:iqn.2026-11.lab.rtk:san:1",
         "wwn:0x60000000000000000e00000000010001"),
        ("iscsi:iqn.2026-11.lab.rtk:bdr1:2", "serial:SAN-LUN-2", "serial:SAN-LUN-2")]
    assert p.used_blocks and p.concurrent is None and p.disk is None
    assert p.to_dict()["pairs"][1] == PAIRS["pairs"][1]
    # the single pair's keys stay as they were
    single = check(Plan(**from_file({"mode": "copy", "disk": "serial:A", "consent": "serial:A",
                                     "image": "iscsi:iqn.2026-11.lab.rtk:bdr1:1"})))
    assert single.pairs == () and str(single.disk) == "serial:A"


@pytest.mark.parametrize(("change", "error"), [
    ({"pairs": []}, "plan.pairs: must not be empty"),
    ({"pairs": [{"source": "serial:B", "disk": "serial:A"}]}, "plan.pairs[0].consent: required"),
    ({"pairs": [{"source": "/dev/sdb", "disk": "serial:A", "consent": "serial:A"}]},
     "plan.pairs[0].source=/dev/sdb: kernel names such as /dev/sdb change between boots"),
    ({"pairs": [{"source": "serial:B", "disk": "serial:A", "consent": "rule:size=1G"}]},
     "plan.pairs[0].consent"),
    ({"pairs": [{"source": "serial:B", "disk": "serial:A", "consent": "serial:A", "x": 1}]},
     "plan.pairs[0].x: unknown key (known: source, disk, consent)"),
    ({"concurrent": "yes"}, "plan.concurrent: expected true or false"),
    ({"pairs": [{"source": "serial:B", "disk": "serial:A", "consent": "serial:A"},
                {"source": "serial:C", "disk": "serial:A", "consent": "serial:A"}]},
     "plan.pairs[1].disk: serial:A is plan.pairs[0].disk too: a disk can be the target of "
     "one pair only"),
    ({"disk": "serial:Z"}, "pairs: (plan file) gives each pair's source, disk and consent: "
                           "drop rtk.disk= (disk:)"),
    ({"mode": "restore"}, "pairs: (plan file) is a copy job: rtk.mode=restore does not copy"),
])
def test_a_wrong_pairs_plan_says_what_is_wrong(change, error):
    with pytest.raises(PlanError) as e:
        check(Plan(**from_file({**PAIRS, **change})))
    assert error in str(e.value), str(e.value)


def test_used_blocks_and_concurrent_are_for_copy():
    with pytest.raises(PlanError, match="used_blocks: and concurrent: .* are for mode copy"):
        check(Plan(**from_file({"mode": "restore", "image": "/w.img", "disk": "serial:A",
                                "consent": "serial:A", "used_blocks": True})))


def test_rtk_plan_check_says_the_pairs(tmp_path, capsys):
    from toolkit.cli.main import main
    path = tmp_path / "job.json"
    path.write_text(json.dumps(PAIRS))
    assert main(["plan", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == (f"{path}: ok (mode copy, 2 pairs: iscsi:iqn.2026-11.lab.rtk:bdr1:1 -> "
                   "iscsi:iqn.2026-11.lab.rtk:san:1; iscsi:iqn.2026-11.lab.rtk:bdr1:2 -> "
                   "serial:SAN-LUN-2, then reboot)\n")
    path.write_text(json.dumps({**PAIRS, "pairs": []}))
    assert main(["plan", "check", str(path)]) == 5
    assert "plan.pairs: must not be empty" in capsys.readouterr().out
