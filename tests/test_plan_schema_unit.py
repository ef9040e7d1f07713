"""The plan file's JSON Schema (toolkit/unattended/plan.schema.json, issue 15 item 5):
a valid draft 2020-12 schema, shipped in the package, that every documented and tested
plan fits; validation by the jsonschema library with errors that name their path in plain
words and never show a CHAP secret; ``rtk plan check FILE...`` offline, ``rtk plan
schema``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import tomllib
from importlib import resources

import jsonschema
import pytest
import yaml
from conftest import ROOT, RTK, closed_port_url

from toolkit import exitcodes
from toolkit.unattended.plan import (
    DONE,
    MODES,
    SCHEMA,
    Plan,
    PlanError,
    from_file,
    schema_errors,
)

pytestmark = pytest.mark.unit

IQN = "iqn.2026-11.lab.rtk:san"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
SECRET = "Zq-SECRET-7x"  # in every CHAP password below: never in a message


def rtk(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    """``rtk ARGS...`` from this tree, run in ``cwd`` (where the plan files are)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*RTK, *args], cwd=cwd, env=env, capture_output=True, text=True)


def lun(**kw) -> dict:
    return {"host": "10.0.2.2", "iqn": IQN, **kw}


# --- the schema itself ----------------------------------------------------------------------

def test_the_schema_is_a_valid_draft_2020_12_schema():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["mode"]["enum"] == list(MODES)
    assert SCHEMA["properties"]["done"]["enum"] == list(DONE)
    assert SCHEMA["additionalProperties"] is False


def _properties(schema: dict, where: str = ""):
    for name, sub in schema.get("properties", {}).items():
        yield f"{where}.{name}", sub
    for name, sub in schema.get("$defs", {}).items():
        yield from _properties(sub, f"$defs.{name}")


def test_every_field_is_described_in_plain_words():
    fields = dict(_properties(SCHEMA))
    assert len(fields) > 30  # the top level, LUNs, CHAP, NICs
    for name, sub in fields.items():
        if "not" in sub:  # the else branch of a NIC in DHCP mode
            continue
        assert len(sub.get("description", "")) > 10, name
    # every field of a Plan but where it came from, and the format's version
    every_key = {f.name for f in dataclasses.fields(Plan)} - {"plan"} | {"version"}
    assert set(SCHEMA["properties"]) - {"$schema"} == every_key


def test_the_schema_ships_in_the_package():
    text = resources.files("toolkit.unattended").joinpath("plan.schema.json").read_text()
    assert json.loads(text) == SCHEMA
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert "plan.schema.json" in data["toolkit.unattended"]


def test_the_docs_publish_the_schema_and_the_check():
    docs = (ROOT / "docs" / "unattended.md").read_text()
    assert "../toolkit/unattended/plan.schema.json" in docs
    assert "rtk plan check" in docs and "rtk plan schema" in docs


# --- plans that fit ------------------------------------------------------------------------

def _doc_plans() -> list[tuple[str, dict]]:
    found = []
    for doc in ("docs/unattended.md", "README.md"):
        text = (ROOT / doc).read_text()
        for i, (lang, block) in enumerate(re.findall(r"```(yaml|json)\n(.*?)```", text, re.S)):
            if re.search(r'"?version"?: 1', block):
                found.append((f"{doc} #{i} ({lang})", yaml.safe_load(block)))
    return found


def _fixture_plans() -> list[tuple[str, dict]]:
    out = []
    for module, names in (("test_unattended_plan_unit", ("GOOD", "YAML")),
                          ("test_unattended_unit", ("PLAN_FILE",)),
                          ("test_logs_bundle_unit", ("PLAN_FILE",))):
        m = importlib.import_module(module)
        for name in names:
            value = getattr(m, name)
            if isinstance(value, str):
                value = yaml.safe_load(value.replace("REPORT", "http://127.0.0.1:9/r"))
            out.append((f"{module}.{name}", value))
    return out


def test_every_example_plan_of_the_docs_fits():
    plans = _doc_plans()
    assert len(plans) >= 3, [name for name, _ in plans]
    for name, data in plans:
        assert schema_errors(data, SCHEMA) == [], name
        jsonschema.Draft202012Validator(SCHEMA).validate(data)  # as an editor would
        from_file(data)


def test_every_plan_fixture_of_the_tests_fits():
    for name, data in _fixture_plans():
        assert schema_errors(data, SCHEMA) == [], name
        from_file(data)


