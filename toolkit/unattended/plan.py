"""The unattended plan: what to attach, which image to write onto which disk.

It comes from the kernel command line (``rtk.*``, ``ip=``, ``vlan=``,
``nameserver=``, see docs/unattended.md) and optionally from a plan file
(``rtk.plan=URL|path``, JSON or YAML, checked against :data:`SCHEMA`), the
place for CHAP secrets. Command line values override the file's. Every error
names the parameter (``rtk.verify=maybe: ...``) or the path in the file
(``plan.targets[1].chap.password: required``) and never shows a secret.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from urllib.parse import urlsplit

import requests
import yaml

from toolkit.iscsi.adm import Chap
from toolkit.iscsi.parse import valid_iscsi_name
from toolkit.iscsi.portal import DEFAULT_PORT
from toolkit.jobs.report import safe_url
from toolkit.net.settings import NetSettings, validate
from toolkit.system.paths import LIVE_MEDIUM
from toolkit.unattended import cmdline as kc
from toolkit.unattended.cmdline import Cmdline, CmdlineError
from toolkit.unattended.selectors import SOURCE, TARGET, IscsiLun, Selector
from toolkit.unattended.selectors import parse_consent as _consent
from toolkit.unattended.selectors import parse_iscsi as _iscsi
from toolkit.unattended.selectors import parse_selector as _selector

MODES = ("restore", "copy")
DONE = ("reboot", "poweroff", "menu", "shell")
PARAMS = tuple(f"rtk.{p}" for p in ("mode", "initiator", "source", "target", "image", "sha256",
                                    "disk", "consent", "verify", "grow", "report", "done", "plan"))


class PlanError(ValueError):
    """A plan file that cannot be read or does not fit the schema, or an incomplete plan."""


def _str(**kw) -> dict:
    return {"type": "string", "minLength": 1, **kw}


_CHAP = {"type": "object", "required": ["username", "password"], "additionalProperties": False,
         "properties": {"username": _str(), "password": _str()}}
_LUN = {"type": "object", "required": ["host", "iqn"], "additionalProperties": False,
        "properties": {"host": _str(), "iqn": _str(), "lun": {"type": "integer", "minimum": 0},
                       "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                       "chap": _CHAP, "mutual": _CHAP}}
_NIC = {"type": "object", "required": ["nic"], "additionalProperties": False,
        "properties": {"nic": _str(), "mode": {"enum": ["dhcp", "static"]}, "address": _str(),
                       "gateway": _str(), "dns": {"type": "array", "items": _str()},
                       "mtu": {"type": "integer"}, "vlan": {"type": "integer"}}}
SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "version": {"enum": [1]}, "mode": {"enum": list(MODES)},
    "network": {"type": "array", "items": _NIC},
    "nameservers": {"type": "array", "items": _str()},
    "initiator": _str(), "sources": {"type": "array", "items": _LUN},
    "targets": {"type": "array", "items": _LUN}, "image": _str(),
    "sha256": _str(pattern="^[0-9a-fA-F]{64}$"), "disk": _str(), "consent": _str(),
    "verify": {"type": "boolean"}, "grow": {"type": "boolean"}, "report": _str(),
    "done": {"enum": list(DONE)}}}
_TYPES = {"object": (dict, "a mapping"), "array": (list, "a list"), "string": (str, "a string"),
          "integer": (int, "an integer"), "boolean": (bool, "true or false")}


def _key(k) -> str:
    """A key as the error shows it: quoted when empty or not plain printable text (a
    newline in a key must not break the list of errors into misleading lines)."""
    text = str(k)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def schema_errors(value, schema: dict, path: str = "plan") -> list[str]:
    """What is wrong with ``value`` for the JSON-Schema subset :data:`SCHEMA` uses (type, enum,
    required, properties, additionalProperties, items, minLength, pattern, minimum, maximum).
    Values are never quoted (they may be secrets)."""
    t = schema.get("type")
    if t and (not isinstance(value, _TYPES[t][0]) or (t == "integer" and isinstance(value, bool))):
        return [f"{path}: expected {_TYPES[t][1]}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: expected one of {', '.join(map(str, schema['enum']))}"]
    if t == "string" and len(value) < schema.get("minLength", 0):
        return [f"{path}: must not be empty"]
    if t == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{path}: does not match {schema['pattern']}"]
    lo, hi = schema.get("minimum", value), schema.get("maximum", value)
    if t == "integer" and not lo <= value <= hi:
        return [f"{path}: must be from {lo} to {hi}"]
    errors = []
    if t == "object":
        props = schema.get("properties", {})
        errors += [f"{path}.{k}: required" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{_key(k)}: unknown key (known: {', '.join(props)})")
    if t == "array":
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors


@dataclass(frozen=True)
class Image:
    kind: str  # "url", "path" (on the boot medium) or "iscsi"
    location: str  # the URL, the path, or iscsi:IQN:LUN
    lun: IscsiLun | None = None  # iscsi: with a server: attach it as SOURCE first
    selector: Selector | None = None  # iscsi: the LUN's disk, once attached


@dataclass(frozen=True)
class Plan:
    mode: str | None = None  # None: no unattended run, the menu
    network: tuple[NetSettings, ...] = ()
    nameservers: tuple[str, ...] = ()
    initiator: str | None = None
    sources: tuple[IscsiLun, ...] = ()
    targets: tuple[IscsiLun, ...] = ()
    image: Image | None = None
    sha256: str | None = None
    disk: Selector | None = None
    consent: Selector | None = None
    verify: bool = True
    grow: bool = False
    report: str | None = None
    done: str = "reboot"
    plan: str | None = None  # where the plan file came from

    def to_dict(self) -> dict:  # not asdict() of it all: that would hold the CHAP secrets
        im = self.image
        return {**asdict(replace(self, network=(), sources=(), targets=(), image=None)),
                "network": [s.to_dict() for s in self.network], "disk": self.disk and
                str(self.disk), "consent": self.consent and str(self.consent),
                "sources": [x.to_dict() for x in self.sources],
                "targets": [x.to_dict() for x in self.targets],
                "image": im and {"kind": im.kind, "location": im.location,
                                 "lun": im.lun and im.lun.to_dict()}}

    def network_settings(self, known_nics: list[str] | tuple[str, ...]) -> list[NetSettings]:
        """The network settings, with the nameservers where they have no DNS of their own,
        validated against the NICs here (NetRefused if not)."""
        return [validate(replace(s, dns=s.dns or self.nameservers), known_nics)
                for s in self.network]


def _url(value: str, where: str) -> str:
    u = urlsplit(value)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise CmdlineError(f"{where}: expected an http:// or https:// URL")
    return value


def _path(value: str, where: str) -> str:
    if not value or ".." in value.split("/") or "://" in value:  # (no value: a URL's secrets)
        raise CmdlineError(f"{where}: expected a path on the boot medium (without ..) or an "
                           "http:// or https:// URL")
    return "/" + value.lstrip("/")


def _image(raw: str, where: str) -> Image:
    if raw.startswith(("http://", "https://")):
        return Image("url", _url(raw, where))
    if not raw.startswith("iscsi:"):
        return Image("path", _path(kc.decode(raw, where), where))
    if raw[6:].startswith(("iqn.", "eui.", "naa.")):
        sel = _selector(raw, where)
        return Image("iscsi", str(sel), selector=sel)
    lun = _iscsi(raw, SOURCE, where)
    sel = Selector("iscsi", f"{lun.iqn}:{lun.lun}", iqn=lun.iqn, lun=lun.lun)
    return Image("iscsi", str(sel), lun=lun, selector=sel)


def _sha(value: str, where: str) -> str:
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    raise CmdlineError(f"{where}: expected 64 hexadecimal digits (a SHA-256)")


def _iqn(value: str, where: str) -> str:
    if valid_iscsi_name(value):
        return value
    raise CmdlineError(f"{where}={value}: not an iSCSI name (iqn.YYYY-MM.domain:name)")


_CONVERT = {"initiator": _iqn, "image": _image, "sha256": _sha, "disk": _selector,
            "consent": _consent, "report": _url}


def from_cmdline(cl: Cmdline) -> dict:
    """The plan values the command line gives (only those), typed and checked."""
    unknown = [n for n in cl.names() if n.startswith("rtk.") and n not in PARAMS]
    if unknown:
        raise CmdlineError(f"unknown parameter {unknown[0]}: the rtk. parameters are "
                           f"{', '.join(PARAMS)}")
    out = kc.network_from(cl)
    yesno = {"yes": True, "no": False}
    for key in ("mode", "done", "verify", "grow"):
        if (v := cl.get(f"rtk.{key}")) is not None:
            choices = {"mode": MODES, "done": DONE}.get(key, tuple(yesno))
            if v not in choices:
                raise CmdlineError(f"rtk.{key}={v}: expected {' or '.join(choices)}")
            out[key] = yesno.get(v, v) if key in ("verify", "grow") else v
    for key, role in (("sources", SOURCE), ("targets", TARGET)):
        if values := cl.raw_all(f"rtk.{key[:-1]}"):
            out[key] = tuple(_iscsi(v, role, f"rtk.{key[:-1]}") for v in values)
    for key, convert in _CONVERT.items():
        if (v := cl.raw(f"rtk.{key}")) is not None:
            out[key] = convert(v, f"rtk.{key}")
    if (v := cl.raw("rtk.plan")) is not None:
        out["plan"] = _url(v, "rtk.plan") if "://" in v else _path(kc.decode(v, "rtk.plan"),
                                                                    "rtk.plan")
    return out


def _lun(d: dict, role: str, where: str) -> IscsiLun:
    chap, mutual = (Chap(**d[k]) if k in d else None for k in ("chap", "mutual"))
    return IscsiLun(role, d["host"].strip("[]"), _iqn(d["iqn"], f"{where}.iqn"),
                    d.get("port", DEFAULT_PORT), d.get("lun", 0), chap, mutual)


def from_file(data) -> dict:
    """The plan values of a parsed plan file; PlanError lists every problem."""
    errors = schema_errors(data, SCHEMA)
    if errors:
        raise PlanError("the plan file does not fit the schema:\n  " + "\n  ".join(errors))
    out: dict = {k: data[k] for k in ("mode", "verify", "grow", "done") if k in data}
    try:
        if "network" in data:
            out["network"] = tuple(NetSettings(**{"mode": "dhcp", **n, "dns": tuple(
                n.get("dns", ()))}) for n in data["network"])
        if "nameservers" in data:
            out["nameservers"] = tuple(kc.ip_address(v, "plan.nameservers")
                                       for v in data["nameservers"])
        for key, role in (("sources", SOURCE), ("targets", TARGET)):
            if key in data:
                out[key] = tuple(_lun(d, role, f"plan.{key}[{i}]")
                                 for i, d in enumerate(data[key]))
        for key, convert in _CONVERT.items():
            if key in data:
                out[key] = convert(data[key], f"plan.{key}")
    except CmdlineError as e:
        raise PlanError(str(e)) from None
    return out


def merge(file_values: dict, cmdline_values: dict) -> dict:
    """Command line over plan file; a command line LUN without CHAP takes the plan's."""
    out = {**file_values, **cmdline_values}
    for key in ("sources", "targets"):
        planned = {x.iqn: x for x in file_values.get(key, ())}
        out[key] = tuple(replace(x, chap=planned[x.iqn].chap, mutual=planned[x.iqn].mutual)
                         if x.chap is None and x.iqn in planned else x
                         for x in out.get(key, ()))
    return out


