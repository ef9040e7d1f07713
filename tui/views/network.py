"""Network screens: the NICs, one NIC's settings, a ping."""

from __future__ import annotations

import urwid

from tui.widgets.base import SelectableLine, View
from tui.widgets.form import Field, Form


def nic_markup(n) -> list:
    link = ("ok", "link up") if n.link_up else ("warn", "no link" if n.carrier is False
                                                  else n.operstate)
    speed = f"{n.speed_mbps} Mb/s" if n.speed_mbps else "speed ?"
    what = f"VLAN {n.vlan_id} on {n.vlan_parent}" if n.vlan_id else (n.driver or n.kind or "-")
    addrs = ", ".join(f"{a} (DHCP)" if a in n.dhcp_addresses else a for a in n.addresses)
    return [("title", f"{n.name:<14}"), link, f"  {speed}  MTU {n.mtu}  {n.mac or ''}  {what}\n",
            ("dim", f"    {addrs or 'no address'}")]


class NetworkView(View):
    title = "Network"
    hints = (("Enter", "configure"), ("g", "ping"), ("F5", "refresh"), ("Esc", "back"))

    def __init__(self, controller, nics, messages=()):
        self.controller = controller
        self.keys = {"g": controller.show_ping, "f5": controller.refresh}
        rows: list = [urwid.Text(("warn", m)) for m in messages]
        for n in nics:
            rows += [SelectableLine(nic_markup(n), lambda n=n: controller.configure(n)),
                     urwid.Divider("─")]
        if not nics:
            rows.append(urwid.Text("No network interface found."))
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(rows)))


class NicForm(Form):
    address = Field("Address/prefix")
    gateway = Field("Gateway")
    dns = Field("DNS (spaces between)")
    mtu = Field("MTU")
    vlan = Field("VLAN tag")

    def __init__(self, nic, on_submit):
        self.title = f"Network: {nic.name}"
        self.nic = nic
        group: list = []
        static = [a for a in nic.addresses if a not in nic.dhcp_addresses and ":" not in a]
        self.dhcp = urwid.RadioButton(group, "DHCP", state=not static)
        self.static = urwid.RadioButton(group, "static", state=bool(static))
        super().__init__(
            f"{nic.name}: choose DHCP, or static with address/prefix (10.1.2.3/24). A VLAN "
            "tag makes a tagged interface on this NIC with these settings; jumbo frames: MTU "
            "9000. Applied at once.", "Apply", on_submit,
            head=(urwid.Columns([(12, self.dhcp), (12, self.static)]),),
            address=static[0] if static else "", mtu=str(nic.mtu or ""))


class PingForm(Form):
    title = "Network: ping"
    host = Field("Address", required="Type an address.")

    def __init__(self, on_submit, last: str = ""):
        super().__init__("Check that a portal or server answers.", "Ping", on_submit, host=last)