# --- errors: the path, plain words, no value ----------------------------------------------

@pytest.mark.parametrize("data, error", [
    ([], "plan: expected a mapping"),
    ({"targets": [lun(port="3260")]}, "plan.targets[0].port: expected an integer"),
    ({"targets": [lun(port=3260.0)]}, "plan.targets[0].port: expected an integer"),
    ({"sources": [lun(lun=True)]}, "plan.sources[0].lun: expected an integer"),
    ({"grow": "no"}, "plan.grow: expected true or false"),
    ({"targets": {"host": "h"}}, "plan.targets: expected a list"),
    ({"targets": [{"host": "10.0.2.2"}]}, "plan.targets[0].iqn: required"),
    ({"mode": "auto"}, "plan.mode: expected one of restore, copy"),
    ({"resume": "sometimes"}, "plan.resume: expected one of true, false, restart"),
    ({"version": 2}, "plan.version: expected 1"),
    ({"disk": ""}, "plan.disk: must not be empty"),
    ({"sha256": "xyz"}, "plan.sha256: does not match ^[0-9a-fA-F]{64}$"),
    ({"initiator": "host1"}, "plan.initiator=host1: not an iSCSI name"),
    ({"targets": [lun(iqn="iqn.x")]}, "plan.targets[0].iqn=iqn.x: not an iSCSI name"),
    ({"targets": [lun(host="a b")]}, "plan.targets[0].host: 'a b' is not a server name"),
    ({"report": "ftp://h/r"}, "plan.report: expected an http:// or https:// URL"),
    ({"image": "ftp://h/w.img"}, "plan.image: expected a path on the boot medium"),
    ({"image": "/images/../etc/shadow"}, "plan.image: expected a path on the boot medium"),
    ({"disk": "/dev/sda"}, "plan.disk=/dev/sda: kernel names such as /dev/sdb change"),
    ({"consent": "rule:size>1G"}, "plan.consent=rule:size>1G: consent is serial:<serial> or"),
    ({"nameservers": ["ns1"]}, "plan.nameservers=ns1: not an IPv4 or IPv6 address"),
    ({"network": [{"nic": "ens3", "dns": ["x"]}]},
     "plan.network[0].dns=x: not an IPv4 or IPv6 address"),
    ({"network": [{"nic": "ens3", "mtu": 100}]}, "plan.network[0].mtu: must be from 576 to 9216"),
    ({"network": [{"nic": "ens3", "vlan": 5000}]},
     "plan.network[0].vlan: must be from 1 to 4094"),
    ({"sources": [lun(lun=-1)]}, "plan.sources[0].lun: must be at least 0"),
    ({"outage_limit": 0}, "plan.outage_limit: must be from 1 to 604800"),
    ({"network": [{"nic": "ens3", "mode": "static"}]},
     "plan.network[0].address: required with mode: static"),
    ({"network": [{"nic": "ens3", "gateway": "10.0.0.1"}]},
     "plan.network[0].gateway: only with mode: static"),
    ({"network": [{"nic": "ens3", "mode": "static", "address": "10.0.0.5"}]},
     "plan.network[0].address: expected ADDRESS/PREFIX"),
    ({"targets": [lun(mutual={"username": "san", "password": "x"})]},
     "plan.targets[0].chap: required with mutual"),
    ({"targets": [lun(portal="10.0.2.2:3260")]},
     "plan.targets[0].portal: unknown key (known: host, port, iqn, lun, chap, mutual)"),
    ({"targets": [lun(chap={"username": "bob"})]}, "plan.targets[0].chap.password: required"),
    ({"colour": "red"}, "plan.colour: unknown key (known: version, mode,"),
])
def test_each_kind_of_error_names_its_path(data, error):
    errors = schema_errors(data, SCHEMA)
    assert any(e.startswith(error) for e in errors), errors
    with pytest.raises(PlanError) as e:
        from_file(data)
    assert error in str(e.value) and error in "\n".join(e.value.problems)


