"""What the technician asks for on one NIC, and its validation.

:func:`validate` is the single gate for the menu and ``rtk net set``: every
refusal is a :class:`~toolkit.net.errors.NetRefused` with a message that names
the bad value and the rule, raised before anything is written.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from toolkit.net.errors import NetRefused

MTU_MIN, MTU_MAX = 576, 9216
VLAN_MIN, VLAN_MAX = 1, 4094
IFNAMSIZ = 15  # longest Linux interface name


@dataclass(frozen=True)
class NetSettings:
    """Settings for one NIC; with ``vlan`` they apply to a VLAN interface on it.

    ``address`` is ``ADDRESS/PREFIX`` (static only). ``mtu`` None keeps the
    NIC's own MTU.
    """

    nic: str
    mode: str = "dhcp"  # "dhcp" or "static"
    address: str | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = field(default_factory=tuple)
    mtu: int | None = None
    vlan: int | None = None

    @property
    def iface(self) -> str:
        """The interface these settings configure: the NIC or its VLAN interface."""
        return self.nic if self.vlan is None else vlan_ifname(self.nic, self.vlan)

    def to_dict(self) -> dict:
        return {"nic": self.nic, "iface": self.iface, "mode": self.mode,
                "address": self.address, "gateway": self.gateway, "dns": list(self.dns),
                "mtu": self.mtu, "vlan": self.vlan}

    @classmethod
    def from_dict(cls, d: dict) -> NetSettings:
        return cls(nic=d["nic"], mode=d["mode"], address=d.get("address"),
                   gateway=d.get("gateway"), dns=tuple(d.get("dns") or ()),
                   mtu=d.get("mtu"), vlan=d.get("vlan"))


def vlan_ifname(nic: str, vid: int) -> str:
    """``NIC.VID`` (the usual name), or ``vlanVID`` when that is too long for Linux."""
    name = f"{nic}.{vid}"
    return name if len(name) <= IFNAMSIZ else f"vlan{vid}"


def _interface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in text:
        raise NetRefused(f"address {text!r} has no prefix length: write ADDRESS/PREFIX, "
                         "e.g. 192.168.1.20/24")
    addr, _, prefix = text.partition("/")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise NetRefused(f"bad address {addr!r} in {text!r}: not an IPv4 or IPv6 "
                         "address") from None
    top = ip.max_prefixlen
    if not prefix.isdigit() or not 1 <= int(prefix) <= top:
        raise NetRefused(f"bad prefix length /{prefix} in {text!r}: an IPv{ip.version} "
                         f"prefix is a number from 1 to {top}") from None
    iface = ipaddress.ip_interface(f"{ip}/{int(prefix)}")
    net = iface.network
    if ip.version == 4 and net.prefixlen <= 30:
        if ip == net.network_address:
            raise NetRefused(f"{text} is the network address of {net}: choose a host address")
        if ip == net.broadcast_address:
            raise NetRefused(f"{text} is the broadcast address of {net}: "
                             "choose a host address")
    return iface


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise NetRefused(f"bad {what} {text!r}: not an IPv4 or IPv6 address") from None


def validate(s: NetSettings, known_nics: list[str] | tuple[str, ...]) -> NetSettings:
    """Check ``s`` against the rules and the NICs present; returns it normalized.

    Raises NetRefused (nothing changed) for: unknown NIC, unknown mode, bad
    address or prefix, a gateway outside the address's subnet, bad DNS server,
    MTU outside 576..9216, VLAN id outside 1..4094.
    """
    if s.nic not in known_nics:
        names = ", ".join(sorted(known_nics)) or "none"
        raise NetRefused(f"unknown NIC {s.nic!r}: the NICs here are {names}")
    if s.mode not in ("dhcp", "static"):
        raise NetRefused(f"unknown mode {s.mode!r}: use dhcp or static")
    if s.vlan is not None and not VLAN_MIN <= s.vlan <= VLAN_MAX:
        raise NetRefused(f"VLAN id {s.vlan} is out of range {VLAN_MIN}..{VLAN_MAX}")
    if s.mtu is not None and not MTU_MIN <= s.mtu <= MTU_MAX:
        raise NetRefused(f"MTU {s.mtu} is out of range {MTU_MIN}..{MTU_MAX}")
    dns = tuple(str(_ip(d, "DNS server")) for d in s.dns)
    if s.mode == "dhcp":
        if s.address or s.gateway:
            raise NetRefused("dhcp takes no --address or --gateway: the DHCP server gives "
                             "them (use static to set them)")
        return replace(s, dns=dns)
    if not s.address:
        raise NetRefused("static needs an address: --address ADDRESS/PREFIX, "
                         "e.g. 192.168.1.20/24")
    iface = _interface(s.address)
    if iface.version == 6 and s.mtu is not None and s.mtu < 1280:
        raise NetRefused(f"MTU {s.mtu} is below 1280, the minimum for IPv6")
    gateway = None
    if s.gateway:
        gw = _ip(s.gateway, "gateway")
        if gw.version != iface.version:
            raise NetRefused(f"gateway {gw} is IPv{gw.version} but the address {iface} "
                             f"is IPv{iface.version}")
        if gw not in iface.network:
            raise NetRefused(f"gateway {gw} is outside the subnet {iface.network} of "
                             f"{iface}: a gateway must be directly reachable (check the "
                             "prefix length)")
        if gw == iface.ip:
            raise NetRefused(f"gateway {gw} is this machine's own address")
        gateway = str(gw)
    return replace(s, address=str(iface), gateway=gateway, dns=dns)