def check(plan: Plan) -> Plan:
    """PlanError unless ``plan`` is complete for its mode (no mode: nothing to check)."""
    img, missing = plan.image, [k for k in ("image", "disk", "consent") if not getattr(plan, k)]
    if plan.mode == "copy" and img and img.kind != "iscsi":
        raise PlanError(f"rtk.mode=copy copies a disk: rtk.image= must be an iscsi: LUN, not "
                        f"a {img.kind} (use rtk.mode=restore for image files)")
    if plan.mode == "copy" and not img:  # the source: rtk.image=iscsi:... or the one source
        missing[0] = "the source: rtk.image=iscsi:<IQN>:<LUN>, or exactly one rtk.source="
        missing = missing[1:] if len(plan.sources) == 1 else missing
    if plan.mode and missing:
        raise PlanError(f"rtk.mode={plan.mode} needs " + ", ".join(
            k if " " in k else f"rtk.{k}= (or {k}: in the plan file)" for k in missing))
    return plan


def parse_plan_text(text: str, name: str) -> dict:
    """A plan file: JSON if ``name`` ends in .json, otherwise YAML (which reads JSON too)."""
    try:
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise PlanError(f"plan {name}: not valid JSON: line {e.lineno} column {e.colno}: "
                        f"{e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise PlanError(f"plan {name}: not valid YAML: {where}"  # no snippet: secrets
                        f"{getattr(e, 'problem', None) or 'syntax error'}") from None
    if not isinstance(data, dict):
        raise PlanError(f"plan {name}: expected a mapping (key: value) at the top")
    return data


