"""Which disks the unattended mode touches, named by stable identity only.

``rtk.disk=`` (and ``rtk.image=iscsi:IQN:LUN``) is parsed into a
:class:`Selector`; :func:`select` finds the one :class:`~toolkit.disks.inventory.Disk`
it names, :func:`check_consent` checks ``rtk.consent=`` against that disk.
Kernel names (``/dev/sdb``) are refused: they change between boots. The
iSCSI LUNs to attach (``rtk.source=``, ``rtk.target=``, RFC 4173 form) are
:class:`IscsiLun`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from toolkit.disks.identity import identity_of, wwn_key
from toolkit.disks.inventory import Disk
from toolkit.iscsi.adm import Chap
from toolkit.iscsi.parse import valid_iscsi_name
from toolkit.iscsi.portal import DEFAULT_PORT, format_portal
from toolkit.unattended.cmdline import CmdlineError, decode, is_number

SOURCE, TARGET = "SOURCE", "TARGET"
KINDS = ("serial", "wwn", "by-id", "by-path", "iscsi", "rule")
TRANSPORTS = ("sata", "sas", "nvme", "usb", "iscsi", "virtio", "fc", "scsi", "mmc", "loop",
              "dm", "md", "cdrom", "floppy", "other")
NOT_WRITABLE = ("loop", "cdrom", "floppy")  # a rule skips these unless it names them
_KERNEL_NAME = re.compile(r"(/dev/)?((s|v|h|xv)d[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+|"
                          r"sr\d+|dm-\d+|md\d+)(p?\d+)?")


class SelectError(ValueError):
    """No disk, or more than one, matches a selector."""


class ConsentError(ValueError):
    """rtk.consent= does not name the disk that was found: nothing may be written."""


@dataclass(frozen=True)
class Rule:
    field: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


@dataclass(frozen=True)
class Selector:
    kind: str  # one of KINDS
    value: str  # what follows "kind:"
    iqn: str | None = None  # iscsi:
    lun: int | None = None
    rules: tuple[Rule, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


_RULE = re.compile(r"\s*([a-z_]+)\s*(>=|<=|!=|=|~|>|<)\s*(.*?)\s*")
_RULE_OPS = {"transport": "= !=", "size": "= >= <= > <", "model": "= != ~",
             "vendor": "= != ~", "serial": "= != ~", "wwn": "= !=", "iqn": "= != ~",
             "lun": "=", "rotational": "=", "removable": "="}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(i?)b?", re.I)


def parse_size(text: str) -> int:
    """``100G`` (decimal, as disk vendors count), ``100GiB`` (binary), ``512`` bytes."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 100G, 1.5T, 64GiB, 512)")
    power = "kmgtp".find(m.group(2).lower()) + 1 if m.group(2) else 0
    size = float(m.group(1)) * (1024 if m.group(3) else 1000) ** power
    if size >= 2 ** 64:  # (and an infinite float of hundreds of digits)
        raise ValueError(f"{text.strip()[:40]!r} is too large for a disk size")
    return int(size)


def _rule(term: str, param: str) -> Rule:
    m = _RULE.fullmatch(term)
    if not m or m.group(1) not in _RULE_OPS or m.group(2) not in _RULE_OPS[m.group(1)].split():
        fields = ", ".join(f"{k} ({v})" for k, v in _RULE_OPS.items())
        raise CmdlineError(f"{param}: bad rule term {term!r}: expected FIELD OP VALUE with "
                           f"FIELD (OPs) one of {fields}")
    field, op, value = m.group(1), m.group(2), decode(m.group(3), param)
    try:
        if field == "size":
            parse_size(value)
        elif field == "lun" and not is_number(value):
            raise ValueError(f"LUN {value!r} is not a number")
        elif field in ("rotational", "removable") and value not in ("yes", "no"):
            raise ValueError(f"{field} is yes or no, not {value!r}")
        elif field == "transport" and value not in TRANSPORTS:
            raise ValueError(f"unknown transport {value!r}: one of {', '.join(TRANSPORTS)}")
        elif not value:
            raise ValueError(f"{field}{op} needs a value")
    except ValueError as e:
        raise CmdlineError(f"{param}: rule term {term!r}: {e}") from None
    return Rule(field, op, value)


