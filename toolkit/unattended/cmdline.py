"""The kernel command line, split with the kernel's own rules, and the
dracut-style network values the unattended mode reads from it (``ip=``,
``vlan=``; ``iscsi:`` LUNs are parsed in :mod:`toolkit.unattended.selectors`).

Splitting follows ``next_arg()`` of the kernel's lib/cmdline.c byte for byte:
parameters are separated by the kernel's ``isspace()`` bytes (space, tab,
newline, VT, FF, CR and 0xA0, Latin-1's no-break space); double quotes (no
other quote, no escapes) may enclose a whole parameter (``"rtk.x=a b"``) or
its value (``rtk.x="a b"``) and are removed there; a parameter without ``=``
has no value (None); ``--`` ends the parameters (the rest is init's
arguments). After splitting, ``%XX`` escapes are decoded in our values, so
any character can be written (``%20`` space, ``%22`` quote, ``%25`` percent,
and UTF-8 bytes: the kernel would split ``à``, whose UTF-8 holds 0xA0).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from toolkit.net.settings import NetSettings

PROC_CMDLINE = "/proc/cmdline"
SPACE = frozenset(b" \t\n\v\f\r\xa0")  # isspace() of the kernel's lib/ctype.c
QUOTE, EQUALS = 0x22, 0x3D


class CmdlineError(ValueError):
    """A malformed parameter; the message names it and says what was expected."""


def is_number(text: str) -> bool:
    """Decimal digits 0-9 only (``str.isdigit`` also takes "²" and "١٢", which ``int``
    refuses or reads as another number than the one shown), and not thousands of them
    (which ``int`` refuses too): no number of ours has more than 100."""
    return text.isascii() and text.isdigit() and len(text) <= 100


def split_args(raw: bytes) -> list[tuple[bytes, bytes | None]]:
    """(param, value) pairs exactly as the kernel's ``next_arg()`` cuts ``raw``."""
    buf = bytearray(raw.split(b"\0", 1)[0]) + b"\0"  # a C string

    def skip(p: int) -> int:
        while buf[p] in SPACE:
            p += 1
        return p

    def cstr(p: int) -> bytes:
        return bytes(buf[p:buf.index(0, p)])

    out: list[tuple[bytes, bytes | None]] = []
    pos = skip(0)
    while buf[pos]:
        quoted = in_quote = buf[pos] == QUOTE
        pos += quoted
        i = equals = 0
        while buf[pos + i]:
            c = buf[pos + i]
            if c in SPACE and not in_quote:
                break
            if equals == 0 and c == EQUALS:
                equals = i  # as in C, an "=" in the first byte does not count
            if c == QUOTE:
                in_quote = not in_quote
            i += 1
        end, val = pos + i, None
        if equals:
            buf[pos + equals] = 0
            val = pos + equals + 1
            if buf[val] == QUOTE:  # don't include quotes in the value
                val += 1
                if buf[end - 1] == QUOTE:
                    buf[end - 1] = 0
        if quoted and i > 0 and buf[end - 1] == QUOTE:
            buf[end - 1] = 0
        nxt = end + 1 if buf[end] else end
        buf[end] = 0
        out.append((cstr(pos), None if val is None else cstr(val)))
        pos = skip(nxt)
    return out


_PCT = re.compile(rb"%([0-9A-Fa-f]{2})?")


