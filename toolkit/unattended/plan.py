"""The unattended plan: what to attach, which image to write onto which disk.

It comes from the kernel command line (``rtk.*``, ``ip=``, ``vlan=``,
``nameserver=``, see docs/unattended.md) and optionally from a plan file
(``rtk.plan=URL|path``, JSON or YAML, checked against :data:`SCHEMA`, the JSON Schema
plan.schema.json, with the jsonschema library), the place for CHAP secrets. Command line
values override the file's. Every error names the parameter (``rtk.verify=maybe: ...``)
or the path in the file (``plan.targets[1].chap.password: required``) and never shows a
secret.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass, replace
from importlib import resources
from urllib.parse import urlsplit

import requests
import yaml

from toolkit.iscsi.adm import Chap
from toolkit.iscsi.parse import valid_iscsi_name
from toolkit.iscsi.portal import DEFAULT_PORT
from toolkit.jobs.report import safe_url
from toolkit.net.http import http_failure
from toolkit.net.settings import NetSettings, validate
from toolkit.system.paths import LIVE_MEDIUM
from toolkit.unattended import cmdline as kc
from toolkit.unattended.cmdline import Cmdline, CmdlineError
from toolkit.unattended.selectors import SOURCE, TARGET, IscsiLun, Selector, check_host
from toolkit.unattended.selectors import parse_consent as _consent
from toolkit.unattended.selectors import parse_iscsi as _iscsi
from toolkit.unattended.selectors import parse_selector as _selector

MODES = ("restore", "copy")
DONE = ("reboot", "poweroff", "menu", "shell")
PARAMS = tuple(f"rtk.{p}" for p in ("mode", "initiator", "source", "target", "image", "sha256",
                                    "disk", "consent", "verify", "grow", "report", "done", "plan",
                                    "resume"))
RESUME = ("no", "yes", "restart")  # copy: a mapfile of the pair already there (docs)


class PlanError(ValueError):
    """A plan file that cannot be read or does not fit the schema, or an incomplete plan.
    ``problems``: each problem, one line each (the message lists them all)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [message])


# The plan file's JSON Schema (draft 2020-12), shipped in the package and published in
# docs/unattended.md; `rtk plan schema` prints it. Validated with the jsonschema library;
# what a schema cannot say (a selector's grammar, a URL's port, an IQN's length in bytes,
# %-escapes, the completeness per mode with the command line) is checked in Python after.
SCHEMA_TEXT = resources.files(__package__).joinpath("plan.schema.json").read_text("utf-8")
SCHEMA = json.loads(SCHEMA_TEXT)
_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
          "integer": "an integer", "number": "a number", "boolean": "true or false"}
# one message per value, the first of these keywords that failed (then any other)
_FIRST = ("type", "not", "const", "enum", "minLength", "maxLength", "pattern", "minimum",
          "maximum")
_validators: list = []  # the validator of SCHEMA, once made


def _key(k) -> str:
    """A key as the error shows it: quoted when empty or not plain printable text (a
    newline in a key must not break the list of errors into misleading lines)."""
    text = str(k)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _validator(schema: dict):
    """A jsonschema validator of ``schema`` (draft 2020-12) where an integer is an int
    (not 3260.0), and a pattern's ``$`` is the end of the text as in JSON Schema's
    ECMA-262 regexes (Python's ``$`` also matches before a final newline)."""
    if schema is SCHEMA and _validators:
        return _validators[0]
    import jsonschema  # here: `rtk` commands that read no plan do not pay for the import
    from jsonschema.exceptions import ValidationError

    base = jsonschema.Draft202012Validator

    def pattern(validator, regex, instance, _schema):
        if validator.is_type(instance, "string") and not re.search(
                regex[:-1] + r"\Z" if regex.endswith("$") else regex, instance):
            yield ValidationError("does not match")  # (never the value: it may be a secret)

    cls = jsonschema.validators.extend(
        base, validators={"pattern": pattern}, type_checker=base.TYPE_CHECKER.redefine(
            "integer", lambda _c, v: isinstance(v, int) and not isinstance(v, bool)))
    v = cls(schema)
    if schema is SCHEMA:
        _validators.append(v)
    return v


