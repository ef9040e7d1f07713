"""The NICs of this machine: link, carrier, speed, MAC, driver, MTU, addresses, VLAN.

Link facts come from sysfs (/sys/class/net/NIC: carrier, operstate, address,
the driver link of the device) and psutil (speed, MTU, up); addresses and the
VLAN tag from ``ip -d -j addr`` (iproute2, in the image), which also says which
addresses DHCP gave. :func:`nic_from` is pure, so the tests replay real output.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from toolkit.system import tools

SYS_NET = "/sys/class/net"


@dataclass
class Nic:
    """One network interface as the technician needs to see it."""

    name: str
    mac: str | None = None
    driver: str | None = None  # kernel module, e.g. "virtio_net", "ice"; None if virtual
    physical: bool = False  # has a device (PCI, USB...) behind it
    kind: str | None = None  # "vlan", "bridge", "bond"... for virtual interfaces
    operstate: str = "unknown"  # "up", "down", "lowerlayerdown"...
    carrier: bool | None = None  # cable/link detected; None when the NIC is down
    speed_mbps: int | None = None  # None when unknown (no link, virtio)
    mtu: int | None = None
    addresses: list[str] = field(default_factory=list)  # "10.0.2.15/24", IPv4 first
    dhcp_addresses: list[str] = field(default_factory=list)  # those DHCP gave
    vlan_id: int | None = None
    vlan_parent: str | None = None

    @property
    def link_up(self) -> bool:
        return bool(self.carrier) and self.operstate in ("up", "unknown")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["link_up"] = self.link_up
        return d


def parse_ip_json(text: str) -> dict[str, dict]:
    """``ip -d -j addr`` output -> interface name -> its object."""
    return {o["ifname"]: o for o in json.loads(text or "[]") if "ifname" in o}


def _addresses(info: dict) -> tuple[list[str], list[str]]:
    addrs, dynamic = [], []
    for a in sorted(info.get("addr_info", []), key=lambda a: a.get("family") != "inet"):
        if a.get("family") not in ("inet", "inet6") or a.get("scope") == "link":
            continue
        text = f"{a['local']}/{a['prefixlen']}"
        addrs.append(text)
        if a.get("dynamic"):
            dynamic.append(text)
    return addrs, dynamic


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def nic_from(name: str, ip: dict, sysfs: dict, speed: int | None = None) -> Nic:
    """Build a Nic from its ``ip -d -j addr`` object and sysfs facts (pure).

    ``sysfs`` keys: address, operstate, carrier, mtu, speed (strings as read;
    carrier/speed None where the kernel refuses the read), driver (module name
    or None), device (bool). ``speed`` (psutil, Mb/s) wins over sysfs when > 0.
    """
    linkinfo = ip.get("linkinfo") or {}
    kind = linkinfo.get("info_kind")
    data = linkinfo.get("info_data") or {}
    addrs, dynamic = _addresses(ip)
    spd = speed if speed and speed > 0 else _int(sysfs.get("speed"))
    carrier = sysfs.get("carrier")
    return Nic(
        name=name,
        mac=(sysfs.get("address") or ip.get("address") or None),
        driver=sysfs.get("driver"),
        physical=bool(sysfs.get("device")),
        kind=kind,
        operstate=(sysfs.get("operstate") or ip.get("operstate") or "unknown").lower(),
        carrier=None if carrier in (None, "") else carrier.strip() == "1",
        speed_mbps=spd if spd and spd > 0 else None,
        mtu=_int(sysfs.get("mtu")) or ip.get("mtu"),
        addresses=addrs,
        dhcp_addresses=dynamic,
        vlan_id=data.get("id") if kind == "vlan" else None,
        vlan_parent=ip.get("link") if kind == "vlan" else None,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # EINVAL: speed/carrier of a NIC that is down
        return None


def read_sysfs(name: str, root: str = SYS_NET) -> dict:
    """The sysfs facts :func:`nic_from` needs, for one interface."""
    base = Path(root) / name
    facts = {k: _read(base / k) for k in ("address", "operstate", "carrier", "mtu", "speed")}
    drv = base / "device" / "driver"
    facts["device"] = (base / "device").exists()
    facts["driver"] = os.path.basename(os.readlink(drv)) if drv.is_symlink() else None
    return facts


def nic_names(root: str = SYS_NET) -> list[str]:
    """Every interface but loopback, sorted."""
    try:
        return sorted(n for n in os.listdir(root) if n != "lo")
    except OSError:
        return []


def ip_json() -> dict[str, dict]:
    """Run ``ip -d -j addr`` (empty when iproute2 is missing or fails)."""
    try:
        out = tools.run(["ip", "-d", "-j", "addr"], timeout=10).stdout
    except tools.ToolError:  # logged by tools.run
        return {}
    return parse_ip_json(out)


def list_nics() -> list[Nic]:
    """Every NIC except loopback: physical ones first, then virtual, each by name."""
    ip = ip_json()
    stats = psutil.net_if_stats()
    nics = []
    for name in nic_names():
        st = stats.get(name)
        nics.append(nic_from(name, ip.get(name, {}), read_sysfs(name),
                             speed=st.speed if st else None))
    return sorted(nics, key=lambda n: (not n.physical, n.name))


def get_nic(name: str) -> Nic | None:
    """One NIC by name, or None."""
    return next((n for n in list_nics() if n.name == name), None)