def parse_selector(text: str, param: str = "rtk.disk") -> Selector:
    """``serial:X | wwn:X | by-id:NAME | by-path:NAME | iscsi:IQN:LUN | rule:T,T,...``
    (``text`` raw: %-escapes are decoded after splitting)."""
    for kind in ("by-id", "by-path"):
        if text.startswith(f"/dev/disk/{kind}/"):
            text = f"{kind}:{text[len(kind) + 11:]}"
    if text.startswith("/dev/") or _KERNEL_NAME.fullmatch(text):
        raise CmdlineError(f"{param}={text}: kernel names such as /dev/sdb change between "
                           "boots (probe order, a USB stick, an iSCSI LUN logging in first), so "
                           "they could name another disk: name it by serial:, wwn:, by-id:, "
                           "by-path:, iscsi:IQN:LUN or rule:")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise CmdlineError(f"{param}={text}: expected one of " +
                           ", ".join(f"{k}:..." for k in KINDS))
    if kind == "rule":
        rules = tuple(_rule(t, param) for t in rest.split(","))
        return Selector(kind, ",".join(map(str, rules)), rules=rules)
    value = decode(rest, param).strip()
    if not value:
        raise CmdlineError(f"{param}={text}: nothing after {kind}:")
    if kind != "iscsi":
        return Selector(kind, value)
    iqn, _, lun = value.rpartition(":")
    if not is_number(lun) or not valid_iscsi_name(iqn):
        raise CmdlineError(f"{param}={text}: expected iscsi:<target IQN>:<LUN>, e.g. "
                           "iscsi:iqn.2001-05.com.example:store1:0")
    return Selector(kind, value, iqn=iqn, lun=int(lun))


def parse_consent(text: str, param: str = "rtk.consent") -> Selector:
    sel = parse_selector(text, param)
    if sel.kind not in ("serial", "wwn"):
        raise CmdlineError(f"{param}={text}: consent is serial:<serial> or wwn:<wwn> of "
                           "the disk to be overwritten")
    return sel


def _base(names: list[str]) -> list[str]:
    return [os.path.basename(n) for n in names]


def _rule_matches(d: Disk, r: Rule) -> bool:
    if r.field == "size":
        want, have = parse_size(r.value), d.size
        return {"=": have == want, ">=": have >= want, "<=": have <= want,
                ">": have > want, "<": have < want}[r.op]
    if r.field in ("rotational", "removable"):
        return getattr(d, r.field) == (r.value == "yes")
    if r.field == "lun":
        return d.iscsi is not None and d.iscsi.lun == int(r.value)
    have = {"iqn": d.iscsi.target if d.iscsi else None, "wwn": wwn_key(d.wwn) or None}.get(
        r.field, getattr(d, r.field, None))
    want = wwn_key(r.value) if r.field == "wwn" else r.value
    if r.op == "~":
        return have is not None and want.lower() in have.lower()
    return (have == want) == (r.op == "=")


def matches(d: Disk, sel: Selector) -> bool:
    if sel.kind == "serial":
        return d.serial is not None and d.serial.strip() == sel.value
    if sel.kind == "wwn":
        return bool(d.wwn) and wwn_key(d.wwn) == wwn_key(sel.value)
    if sel.kind in ("by-id", "by-path"):
        links = d.by_id if sel.kind == "by-id" else d.by_path
        return os.path.basename(sel.value) in _base(links)
    if sel.kind == "iscsi":
        return d.iscsi is not None and (d.iscsi.target, d.iscsi.lun) == (sel.iqn, sel.lun)
    named = any(r.field == "transport" and r.op == "=" and r.value in NOT_WRITABLE
                for r in sel.rules)
    if d.transport in NOT_WRITABLE and not named:
        return False
    return all(_rule_matches(d, r) for r in sel.rules)


def describe(d: Disk) -> str:
    """``sdb (iscsi, 33.6 MB, serial X, IQN LUN 1)``: the disk's identity record in a line."""
    return identity_of(d).summary()


def select(disks: list[Disk], sel: Selector, param: str = "rtk.disk") -> Disk:
    """The one disk ``sel`` names; SelectError (listing the disks) for none or several."""
    found = [d for d in disks if matches(d, sel)]
    if len(found) == 1:
        return found[0]
    if not found:
        here = "; ".join(describe(d) for d in disks) or "none"
        raise SelectError(f"no disk matches {param}={sel}: the disks here are {here}")
    raise SelectError(f"{param}={sel} matches {len(found)} disks, it must match exactly one: "
                      + "; ".join(describe(d) for d in found) +
                      ": add rule terms, or use serial: or wwn:")


def check_consent(disk: Disk, consent: Selector, param: str = "rtk.consent") -> None:
    """Raise ConsentError unless ``consent`` (serial: or wwn:) names ``disk``."""
    if consent.kind not in ("serial", "wwn"):
        raise ConsentError(f"{param}={consent}: consent is serial: or wwn:")
    if not disk.serial and not disk.wwn:
        raise ConsentError(f"{disk.name} has neither serial nor WWN, so no consent can name "
                           "it: write it from the menu instead")
    if not matches(disk, consent):
        raise ConsentError(f"{param}={consent} does not name the disk found, "
                           f"{describe(disk)}: nothing was written")


