"""Pure generation of systemd-networkd files from validated :class:`NetSettings`.

:func:`render` turns every interface the toolkit configures into file name ->
content. Names start with ``10-rtk-`` so they sort before the image's default
``90-rtk-dhcp.network`` (networkd uses the first file that matches a link).
A VLAN is a ``.netdev`` (Kind=vlan, Id=) plus its own ``.network``, and a
``VLAN=`` line in the parent's ``.network``; a parent with no settings of its
own keeps DHCP, like the image's default.
"""

from __future__ import annotations

from toolkit.net.settings import NetSettings

PREFIX = "10-rtk-"
HEADER = "# Written by the Recovery Toolkit (rtk net); /run is gone at reboot.\n"


def _section(name: str, lines: list[str]) -> str:
    return f"[{name}]\n" + "".join(f"{ln}\n" for ln in lines)


def network_file(s: NetSettings, iface: str, *, mtu: int | None = None,
                 vlans: list[str] = ()) -> str:
    """The ``.network`` file for ``iface`` with the settings ``s`` (``s.vlan`` ignored)."""
    parts = [HEADER, _section("Match", [f"Name={iface}"])]
    if mtu:
        parts.append(_section("Link", [f"MTUBytes={mtu}"]))
    net = []
    if s.mode == "dhcp":
        net += ["DHCP=yes", "LinkLocalAddressing=no", "IPv6AcceptRA=yes"]
    else:
        net += [f"Address={s.address}"]
        if s.gateway:
            net.append(f"Gateway={s.gateway}")
        net += ["LinkLocalAddressing=no", "IPv6AcceptRA=no"]
    net += [f"DNS={d}" for d in s.dns]
    net += [f"VLAN={v}" for v in vlans]
    parts.append(_section("Network", net))
    if s.mode == "dhcp":
        dhcp = ["UseDomains=yes"] + (["UseDNS=no"] if s.dns else [])
        parts.append(_section("DHCPv4", dhcp))
    return "\n".join(parts)


def vlan_netdev(iface: str, vid: int, mtu: int | None = None) -> str:
    """The ``.netdev`` that creates the VLAN interface ``iface`` with tag ``vid``."""
    netdev = [f"Name={iface}", "Kind=vlan"] + ([f"MTUBytes={mtu}"] if mtu else [])
    return "\n".join([HEADER, _section("NetDev", netdev), _section("VLAN", [f"Id={vid}"])])


def render(configs: list[NetSettings], orig_mtu: dict[str, int] | None = None
           ) -> dict[str, str]:
    """File name -> content for every configured interface (the last config of each wins).

    ``orig_mtu`` is each NIC's MTU before the toolkit first touched it: a NIC
    whose settings give no MTU gets it back (networkd never resets an MTU by itself).
    """
    orig_mtu = orig_mtu or {}
    by_iface = {s.iface: s for s in configs}
    parents = sorted({s.nic for s in by_iface.values()})
    files: dict[str, str] = {}
    for nic in parents:
        own = by_iface.get(nic) or NetSettings(nic, "dhcp")
        children = sorted((s for s in by_iface.values() if s.nic == nic and s.vlan),
                          key=lambda s: s.vlan)
        mtu = own.mtu or orig_mtu.get(nic)
        need = max((c.mtu for c in children if c.mtu), default=0)
        if need > (mtu or 1500):
            mtu = need  # a VLAN cannot carry bigger frames than its parent
        files[f"{PREFIX}{nic}.network"] = network_file(
            own, nic, mtu=mtu, vlans=[c.iface for c in children])
        for c in children:
            files[f"{PREFIX}{c.iface}.netdev"] = vlan_netdev(c.iface, c.vlan, c.mtu)
            files[f"{PREFIX}{c.iface}.network"] = network_file(c, c.iface, mtu=c.mtu)
    return files
