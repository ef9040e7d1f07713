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

import re
from dataclasses import asdict, dataclass, replace
from urllib.parse import urlsplit

from toolkit.iscsi.adm import Chap
from toolkit.iscsi.parse import valid_iscsi_name
from toolkit.iscsi.portal import DEFAULT_PORT
from toolkit.net.settings import NetSettings, validate
from toolkit.system.paths import LIVE_MEDIUM
from toolkit.unattended import cmdline as kc
from toolkit.unattended.cmdline import Cmdline, CmdlineError
from toolkit.unattended.plan_file import (
    MAX_DEPTH,
    MAX_SIZE,
    PlanError,
    load_plan,
    parse_plan_text,
    plan_text,
    read_plan_file,
)
from toolkit.unattended.plan_pairs import KEYS, CopyPair, check_pairs, converter, pairs_from_file
from toolkit.unattended.plan_schema import SCHEMA, SCHEMA_TEXT, key_text, schema_errors
from toolkit.unattended.selectors import SOURCE, TARGET, IscsiLun, Selector, check_host
from toolkit.unattended.selectors import parse_consent as _consent
from toolkit.unattended.selectors import parse_iscsi as _iscsi
from toolkit.unattended.selectors import parse_selector as _selector

MODES = ("restore", "copy")
DONE = ("reboot", "poweroff", "menu", "shell")
PARAMS = tuple(f"rtk.{p}" for p in ("mode", "initiator", "source", "target", "image", "sha256",
                                    "disk", "consent", "verify", "grow", "report", "done", "plan",
                                    "resume", "fallback",
                                    "data",  # rtk.data=: read at boot (toolkit.system.state)
                                    # read at boot (toolkit.system.keymap, .remote_boot)
                                    "keymap", "ssh", "ssh_keys"))
RESUME = ("no", "yes", "restart")  # copy: a mapfile of the pair already there (docs)
__all__ = ["DONE", "MAX_DEPTH", "MAX_SIZE", "MODES", "PARAMS", "RESUME", "SCHEMA",
           "SCHEMA_TEXT", "CopyPair", "Image", "Plan", "PlanError", "check", "field_check",
           "from_cmdline", "from_file", "load_plan", "merge", "parse_plan_text", "plan_text",
           "read_plan", "read_plan_file", "schema_errors"]


def _key(k) -> str:
    """A key as the messages show it (:func:`toolkit.unattended.plan_schema.key_text`)."""
    return key_text(k)






@dataclass(frozen=True)
class Image:
    kind: str  # "url", "path" (on the boot medium), "iscsi" or "udpcast" (a live stream)
    location: str  # the URL, the path, iscsi:IQN:LUN or udpcast://[IF@]PORTBASE[?...]
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
    # restore, a udpcast:// image: the same image over HTTP(S), restored when the stream
    # fails (no sender, a late join, the stream lost); rtk.fallback= or fallback:
    fallback: str | None = None
    # copy, plan file only: a job of several pairs (then no image/disk/consent), run one
    # after another or (concurrent) side by side where they share no device; used_blocks:
    # copy only what the sources' filesystems use (toolkit.copy.usedblocks)
    pairs: tuple[CopyPair, ...] = ()
    concurrent: bool | None = None  # None: toolkit.copy.job.DEFAULT_CONCURRENT
    used_blocks: bool = False
    # restore, plan file only: the firmware mode the restored disk must boot in ("uefi",
    # "bios"; "any": this machine's, a mismatch only warned about), and where a VHDX's
    # log that was never replayed is replayed ("copy", or "in-place" in the image file)
    boot_mode: str = "any"
    vhdx_log: str = "copy"
    # restore, plan file only: a Windows image's storage drivers made to start at boot
    # ("auto": when the target's controller is not one it boots from; "on", "off")
    windows_drivers: str = "auto"
    # restore, plan file only: a Linux image's initramfs rebuilt in a chroot, its fstab
    # checked ("auto", "on": when a Linux root is found; "off")
    linux_initramfs: str = "auto"

    @property
    def expected_sha256(self) -> str | None:
        """The image's SHA-256: rtk.sha256= (sha256:), else a udpcast:// URL's ?sha256=."""
        if self.sha256 or not (self.image and self.image.kind == "udpcast"):
            return self.sha256
        from toolkit.restore import multicast
        return multicast.parse(self.image.location).sha256

    def to_dict(self) -> dict:  # not asdict() of it all: that would hold the CHAP secrets
        im = self.image
        return {**asdict(replace(self, network=(), sources=(), targets=(), image=None,
                                 pairs=())), "pairs": [x.to_dict() for x in self.pairs],
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


def _udpcast(raw: str, where: str) -> Image:
    from toolkit.restore import multicast
    try:
        multicast.parse(raw)
    except ValueError as e:
        raise CmdlineError(f"{where}: {str(e).removeprefix(raw + ': ')}") from None
    return Image("udpcast", raw)


def _image(raw: str, where: str) -> Image:
    if raw.startswith(("http://", "https://")):
        return Image("url", _url(raw, where))
    if raw.startswith("udpcast://"):
        return _udpcast(raw, where)
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
            "consent": _consent, "report": _url, "fallback": _url}