def test_one_error_per_path_in_the_order_of_the_file():
    data = {"verify": 1, "network": [{"nic": "", "mode": "static"}], "disk": "",
            "targets": [lun(port=0, chap={"password": 5})], "zzz": 1}
    assert schema_errors(data, SCHEMA) == [
        "plan.verify: expected true or false",
        "plan.network[0].address: required with mode: static",
        "plan.network[0].nic: must not be empty",
        "plan.disk: must not be empty",
        "plan.targets[0].port: must be from 1 to 65535",
        "plan.targets[0].chap.username: required",
        "plan.targets[0].chap.password: expected a string",
        "plan.zzz: unknown key (known: " + ", ".join(SCHEMA["properties"]) + ")",
    ]


@pytest.mark.parametrize("password, error", [
    (12345678901, "expected a string"),
    ([SECRET], "expected a string"),
    ({"value": SECRET}, "expected a string"),
    (f"{SECRET}\nsecond line", "must not hold a control character"),
    (f"\t{SECRET}", "must not hold a control character"),
    ("", "must not be empty"),
])
@pytest.mark.parametrize("which", ["chap", "mutual"])
def test_a_chap_password_is_never_shown(password, error, which):
    first = lun(chap={"username": "u", "password": f"ok-{SECRET}"})
    first[which] = {"username": "bob", "password": password}
    data = {"targets": [first, lun(iqn="iqn.x", chap={"username": "u", "password": SECRET})]}
    errors = schema_errors(data, SCHEMA)
    assert any(e.startswith(f"plan.targets[0].{which}.password: {error}") for e in errors), \
        errors
    assert "plan.targets[1].iqn=iqn.x: not an iSCSI name" in "\n".join(errors)
    with pytest.raises(PlanError) as e:
        from_file(data)
    text = str(e.value) + repr(e.value) + "\n".join(e.value.problems)
    for shown in (SECRET, "12345678901", "second line"):
        assert shown not in text


def test_a_password_in_the_wrong_place_is_not_shown():
    data = {"targets": [lun(password=SECRET, chap={"username": "u"})], "password": SECRET}
    errors = schema_errors(data, SCHEMA)
    assert "plan.targets[0].password: unknown key (known: host, port, iqn, lun, chap, " \
           "mutual)" in errors
    assert "plan.password: unknown key" in "\n".join(errors)
    assert SECRET not in "\n".join(errors)


def test_the_schema_s_own_error_messages_never_reach_the_user():
    """jsonschema's messages quote the value ('hunter2' is not of type 'integer'): each is
    translated, none passes through."""
    data = {"targets": [lun(port=SECRET, chap={"username": SECRET, "password": [SECRET]})]}
    errors = schema_errors(data, SCHEMA)
    assert errors == ["plan.targets[0].port: expected an integer",
                      "plan.targets[0].chap.password: expected a string"]


# --- rtk plan check / rtk plan schema ------------------------------------------------------

GOOD = {"version": 1, "mode": "restore", "image": "https://deploy.example/images/n1.img",
        "sha256": SHA, "disk": "serial:S4EWNX0R123456", "consent": "serial:S4EWNX0R123456",
        "targets": [lun(chap={"username": "bob", "password": SECRET})]}
GOOD_YAML = f"""\
# yaml-language-server: $schema=plan.schema.json
version: 1
mode: copy
disk: "iscsi:{IQN}:1"
consent: "wwn:0x60000000000000000e00000000010001"
sources: [{{host: 10.0.2.20, iqn: "iqn.2010-01.com.bdr:snap", lun: 1,
           chap: {{username: node, password: "{SECRET}"}}}}]
targets: [{{host: "[fd00::2]", iqn: "{IQN}", lun: 1}}]
"""
BAD_YAML = f"""\
mode: restore
image: /images/w.img
verify: maybe
targets:
  - host: 10.0.2.2
    iqn: "{IQN}"
    chap: {{username: bob, password: 0123}}
  - {{host: 10.0.2.2, iqn: "{IQN}", chap: {{username: bob, password: "{SECRET}\\nx"}}}}
"""


