"""Network: list NICs, apply DHCP/static/MTU/VLAN at once, ping."""

from __future__ import annotations

from toolkit.net import apply as net_apply
from toolkit.net import nics as net_nics
from toolkit.net import ping as net_ping
from toolkit.net.errors import NetError, NetRefused
from toolkit.net.settings import NetSettings, validate
from tui.views.network import NetworkView, NicForm, PingForm


def _int_or_none(text: str, what: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise NetRefused(f"{what} must be a number, not {text!r}")
    return int(text)


class NetworkController:
    def __init__(self, app):
        self.app = app
        self.last_ping = ""

    def show(self, messages=()) -> None:
        self.app.background("Reading network interfaces...", net_nics.list_nics,
                            lambda nics: self.app.replace_view_of(
                                NetworkView, NetworkView(self, nics, messages)), self._error)

    refresh = show

    def _error(self, e: Exception) -> None:
        self.app.dialog("Network", str(e), [("OK", self.app.close_dialog)])

    def configure(self, nic) -> None:
        self.app.push(NicForm(nic, self.apply))

    def settings_from(self, form: NicForm) -> NetSettings:
        """The form as validated settings; raises NetRefused with what is wrong."""
        s = NetSettings(
            nic=form.nic.name, mode="static" if form.static.state else "dhcp",
            address=form.address.edit_text.strip() or None,
            gateway=form.gateway.edit_text.strip() or None,
            dns=tuple(form.dns.edit_text.split()),
            mtu=_int_or_none(form.mtu.edit_text, "MTU"),
            vlan=_int_or_none(form.vlan.edit_text, "VLAN tag"))
        return validate(s, net_nics.nic_names())

    def apply(self, form: NicForm) -> None:
        try:
            s = self.settings_from(form)
        except NetRefused as e:
            form.show_error(str(e))
            return

        def done(result) -> None:
            self.app.pop()
            self.show([f"{result.iface}: {', '.join(result.addresses) or 'no address yet'}, "
                       f"MTU {result.mtu} ({result.seconds:.1f} s)"])

        def failed(e: Exception) -> None:
            if isinstance(e, NetRefused | NetError):
                form.show_error(str(e))
            else:
                self._error(e)

        self.app.background(f"Applying {s.mode} settings to {s.iface}...",
                            lambda: net_apply.apply_settings(s), done, failed)

    def show_ping(self) -> None:
        self.app.push(PingForm(self.ping, self.last_ping))

    def ping(self, form: PingForm) -> None:
        host = form.host.edit_text.strip()  # typed: the form checks that
        self.last_ping = host
        self.app.background(f"Pinging {host}...", lambda: net_ping.ping(host),
                            lambda r: form.show_error(r.line()), self._error)