# --- iSCSI: RFC 4173 / dracut netroot=iscsi: ------------------------------------

@dataclass(frozen=True)
class IscsiLun:
    """A LUN to attach. ``chap``/``mutual`` secrets never show in repr or to_dict."""

    role: str  # SOURCE or TARGET
    host: str
    iqn: str
    port: int = DEFAULT_PORT
    lun: int = 0
    chap: Chap | None = None
    mutual: Chap | None = None

    @property
    def portal(self) -> str:
        return format_portal(self.host, self.port)

    def to_dict(self) -> dict:
        return {"role": self.role, "host": self.host, "port": self.port, "lun": self.lun,
                "iqn": self.iqn, "chap": self.chap.to_dict() if self.chap else None,
                "mutual": self.mutual.to_dict() if self.mutual else None}


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
def check_host(text: str, where: str) -> str:
    """A server name, or an IPv4 or IPv6 address (brackets optional), as :class:`IscsiLun`
    holds it (IPv6 without brackets); CmdlineError otherwise."""
    h = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if not _HOST.fullmatch(h):
        raise CmdlineError(f"{where}: {text[:60]!r} is not a server name or address (IPv6 "
                           "goes in brackets: [2001:db8::1])")
    return h


ISCSI_FORM = ("iscsi:[<username>:<password>[:<reverse>:<password>]@]<servername>:"
              "[<protocol>]:[<port>][:[<iscsi_iface_name>]:[<netdev_name>]]:[<LUN>]:<targetname>")


def parse_iscsi(value: str, role: str, param: str) -> IscsiLun:
    """``iscsi:...`` (raw: each field is %-decoded after splitting, so %3A and %40 may
    stand in a password). Errors show the value with the credentials masked."""
    shown = re.sub(r"^iscsi:[^@]*@", "iscsi:***@", value)
    where = f"{param}={shown}"
    if not value.startswith("iscsi:"):
        raise CmdlineError(f"{where}: expected {ISCSI_FORM}")
    v, chap, mutual = value[6:], None, None
    at = v.find("@")
    if at >= 0 and v[at + 1:].count(":") >= 4:
        auth, v = v[:at], v[at + 1:]
        if auth:
            parts = [decode(x, param) for x in auth.split(":")]
            if len(parts) not in (2, 4) or not all(parts):
                raise CmdlineError(f"{where}: before @ expected <username>:<password> or "
                                   "<username>:<password>:<reverse>:<password>, none empty")
            chap = Chap(parts[0], parts[1])
            mutual = Chap(parts[2], parts[3]) if len(parts) == 4 else None
    if v.startswith("["):
        host, close, rest = v[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise CmdlineError(f"{where}: unbalanced [ ] around the IPv6 server address")
        rest = rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise CmdlineError(f"{where}: [{host}] is not an IPv6 address") from None
    else:
        host, _, rest = v.partition(":")
        if not _HOST.fullmatch(host):
            raise CmdlineError(f"{where}: {host!r} is not a server name or address "
                               "(IPv6 goes in brackets: [2001:db8::1])")
    parts = rest.split(":")
    k = next((k for k, x in enumerate(parts) if x.startswith(("iqn.", "eui.", "naa."))), None)
    if k is None or k not in (3, 4, 5):
        raise CmdlineError(f"{where}: expected {ISCSI_FORM}")
    iqn, fields = ":".join(parts[k:]), parts[:k]
    proto, port, lun = fields[0], fields[1], fields[-1]
    if any(fields[2:-1]):
        raise CmdlineError(f"{where}: <iscsi_iface_name> and <netdev_name> are not "
                           "supported: leave them empty")
    if proto not in ("", "6"):
        raise CmdlineError(f"{where}: protocol {proto!r}: only 6 (TCP) is supported")
    if port and not (is_number(port) and 1 <= int(port) <= 65535):
        raise CmdlineError(f"{where}: port {port!r} is not a number from 1 to 65535")
    if lun and not is_number(lun):
        raise CmdlineError(f"{where}: LUN {lun!r} is not a decimal number (the LUN as "
                           "Linux numbers it, lun-N in /dev/disk/by-path)")
    if not valid_iscsi_name(iqn):
        raise CmdlineError(f"{where}: {iqn!r} is not an iSCSI name (iqn.YYYY-MM.domain:name, "
                           "eui. or naa.)")
    return IscsiLun(role, host, iqn, int(port or DEFAULT_PORT), int(lun or 0), chap, mutual)
