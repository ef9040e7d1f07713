"""The Remote access screen's controller: SSH on with a temporary password or keys from
a URL, password login off, off (toolkit.system.remote). The temporary password lives in
this menu's memory only, to be shown on this console's screen, and only while it is the
valid one (the status's ``credential_id``: another console may have made a new one)."""

from __future__ import annotations

from toolkit.jobs.report import safe_url
from toolkit.system import machine, remote, remote_boot, remote_keys
from tui.views.remote import KeysUrlForm, RemoteView


class RemoteController:
    def __init__(self, app):
        self.app = app
        self.password: str | None = None  # made on this console; never written anywhere
        self.credential_id: str | None = None  # the status's id of that password
        self.last_url = ""

    def _view(self) -> RemoteView:
        st = remote.status()
        if not st.password or st.credential_id != self.credential_id:  # not the valid one
            self.password = self.credential_id = None
        addresses = [addr for _nic, addr in machine.ip_addresses()]
        return RemoteView(self, st, remote.sessions(), addresses, self.password,
                          running=remote.sshd_running())

    def show(self) -> None:
        self.app.push(self._view())

    def refresh(self) -> None:
        self.app.replace_view_of(RemoteView, self._view())

    def _failed(self, what: str):
        def failed(e: Exception) -> None:
            self.refresh()
            self.app.dialog("Failed", f"{what}: {e}", [("OK", self.app.close_dialog)])
        return failed

    @staticmethod
    def _host() -> str:
        addresses = [addr.split("/")[0] for _nic, addr in machine.ip_addresses()]
        return addresses[0] if addresses else "<this machine's address>"

    def _connect_text(self, st: remote.Status) -> str:
        keys = "\n".join(f"  {h.get('name', h['type']):<8}{h['fingerprint']}"
                         for h in st.host_keys)
        return f"Connect: ssh -t root@{self._host()}\nHost key fingerprints:\n{keys}"

    def temporary_password(self) -> None:
        def done(result) -> None:
            st, password = result
            self.password, self.credential_id = password, st.credential_id
            self.refresh()
            self.app.dialog("Remote access is ON", f"Temporary password: {password}\n"
                            f"{self._connect_text(st)}\nIf ssh gives up before it asks "
                            "(too many keys offered first): ssh -t -o "
                            f"PubkeyAuthentication=no root@{self._host()}\nValid until a new one "
                            "is made (o), password login or remote access is turned off, or "
                            "the machine restarts; shown on this console only.",
                            [("OK", self.app.close_dialog)])

        self.app.background("Turning remote access on (making host keys)...",
                            lambda: remote.enable(password=True, source="menu"), done,
                            self._failed("Could not turn remote access on"))

    def ask_url(self) -> None:
        self.app.push(KeysUrlForm(self._fetch, self.last_url))

    def _fetch(self, form: KeysUrlForm) -> None:
        url = form.url.edit_text.strip()
        try:
            remote_keys.check_url(url, "URL")
        except remote_keys.KeyRefused as e:
            form.show_error(str(e))
            return
        self.last_url = url

        def work():
            return remote.enable(remote_boot.fetch_keys(url, wait=0), source=safe_url(url))

        def done(result) -> None:
            st, _ = result
            self.app.pop_to(RemoteView)
            self.refresh()
            self.app.dialog("Remote access is ON", f"{len(st.keys)} authorized key(s).\n"
                            f"{self._connect_text(st)}", [("OK", self.app.close_dialog)])

        def failed(e: Exception) -> None:
            form.show_error(str(e))

        self.app.background("Fetching the keys...", work, done, failed)

    def password_off(self) -> None:
        def done(_st) -> None:
            self.password = self.credential_id = None
            self.refresh()

        self.app.background("Password login off...", remote.password_off, done,
                            self._failed("Could not turn password login off"))

    def confirm_off(self) -> None:
        if not (remote.status().enabled or remote.sshd_running()):
            return
        self.app.dialog("Turn remote access off?",
                        "sshd stops: every remote session ends now (this one too, if you "
                        "are connected over SSH), the remote menu ends with any copy or "
                        "restore running in it, and the password no longer works.",
                        [("Cancel", self.app.close_dialog), ("Turn off", self._off)])

    def _off(self) -> None:
        self.app.close_dialog()

        def done(_st) -> None:
            self.password = self.credential_id = None
            self.refresh()

        self.app.background("Turning remote access off...", remote.disable, done,
                            self._failed("Could not turn remote access off"))