def _at(data, path) -> tuple[str, tuple]:
    """``path`` (keys and indexes from the top) as the error shows it, ``.targets[1].chap``,
    and its sort key: the position of each step in the file (-1: a missing key)."""
    shown, order, v = "", [], data
    for step in path:
        if isinstance(v, list) and isinstance(step, int):
            shown, v = shown + f"[{step}]", v[step] if step < len(v) else None
            order.append(step)
        else:
            keys = list(v) if isinstance(v, dict) else []
            shown += f".{_key(step)}"
            order.append(keys.index(step) if step in keys else -1)
            v = v.get(step) if isinstance(v, dict) else None
    return shown, tuple(order)


def _checks(path: tuple):
    """The Python check of the value at ``path`` whose message says more than the schema's
    (and which the plan runs anyway), with the name it gives the value; or None."""
    n, top = len(path), path[0] if path else None
    if n == 1 and top in ("image", "disk", "consent", "initiator", "report"):
        return _CONVERT[top], f"plan.{top}"
    if n == 2 and top == "nameservers":
        return kc.ip_address, "plan.nameservers"
    if n == 3 and top in ("sources", "targets") and path[2] in ("iqn", "host"):
        return ({"iqn": _iqn, "host": check_host}[path[2]],
                f"plan.{top}[{path[1]}].{path[2]}")
    if top == "network" and (n, path[2:3]) in ((3, ("gateway",)), (4, ("dns",))):
        return kc.ip_address, f"plan.network[{path[1]}].{path[2]}"
    return None


def _show(v) -> str:
    return json.dumps(v) if isinstance(v, bool | None | int | float) else str(v)


def _messages(e, data, path: str) -> list[tuple[tuple, str, str]]:
    """jsonschema's error ``e`` in plain words, as (sort key, path, message) items. Its own
    message quotes the value (a secret, maybe): it is never used."""
    s, where, kw, value = e.schema, tuple(e.absolute_path), e.validator, e.validator_value
    own = s.get("errorMessage") if isinstance(s, dict) else None

    def item(text: str, at: tuple = where) -> tuple[tuple, str, str]:
        shown, order = _at(data, at)
        return order, path + shown, f"{path + shown}: {text}"

    if kw in ("required", "dependentRequired", "additionalProperties"):
        inst = e.instance if isinstance(e.instance, dict) else {}
        if kw == "required":
            return [item(own or "required", (*where, k)) for k in value if k not in inst]
        if kw == "dependentRequired":
            return [item(f"required with {d}", (*where, k)) for d, ks in value.items()
                    if d in inst for k in ks if k not in inst]
        props = s.get("properties", {})
        known = ", ".join(map(_key, props))
        return [item(f"unknown key (known: {known})", (*where, k)) for k in inst
                if k not in props]
    if own:
        return [item(own)]
    if kw == "type":
        types = [value] if isinstance(value, str) else value
        return [item("expected " + " or ".join(_TYPES.get(t, t) for t in types))]
    if kw in ("enum", "const"):
        choices = [value] if kw == "const" else value
        return [item(f"expected {_show(choices[0])}" if len(choices) == 1 else
                     "expected one of " + ", ".join(map(_show, choices)))]
    if kw == "minLength":
        return [item("must not be empty" if value == 1 else f"needs {value} characters or more")]
    if kw == "maxLength":
        return [item(f"must be at most {value} characters")]
    if kw in ("minimum", "maximum"):
        lo, hi = s.get("minimum"), s.get("maximum")
        return [item(f"must be from {lo} to {hi}" if None not in (lo, hi) else
                     f"must be at least {lo}" if hi is None else f"must be at most {hi}")]
    if kw == "pattern":
        check = _checks(where)
        if check and isinstance(e.instance, str):
            try:
                check[0](e.instance, check[1])
            except ValueError as err:  # CmdlineError: the message the command line gives
                text = str(err)
                if text.isprintable():  # (a value with a newline would break the list)
                    order, where_shown, _ = item("")
                    return [(order, where_shown, text)]
        return [item(s.get("patternErrorMessage") or f"does not match {value}")]
    return [item("not allowed here")]  # not, a false schema