def load_plan(source: str, medium: str = LIVE_MEDIUM, timeout: float = 30) -> dict:
    """The plan file at an http(s) URL (TLS verified) or a path on the boot medium."""
    if source.startswith(("http://", "https://")):
        try:
            r = requests.get(source, timeout=timeout, verify=True)
            r.raise_for_status()
        except requests.RequestException as e:
            status = getattr(e.response, "status_code", None)
            why = f"HTTP {status}" if status else type(e).__name__
            raise PlanError(f"rtk.plan={safe_url(source)}: cannot fetch the plan: {why}"
                            ) from None  # shown without user:password@ or ?query (tokens)
        return parse_plan_text(r.text, urlsplit(source).path)
    path = os.path.join(medium, source.lstrip("/"))
    try:
        with open(path, encoding="utf-8") as f:
            return parse_plan_text(f.read(), source)
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError(f"rtk.plan={source}: cannot read {path}: "
                        f"{getattr(e, 'strerror', None) or e}") from None


def read_plan(cl: Cmdline | None = None, medium: str = LIVE_MEDIUM) -> Plan:
    """The plan: the command line (/proc/cmdline by default) over its rtk.plan= file.
    Raises CmdlineError or PlanError (both ValueError) with the reason."""
    cl = Cmdline() if cl is None else cl
    given = from_cmdline(cl)
    planned = from_file(load_plan(given["plan"], medium)) if "plan" in given else {}
    return check(Plan(**merge(planned, given)))