def field_check(path: tuple):
    """The Python check of the value at ``path`` whose message says more than the schema's
    (and which the plan runs anyway), with the name it gives the value; or None."""
    n, top = len(path), path[0] if path else None
    if n == 1 and top in ("image", "disk", "consent", "initiator", "report"):
        return _CONVERT[top], f"plan.{top}"
    if n == 2 and top == "nameservers":
        return kc.ip_address, "plan.nameservers"
    if n == 3 and top == "pairs" and path[2] in KEYS:
        return converter(path[2]), f"plan.pairs[{path[1]}].{path[2]}"
    if n == 3 and top in ("sources", "targets") and path[2] in ("iqn", "host"):
        return ({"iqn": _iqn, "host": check_host}[path[2]],
                f"plan.{top}[{path[1]}].{path[2]}")
    if top == "network" and (n, path[2:3]) in ((3, ("gateway",)), (4, ("dns",))):
        return kc.ip_address, f"plan.network[{path[1]}].{path[2]}"
    return None


def from_cmdline(cl: Cmdline) -> dict:
    """The plan values the command line gives (only those), typed and checked."""
    unknown = [n for n in cl.names() if n.startswith("rtk.") and n not in PARAMS]
    if unknown:
        raise CmdlineError(f"unknown parameter {unknown[0]}: the rtk. parameters are "
                           f"{', '.join(PARAMS)}")
    kc.keymap_from(cl)  # read at boot, checked here too: a wrong one stops the run
    kc.ssh_from(cl)
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
                                      "outage_limit", "concurrent", "used_blocks", "boot_mode",
                                      "vhdx_log", "windows_drivers", "linux_initramfs")
                                      if k in data}
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
    if "pairs" in data:
        out["pairs"] = pairs_from_file(data["pairs"], checked)
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
    check_pairs(plan)  # a copy job of several pairs (plan_pairs)
    img, missing = plan.image, [k for k in ("image", "disk", "consent")
                                if not getattr(plan, k) and not plan.pairs]  # pairs: each has
    if plan.mode == "copy" and img and img.kind != "iscsi":
        raise PlanError(f"rtk.mode=copy copies a disk: rtk.image= must be an iscsi: LUN, not "
                        f"a {img.kind} (use rtk.mode=restore for image files)")
    if plan.mode == "copy" and not img and missing:  # the source: an image or the one source
        missing[0] = "the source: rtk.image=iscsi:<IQN>:<LUN>, or exactly one rtk.source="
        missing = missing[1:] if len(plan.sources) == 1 else missing
    if plan.mode and missing:
        raise PlanError(f"rtk.mode={plan.mode} needs " + ", ".join(
            k if " " in k else f"rtk.{k}= (or {k}: in the plan file)" for k in missing))
    if img and img.kind == "udpcast":
        _check_udpcast(plan)
    elif plan.fallback:
        raise PlanError("rtk.fallback= (fallback: in the plan file) is the HTTP copy of a "
                        "udpcast:// image: this image is not one; drop the fallback")
    if plan.bundle and not plan.report:
        raise PlanError("bundle: true (in the plan file) sends the logs bundle to the report "
                        "server: it needs rtk.report= (or report: in the plan file)")
    return plan


def _check_udpcast(plan: Plan) -> None:
    """A multicast image: a restore, with a SHA-256 (the stream cannot be read twice, so
    the hash is the only proof it is the planned image), the same as any fallback's."""
    from toolkit.restore import multicast
    url_sha = multicast.parse(plan.image.location).sha256
    if plan.mode == "restore" and not (plan.sha256 or url_sha):
        raise PlanError("a udpcast:// image needs its SHA-256 (rtk.sha256=, sha256: in the "
                        "plan file, or ?sha256= in the URL): a multicast stream is read only "
                        "once, and its SHA-256 is the only check that it is the planned image "
                        "before the disk is made valid; `rtk fleet serve` prints it")
    if plan.sha256 and url_sha and plan.sha256 != url_sha:
        raise PlanError("rtk.sha256= differs from the ?sha256= of the udpcast:// image: "
                        "give one SHA-256")




def read_plan(cl: Cmdline | None = None, medium: str = LIVE_MEDIUM) -> Plan:
    """The plan: the command line (/proc/cmdline by default) over its rtk.plan= file.
    Raises CmdlineError or PlanError (both ValueError) with the reason."""
    cl = Cmdline() if cl is None else cl
    given = from_cmdline(cl)
    planned = from_file(load_plan(given["plan"], medium)) if "plan" in given else {}
    return check(Plan(**merge(planned, given)))
