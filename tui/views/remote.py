"""The Remote access screen: SSH off or on, how to connect, the host key fingerprints,
the authorized keys, who is connected; and the form for keys from a URL."""

from __future__ import annotations

import time

import urwid

from tui.widgets.base import SelectableLine, View
from tui.widgets.form import Field, Form


def _when(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


class RemoteView(View):
    title = "Remote access (SSH)"
    hints = (("o", "temporary password"), ("u", "keys from URL"), ("x", "turn off"),
             ("F5", "refresh"), ("Esc", "back"))

    def __init__(self, controller, st, logins, addresses, password: str | None,
                 running: bool = False):
        """``st``: the remote.Status; ``logins``: sessions now; ``addresses``: this
        machine's; ``password``: the temporary password made on this console, if it is
        the valid one; ``running``: rtk-sshd.service runs (whatever ``st`` says)."""
        self.keys = {"o": controller.temporary_password, "u": controller.ask_url,
                     "x": controller.confirm_off, "f5": controller.refresh}
        rows: list = []
        if st.error and not st.enabled:
            rows += [urwid.Text(("warn", f"Remote access failed: {st.error}")), urwid.Divider()]
        if not st.enabled:
            rows += [urwid.Text(("title", "Remote access is OFF.")), urwid.Text(
                "Turn it on with a temporary password (shown on this console), or with public "
                "keys: from a URL here, or at boot with rtk.ssh= / rtk.ssh_keys= "
                "(docs/remote.md). A remote login gets this menu, as root.")]
        else:
            host = addresses[0].split("/")[0] if addresses else "<this machine's address>"
            since = (st.since or "")[11:16] or "?"  # HH:MM of the ISO time
            rows += [urwid.Text(("warn", f"Remote access is ON (since {since}).")),
                     urwid.Text(f"Connect: ssh -t root@{host}"),
                     urwid.Text(f"Password login: {'on' if st.password else 'off'}"
                                + (f"   temporary password: {password}" if password and
                                   st.password else "")),
                     urwid.Divider(), urwid.Text(("title", "Host keys (ssh shows one of "
                                                           "these on first connect):"))]
            rows += [urwid.Text(f"  {h.get('name', h['type']):<8} {h['fingerprint']}")
                     for h in st.host_keys]
            rows += [urwid.Divider(), urwid.Text(("title", f"Authorized keys: {len(st.keys)}"))]
            rows += [urwid.Text(f"  {k['fingerprint']}  " + " ".join(
                x for x in (k.get("comment"), f"({k.get('from') or '?'})") if x))
                     for k in st.keys]
            rows += [urwid.Divider(), urwid.Text(("title", "Connected now:"))]
            rows += [urwid.Text(f"  {s.user} from {s.host} "
                                + (f"on {s.tty}" if s.terminal else "with no terminal (ssh -N)")
                                + f" since {_when(s.started)}") for s in logins] or [
                urwid.Text("  nobody")]
        rows.append(urwid.Divider())
        first_action = len(rows)
        rows += [SelectableLine([("hotkey", " o "), " New temporary password" if st.enabled
                                 else " Turn on with a temporary password"],
                                controller.temporary_password),
                 SelectableLine([("hotkey", " u "), " Add public keys from a URL"],
                                controller.ask_url)]
        if st.enabled and st.password and st.keys:
            rows.append(SelectableLine([("hotkey", " p "), " Password login off (keys only)"],
                                       controller.password_off))
            self.keys = {**self.keys, "p": controller.password_off}
        if st.enabled or running:  # (sshd may run while a failure said off)
            rows.append(SelectableLine([("hotkey", " x "), " Turn off (ends every remote "
                                                           "session)"], controller.confirm_off))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = first_action
        super().__init__(self.listbox)


class KeysUrlForm(Form):
    title = "Remote access: keys from a URL"
    url = Field("URL", required="Type the URL of an authorized_keys file.")

    def __init__(self, on_submit, last: str = ""):
        super().__init__(
            "An authorized_keys file over https:// (TLS verified), or http:// with the "
            "file's SHA-256 at the end (http://HOST/PATH#sha256=HEX): one public key a "
            "line, as in ~/.ssh/authorized_keys, without options. Its keys may log in as "
            "root.",
            "Fetch and turn on", on_submit, url=last)