@pytest.fixture
def plans(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    (tmp_path / "good.yaml").write_text(GOOD_YAML)
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    return tmp_path


def test_rtk_plan_check_three_files(plans):
    r = rtk("plan", "check", "good.json", "bad.yaml", "good.yaml", cwd=plans)
    assert r.returncode == exitcodes.EXIT_REFUSED, r
    out = r.stdout
    assert ("good.json: ok (mode restore, disk serial:S4EWNX0R123456, image "
            "https://deploy.example/images/n1.img") in out
    assert f"good.yaml: ok (mode copy, disk iscsi:{IQN}:1, source iscsi:" in out
    assert "bad.yaml: plan.verify: expected true or false" in out
    assert "bad.yaml: plan.targets[0].chap.password: expected a string" in out
    assert "bad.yaml: plan.targets[1].chap.password: must not hold a control character" in out
    assert "checked 3 plans: 2 ok, 1 invalid" in out
    assert SECRET not in r.stdout + r.stderr and "Traceback" not in r.stderr
    ok = rtk("plan", "check", "good.json", "good.yaml", cwd=plans)
    assert ok.returncode == 0 and ok.stdout.count(": ok (") == 2, ok


def test_rtk_plan_check_json(plans):
    r = rtk("plan", "check", "--json", "good.json", "bad.yaml", cwd=plans)
    assert r.returncode == exitcodes.EXIT_REFUSED
    assert SECRET not in r.stdout
    doc = json.loads(r.stdout)
    assert [(p["file"], p["ok"]) for p in doc["plans"]] == [("good.json", True),
                                                            ("bad.yaml", False)]
    assert doc["ok"] is False and doc["plans"][0]["errors"] == []
    assert doc["plans"][0]["mode"] == "restore" and doc["plans"][0]["disk"] == \
        "serial:S4EWNX0R123456"
    assert "plan.verify: expected true or false" in doc["plans"][1]["errors"]


def test_rtk_plan_check_usage_and_unreadable_files(plans):
    assert rtk("plan", "check", cwd=plans).returncode == exitcodes.EXIT_USAGE
    assert rtk("plan", cwd=plans).returncode == exitcodes.EXIT_USAGE
    r = rtk("plan", "check", "none.yaml", str(plans), cwd=plans)
    assert r.returncode == exitcodes.EXIT_REFUSED and "Traceback" not in r.stderr
    assert "none.yaml: cannot read" in r.stdout and "No such file" in r.stdout
    assert f"{plans}: cannot read" in r.stdout and "it is a directory" in r.stdout
    (plans / "broken.json").write_text('{"mode": "restore",}')
    r = rtk("plan", "check", "broken.json", cwd=plans)
    assert r.returncode == exitcodes.EXIT_REFUSED
    assert "broken.json: plan broken.json: not valid JSON: line 1" in r.stdout


def test_rtk_plan_check_with_the_kernel_command_line(plans):
    """A plan that holds only the CHAP secrets, meant for a command line that gives the
    rest: incomplete alone, ok with it; the command line is checked too."""
    (plans / "csv1.yaml").write_text(
        f"version: 1\nmode: copy\nsources: [{{host: 10.0.2.20, iqn: '{IQN}:bdr', lun: 1}}]\n")
    alone = rtk("plan", "check", "csv1.yaml", cwd=plans)
    assert alone.returncode == exitcodes.EXIT_REFUSED
    assert "csv1.yaml: rtk.mode=copy needs rtk.disk=" in alone.stdout
    line = (f"BOOT_IMAGE=/live/vmlinuz rtk.plan=http://10.0.0.5/plans/csv1.yaml "
            f"rtk.disk=iscsi:{IQN}:1 rtk.consent=serial:6000d31000a1b2c3 rtk.done=menu")
    r = rtk("plan", "check", "--cmdline", line, "csv1.yaml", cwd=plans)
    assert r.returncode == 0, r
    assert f"csv1.yaml: ok (mode copy, disk iscsi:{IQN}:1, source iscsi:{IQN}:bdr:1" in r.stdout
    bad = rtk("plan", "check", "--cmdline", "rtk.verify=maybe", "csv1.yaml", cwd=plans)
    assert bad.returncode == exitcodes.EXIT_USAGE
    assert "rtk.verify=maybe: expected yes or no" in bad.stderr


def test_rtk_plan_check_is_offline(plans):
    """Nothing is fetched or attached: an unreachable report server, image and portal are
    fine; what a file can say is checked (the network settings, without the NICs here)."""
    dead = closed_port_url()
    plan = {**GOOD, "image": dead.replace("/report", "/w.img"), "report": dead,
            "network": [{"nic": "ens3", "mode": "static", "address": "10.0.0.5/24",
                         "gateway": "10.9.9.1"}]}
    (plans / "p.json").write_text(json.dumps(plan))
    r = rtk("plan", "check", "p.json", cwd=plans)
    assert r.returncode == exitcodes.EXIT_REFUSED
    assert "p.json: plan.network[0]: gateway 10.9.9.1 is outside the subnet" in r.stdout
    plan["network"][0]["gateway"] = "10.0.0.1"
    (plans / "p.json").write_text(json.dumps(plan))
    assert rtk("plan", "check", "p.json", cwd=plans).returncode == 0


def test_forty_plans_in_one_call(tmp_path):
    names = []
    for i in range(40):
        serial = f"S4EWNX0R{i:06d}"
        p = {**GOOD, "disk": f"serial:{serial}", "consent": f"serial:{serial}",
             "image": f"https://deploy.example/images/node{i:02d}.img.zst",
             "initiator": f"iqn.2026-11.lab.rtk:node{i:02d}"}
        name = f"52-54-00-00-00-{i:02x}." + ("json" if i % 2 else "yaml")
        (tmp_path / name).write_text(json.dumps(p) if i % 2 else yaml.safe_dump(p))
        names.append(name)
    r = rtk("plan", "check", *names, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    assert r.stdout.count(": ok (mode restore") == 40
    assert "checked 40 plans: 40 ok, 0 invalid" in r.stdout
    for i in (3, 17, 38):  # three machines with a mistake each
        text = (tmp_path / names[i]).read_text().replace("serial:", "sreial:", 1)
        (tmp_path / names[i]).write_text(text)
    r = rtk("plan", "check", *names, cwd=tmp_path)
    assert r.returncode == exitcodes.EXIT_REFUSED
    bad = sorted({line.split(":")[0] for line in r.stdout.splitlines()
                  if ": ok (" not in line and not line.startswith("checked")})
    assert bad == sorted(names[i] for i in (3, 17, 38)), r.stdout
    assert "checked 40 plans: 37 ok, 3 invalid" in r.stdout


def test_rtk_plan_schema_prints_the_schema():
    r = rtk("plan", "schema")
    assert r.returncode == 0 and json.loads(r.stdout) == SCHEMA
    assert r.stdout == resources.files("toolkit.unattended").joinpath(
        "plan.schema.json").read_text()


def test_a_plan_may_name_its_schema_for_an_editor():
    assert from_file({"$schema": "./plan.schema.json", "mode": "restore"}) == \
        {"mode": "restore"}


# --- a key that swallowed its secret (no space after the colon) -----------------------------

TYPO = ('mode: restore\nimage: http://10.0.2.2/w.img\ndisk: serial:AB12\nconsent: serial:AB12\n'
        'targets: [{host: 10.0.0.30, iqn: "iqn.2001-05.com.san:csv1",\n'
        f'           chap: {{username: node, password:{SECRET}}},\n'
        f'           mutual: {{username: m, "password {SECRET}x": 1, secretz: 2}}}}]\n')


def test_an_unknown_key_of_a_chap_object_is_never_shown(tmp_path):
    """``password:SECRET`` (no space after the colon) is one YAML key, the secret in it:
    ``rtk plan check`` and the unattended run say where and how to write it, never it."""
    from toolkit.unattended.cmdline import Cmdline
    from toolkit.unattended.plan import read_plan

    (tmp_path / "node1.yaml").write_text(TYPO)
    r = rtk("plan", "check", "node1.yaml", cwd=tmp_path)
    assert r.returncode != 0 and SECRET not in r.stdout + r.stderr, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert (f"plan.targets[0].chap: an unknown key ({len('password:' + SECRET)} characters, "
            "not shown; known: username, password); it starts with password: write "
            "`password: VALUE`, with a space after the colon") in out, out
    assert f"plan.targets[0].mutual: an unknown key ({len('password ' + SECRET) + 1} " \
        "characters, not shown" in out
    assert "plan.targets[0].mutual: an unknown key (7 characters, not shown; known: " \
        "username, password)" in out  # secretz: no hint, it starts with no known key
    assert "plan.targets[0].chap.password: required" in out
    with pytest.raises(PlanError) as e:  # the unattended run reads it the same way
        read_plan(Cmdline("rtk.mode=restore rtk.plan=/node1.yaml"), medium=str(tmp_path))
    assert SECRET not in str(e.value) and SECRET not in "".join(e.value.problems)
    assert "write `password: VALUE`, with a space after the colon" in str(e.value)
    # elsewhere an unknown key is still shown: it holds no secret there
    assert schema_errors({"mode": "restore", "vrify": 1}, SCHEMA)[0].startswith(
        "plan.vrify: unknown key (known: ")