def schema_errors(value, schema: dict, path: str = "plan") -> list[str]:
    """What is wrong with ``value`` for ``schema`` (:data:`SCHEMA`), validated by jsonschema:
    one line per problem, ``PATH: what is wrong`` in plain words, in the order of the file,
    one problem per value. Values are never quoted (they may be secrets), except in what the
    command line's own checks say (a selector, an IQN, an address: never a password)."""
    first: dict[str, tuple] = {}  # path: (rank of the keyword, seq, sort key, message)
    found = ((e.validator, m) for e in _validator(schema).iter_errors(value)
             for m in _messages(e, value, path))
    for seq, (keyword, (order, where, text)) in enumerate(found):
        rank = _FIRST.index(keyword) if keyword in _FIRST else len(_FIRST)
        if where not in first or (rank, seq) < first[where][:2]:
            first[where] = (rank, seq, order, text)
    return [text for *_, text in sorted(first.values(), key=lambda x: (x[2], x[1]))]


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
    resume: str = "no"  # copy, a mapfile of the pair there: refuse, "yes" resume, "restart"
    bundle: bool = False  # at the end, the logs bundle to the report server (plan file only)
    # copy: seconds a storage outage is waited out before stopping, resumable (plan file)
    outage_limit: int = 600

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
    try:  # (the value is not shown: a URL may hold user:password@ or a token)
        u = urlsplit(value)
        host, port = u.hostname, u.port  # ValueError: "[::1" or a port "abc" or 99999
    except ValueError:
        raise CmdlineError(f"{where}: not a valid URL: expected http(s)://HOST[:PORT]/PATH, "
                           "an IPv6 HOST in brackets, a PORT from 1 to 65535") from None
    if u.scheme not in ("http", "https") or not host:
        raise CmdlineError(f"{where}: expected an http:// or https:// URL")
    if port == 0:
        raise CmdlineError(f"{where}: port 0: expected a port from 1 to 65535")
    return value


def _path(value: str, where: str) -> str:
    if not value or ".." in value.split("/") or "://" in value:  # (no value: a URL's secrets)
        raise CmdlineError(f"{where}: expected a path on the boot medium (without ..) or an "
                           "http:// or https:// URL")
    if not value.isprintable():  # %00 (no path can hold it), a newline...
        raise CmdlineError(f"{where}: the path holds a control character (%00, a newline...)")
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
    if (v := cl.get("rtk.resume")) is not None:
        if v not in RESUME:
            raise CmdlineError(f"rtk.resume={v}: expected {' or '.join(RESUME)}")
        out["resume"] = v
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
    return IscsiLun(role, check_host(d["host"], f"{where}.host"), _iqn(d["iqn"], f"{where}.iqn"),
                    d.get("port", DEFAULT_PORT), d.get("lun", 0), chap, mutual)


def from_file(data) -> dict:
    """The plan values of a parsed plan file. The schema first, then what only Python
    checks; PlanError lists every problem (``problems``: one line each)."""
    errors = schema_errors(data, SCHEMA)
    if errors:
        raise PlanError("the plan file does not fit the schema:\n  " + "\n  ".join(errors),
                        errors)
    out: dict = {k: data[k] for k in ("mode", "verify", "grow", "done", "bundle",
                                      "outage_limit") if k in data}
    if "resume" in data:  # true, false or "restart"
        out["resume"] = {True: "yes", False: "no"}.get(data["resume"], data["resume"])
    problems: list[str] = []

    def checked(convert, *args):
        try:
            return convert(*args)
        except CmdlineError as e:
            problems.append(str(e))

    if "network" in data:
        out["network"] = tuple(NetSettings(**{"mode": "dhcp", **n, "dns": tuple(
            n.get("dns", ()))}) for n in data["network"])
    if "nameservers" in data:
        out["nameservers"] = tuple(checked(kc.ip_address, v, "plan.nameservers")
                                   for v in data["nameservers"])
    for key, role in (("sources", SOURCE), ("targets", TARGET)):
        if key in data:
            out[key] = tuple(checked(_lun, d, role, f"plan.{key}[{i}]")
                             for i, d in enumerate(data[key]))
    for key, convert in _CONVERT.items():
        if key in data:
            out[key] = checked(convert, data[key], f"plan.{key}")
    if problems:
        raise PlanError(problems[0] if len(problems) == 1 else "the plan file has invalid "
                        "values:\n  " + "\n  ".join(problems), problems)
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
    if plan.bundle and not plan.report:
        raise PlanError("bundle: true (in the plan file) sends the logs bundle to the report "
                        "server: it needs rtk.report= (or report: in the plan file)")
    return plan


MAX_DEPTH = 32  # a plan is 4 levels deep (plan.targets[0].chap.password)
MAX_SIZE = 1 << 20  # bytes: a plan file is a few hundred


