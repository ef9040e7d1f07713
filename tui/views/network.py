"""Network screens: the NICs, one NIC's settings, a ping."""

from __future__ import annotations

import urwid

from tui.views.iscsi import _Form
from tui.widgets.base import SelectableLine, View


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
        rows: list = [urwid.Text(("warn", m)) for m in messages]
        for n in nics:
            rows += [SelectableLine(nic_markup(n), lambda n=n: controller.configure(n)),
                     urwid.Divider("─")]
        if not nics:
            rows.append(urwid.Text("No network interface found."))
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(rows)))

    def keypress(self, size, key):
        if key == "g":
            self.controller.show_ping()
        elif key == "f5":
            self.controller.refresh()
        else:
            return super().keypress(size, key)
        return None


class NicForm(_Form):
    def __init__(self, nic, on_submit):
        self.title = f"Network: {nic.name}"
        self.nic = nic
        group: list = []
        static = [a for a in nic.addresses if a not in nic.dhcp_addresses and ":" not in a]
        self.dhcp = urwid.RadioButton(group, "DHCP", state=not static)
        self.static = urwid.RadioButton(group, "static", state=bool(static))
        self.address = urwid.Edit("", static[0] if static else "")
        self.gateway = urwid.Edit("")
        self.dns = urwid.Edit("")
        self.mtu = urwid.Edit("", str(nic.mtu or ""))
        self.vlan = urwid.Edit("")
        super().__init__(
            f"{nic.name}: choose DHCP, or static with address/prefix (10.1.2.3/24). A VLAN "
            "tag makes a tagged interface on this NIC with these settings; jumbo frames: MTU "
            "9000. Applied at once.",
            [("Address/prefix", self.address), ("Gateway", self.gateway),
             ("DNS (spaces between)", self.dns), ("MTU", self.mtu), ("VLAN tag", self.vlan)],
            "Apply", lambda: on_submit(self))
        self.listbox.body.insert(2, urwid.Columns([(12, self.dhcp), (12, self.static)]))
        self.listbox.focus_position = 2


class PingForm(_Form):
    title = "Network: ping"

    def __init__(self, on_submit, last: str = ""):
        self.host = urwid.Edit("", last)
        super().__init__("Check that a portal or server answers.", [("Address", self.host)],
                         "Ping", lambda: on_submit(self))