def decode(value: str | bytes, name: str) -> str:
    """``value`` with its ``%XX`` escapes decoded (UTF-8); errors name ``name``."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")

    def byte(m: re.Match) -> bytes:
        if m.group(1) is None:
            raise CmdlineError(f"{name}: '%' must start an escape %XX (two hex digits); "
                               "write %25 for a percent sign")
        return bytes([int(m.group(1), 16)])

    try:
        return _PCT.sub(byte, raw).decode("utf-8")
    except UnicodeDecodeError:
        raise CmdlineError(f"{name}: not valid UTF-8: percent-encode non-ASCII characters "
                           "(%C3%A0 for à): the kernel splits parameters at byte 0xA0") from None


def encode(value: str) -> str:
    """``value`` safe for the command line: ``%``, ``"``, control characters and
    non-ASCII percent-encoded; spaces kept (:func:`quote_param` quotes them)."""
    return "".join(c if c == " " or ("!" <= c <= "~" and c not in '%"') else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                   for c in value)


def quote_param(name: str, value: str | None) -> str:
    """One parameter as the kernel reads it back: ``name``, ``name=v`` or ``name="v w"``."""
    if value is None:
        return name
    v = encode(value)
    return f'{name}="{v}"' if " " in v else f"{name}={v}"


class Cmdline:
    """The parameters of a kernel command line (``/proc/cmdline`` unless ``text`` is given).

    Values are kept raw (quotes removed, escapes not yet decoded): :meth:`get`
    decodes; :meth:`raw` is for values parsed further (URLs, ``iscsi:``).
    """

    def __init__(self, text: str | bytes | None = None, path: str = PROC_CMDLINE):
        if text is None:
            with open(path, "rb") as f:
                text = f.read()
        raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        pairs = split_args(raw)
        end = next((k for k, (p, v) in enumerate(pairs) if p == b"--" and v is None),
                   len(pairs))
        self.params = [(p.decode("utf-8", "replace"), v) for p, v in pairs[:end]]
        self.init_args = [(p if v is None else p + b"=" + v).decode("utf-8", "replace")
                          for p, v in pairs[end + 1:]]  # as the kernel hands them to init

    def __repr__(self) -> str:  # values may hold CHAP secrets
        return f"<Cmdline {len(self.params)} parameters>"

    def names(self) -> list[str]:
        return [p for p, _ in self.params]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def _values(self, name: str) -> list[bytes]:
        out = []
        for p, v in self.params:
            if p == name:
                if v is None:
                    raise CmdlineError(f"{name} needs a value: write {name}=VALUE")
                out.append(v)
        return out

    def raw_all(self, name: str) -> list[str]:
        return [v.decode("utf-8", "surrogateescape") for v in self._values(name)]

    def raw(self, name: str) -> str | None:
        """The last value of ``name`` (the last one wins), escapes not decoded."""
        values = self.raw_all(name)
        return values[-1] if values else None

    def get_all(self, name: str) -> list[str]:
        return [decode(v, name) for v in self._values(name)]

    def get(self, name: str) -> str | None:
        values = self._values(name)
        return decode(values[-1], name) if values else None


# --- network: dracut's ip=, vlan=, nameserver= -----------------------------------

AUTOCONF = ("dhcp", "on", "any", "dhcp6", "auto6", "either6", "single-dhcp")


def _fields(value: str, param: str) -> list[str]:
    """``value`` split at ``:``; a ``[...]`` field (IPv6) is one field, brackets removed."""
    out, rest = [], value
    while True:
        if rest.startswith("["):
            field, close, rest = rest[1:].partition("]")
            if not close or (rest and not rest.startswith(":")):
                raise CmdlineError(f"{param}={value}: unbalanced [ ] around an IPv6 address")
            out.append(field)
            if not rest:
                return out
            rest = rest[1:]
        else:
            field, sep, rest = rest.partition(":")
            out.append(field)
            if not sep:
                return out


def _mtu(text: str, param: str) -> int | None:
    if not text:
        return None
    if not is_number(text):
        raise CmdlineError(f"{param}: MTU {text[:20]!r}{'...' if len(text) > 20 else ''} "
                           "is not a number (576 to 9216)")
    return int(text)


def _prefix(mask: str, param: str) -> int:
    if is_number(mask):
        return int(mask)
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        raise CmdlineError(f"{param}: netmask {mask!r} is neither a dotted netmask "
                           "(255.255.255.0) nor a prefix length (24)") from None


def parse_ip(value: str) -> NetSettings | None:
    """One dracut ``ip=`` value -> NetSettings (not yet validated against the NICs);
    None for ``ip=dhcp`` & co. on every interface (the live system's default)."""
    p = f"ip={value}"
    f = _fields(value, "ip")
    if len(f) == 1:
        if f[0] in AUTOCONF:
            return None
        raise CmdlineError(f"{p}: expected dhcp, dhcp6, on, any, auto6, "
                           "<interface>:dhcp[:<mtu>] or <client-IP>:[<peer>]:<gateway-IP>:"
                           "<netmask>:<hostname>:<interface>:none[:<mtu>]")
    if f[1] in AUTOCONF or f[1] == "link6":
        if f[1] == "link6" or len(f) > 3:
            raise CmdlineError(f"{p}: " + ("setting a MAC address is" if len(f) > 3 else
                                           "link6 (link-local only) is") + " not supported")
        if not f[0]:
            raise CmdlineError(f"{p}: no interface before :{f[1]}")
        return NetSettings(nic=f[0], mode="dhcp", mtu=_mtu(f[2] if len(f) > 2 else "", p))
    if len(f) < 7:
        raise CmdlineError(f"{p}: expected <client-IP>:[<peer>]:<gateway-IP>:<netmask>:"
                           f"<hostname>:<interface>:{{none|off|dhcp|...}} (7 fields, got "
                           f"{len(f)})")
    client, peer, gateway, mask, _hostname, iface, auto = f[:7]
    extra, mtu, dns = f[7:], None, ()
    if peer:
        raise CmdlineError(f"{p}: a <peer> (point-to-point) is not supported: leave it empty")
    if not iface:
        raise CmdlineError(f"{p}: name the <interface> (6th field)")
    if extra and (extra[0] == "" or is_number(extra[0])):
        mtu = _mtu(extra[0], p)
        if any(extra[1:]):
            raise CmdlineError(f"{p}: setting a MAC address is not supported")
    elif extra:
        if len(extra) > 2:
            raise CmdlineError(f"{p}: after the autoconf field, expected [<mtu>] or "
                               "[<dns1>][:<dns2>]")
        dns = tuple(d for d in extra if d)
    if auto in AUTOCONF and not client and not gateway and not mask:
        return NetSettings(nic=iface, mode="dhcp", mtu=mtu, dns=dns)
    if auto == "ibft":
        raise CmdlineError(f"{p}: ibft is not supported: give the address")
    if auto not in ("none", "off", ""):
        raise CmdlineError(f"{p}: autoconf {auto!r} with a client IP: use none or off for a "
                           "static address, or ip=<interface>:dhcp")
    if not client:
        raise CmdlineError(f"{p}: a static address needs the <client-IP> (1st field)")
    if "/" not in client:
        if not mask:
            raise CmdlineError(f"{p}: a static address needs the <netmask> (4th field)")
        client = f"{client}/{_prefix(mask, p)}"
    return NetSettings(nic=iface, mode="static", address=client, gateway=gateway or None,
                       mtu=mtu, dns=dns)


def parse_vlan(value: str) -> tuple[str, str, int]:
    """dracut ``vlan=<vlanname>:<phys-dev>`` -> (vlanname, phys-dev, VLAN id). Names:
    vlan0005, vlan5, eth0.0005, eth0.5 (the id is read from the name)."""
    name, sep, phys = value.partition(":")
    m = re.fullmatch(r"(?:vlan|(.+)\.)0*([0-9]+)", name)
    if not sep or not phys or not m or (m.group(1) and m.group(1) != phys):
        raise CmdlineError(f"vlan={value}: expected vlan=<vlanname>:<phys-dev> with a name "
                           "vlan<ID> or <phys-dev>.<ID>, e.g. vlan=eth0.42:eth0")
    return name, phys, int(m.group(2))


def ip_address(value: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise CmdlineError(f"{where}={value}: not an IPv4 or IPv6 address") from None


def network_from(cl: Cmdline) -> dict:
    """``{"network": (NetSettings, ...), "nameservers": (...)}`` from ``ip=``, ``vlan=``
    and ``nameserver=`` (only the keys given). The last ``ip=`` for an interface wins;
    nameservers go to every interface that has none of its own."""
    vlans = {name: (phys, vid) for name, phys, vid in map(parse_vlan, cl.get_all("vlan"))}
    settings: dict[str, NetSettings] = {}
    for value in cl.get_all("ip"):
        s = parse_ip(value)
        if s and s.nic in vlans:
            s = replace(s, nic=vlans[s.nic][0], vlan=vlans[s.nic][1])
        if s:
            settings[s.iface] = s
    for phys, vid in vlans.values():
        s = NetSettings(nic=phys, vlan=vid)
        settings.setdefault(s.iface, s)
    dns = tuple(ip_address(v, "nameserver") for v in cl.get_all("nameserver"))
    out: dict = {"nameservers": dns} if dns else {}
    if settings:
        out["network"] = tuple(replace(s, dns=s.dns or dns) for s in settings.values())
    return out


# --- the console's keyboard and remote access: rtk.keymap=, rtk.ssh=, rtk.ssh_keys= -----

def keymap_from(cl: Cmdline) -> str | None:
    """``rtk.keymap=NAME``: the layout's name (:data:`toolkit.system.keymap.LAYOUTS`)."""
    from toolkit.system import keymap

    if (v := cl.get("rtk.keymap")) is None:
        return None
    try:
        return keymap.layout(v, "rtk.keymap").name
    except keymap.KeymapError as e:
        raise CmdlineError(str(e)) from None


def ssh_from(cl: Cmdline) -> dict:
    """``rtk.ssh=TYPE:BASE64[,...]`` (repeatable) and ``rtk.ssh_keys=URL``:
    ``{"keys": [PublicKey...], "keys_url": URL}``, only the keys given, checked
    (:mod:`toolkit.system.remote_keys`)."""
    from toolkit.system import remote_keys

    out: dict = {}
    try:
        keys = [k for v in cl.get_all("rtk.ssh") for k in remote_keys.parse_inline(v)]
        if keys:
            out["keys"] = keys
        if (url := cl.raw("rtk.ssh_keys")) is not None:
            out["keys_url"] = remote_keys.check_url(url)
    except remote_keys.KeyRefused as e:
        raise CmdlineError(str(e)) from None
    return out