def _depth(value) -> int:
    """How deeply ``value`` nests lists and mappings (iteratively: no recursion limit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                break
            todo += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return deepest


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    if isinstance(e, yaml.reader.ReaderError):  # a control character, or not UTF-8
        return (f"position {e.position}: the character {e.character!r} is not allowed in "
                "YAML" if isinstance(e.character, str) else f"position {e.position}: "
                f"{e.reason}")
    return where + (getattr(e, "problem", None) or "syntax error")  # no snippet: secrets


def parse_plan_text(text: str, name: str) -> dict:
    """A plan file: JSON if ``name`` ends in .json, otherwise YAML (which reads JSON too)."""
    try:
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise PlanError(f"plan {name}: not valid JSON: line {e.lineno} column {e.colno}: "
                        f"{e.msg}") from None
    except yaml.YAMLError as e:
        raise PlanError(f"plan {name}: not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:  # too deep for the parser itself
        data, too_deep = None, True
    except ValueError:  # a number of thousands of digits, which int() refuses
        raise PlanError(f"plan {name}: a number there has thousands of digits") from None
    else:
        too_deep = _depth(data) > MAX_DEPTH
    if too_deep:
        raise PlanError(f"plan {name}: the plan file is nested too deeply (more than "
                        f"{MAX_DEPTH} levels of lists and mappings; a plan has 4)")
    if not isinstance(data, dict):
        raise PlanError(f"plan {name}: expected a mapping (key: value) at the top")
    return data


def plan_text(data: bytes, name: str) -> str:
    """The plan file's bytes as text: UTF-8 (a byte order mark allowed), else PlanError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PlanError(f"plan {name}: the plan file is not UTF-8 text (byte "
                        f"0x{data[e.start]:02x} at position {e.start})") from None


def load_plan(source: str, medium: str = LIVE_MEDIUM, timeout: float = 30) -> dict:
    """The plan file at an http(s) URL (TLS verified) or a path on the boot medium."""
    if source.startswith(("http://", "https://")):
        shown = safe_url(source)  # without user:password@ or ?query (tokens)
        try:
            with requests.get(source, timeout=timeout, verify=True, stream=True) as r:
                r.raise_for_status()
                data = r.raw.read(MAX_SIZE + 1, decode_content=True)
        except requests.RequestException as e:
            status = getattr(e.response, "status_code", None)
            why = f"HTTP {status}" if status else http_failure(e)
            raise PlanError(f"rtk.plan={shown}: cannot fetch the plan: {why}") from None
        except (OSError, ValueError) as e:  # urllib3's errors while reading the body
            raise PlanError(f"rtk.plan={shown}: cannot fetch the plan: {http_failure(e)}"
                            ) from None
        if len(data) > MAX_SIZE:
            raise PlanError(f"rtk.plan={shown}: the plan file is larger than {MAX_SIZE} bytes")
        return parse_plan_text(plan_text(data, urlsplit(source).path), urlsplit(source).path)
    return read_plan_file(os.path.join(medium, source.lstrip("/")), f"rtk.plan={source}: ",
                          source)


def read_plan_file(path: str, where: str = "", name: str | None = None) -> dict:
    """The plan file at ``path`` on this machine, parsed (``name``, default ``path``: JSON
    if it ends in .json, else YAML): a regular file of at most MAX_SIZE bytes (a FIFO would
    wait for ever, /dev/zero never end). Messages start with ``where``."""
    name = path if name is None else name
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise PlanError(f"{where}cannot read {path}: it is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise PlanError(f"{where}cannot read {path}: not a regular file")
        if st.st_size > MAX_SIZE:
            raise PlanError(f"{where}the plan file is larger than {MAX_SIZE} bytes")
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError as e:
        raise PlanError(f"{where}cannot read {path}: "
                        f"{e.strerror or type(e).__name__}") from None
    return parse_plan_text(plan_text(data, name), name)


def read_plan(cl: Cmdline | None = None, medium: str = LIVE_MEDIUM) -> Plan:
    """The plan: the command line (/proc/cmdline by default) over its rtk.plan= file.
    Raises CmdlineError or PlanError (both ValueError) with the reason."""
    cl = Cmdline() if cl is None else cl
    given = from_cmdline(cl)
    planned = from_file(load_plan(given["plan"], medium)) if "plan" in given else {}
    return check(Plan(**merge(planned, given)))
