"""iSCSI Manager: discover, attach as SOURCE or TARGET (CHAP when asked), detach.

iscsiadm can block for a minute on a portal that does not answer: every call
runs through ``app.background`` (a worker thread behind a "please wait" box).
CHAP secrets go from the form straight to :mod:`toolkit.iscsi`; they are never
shown, logged or kept here.
"""

from __future__ import annotations

from toolkit import iscsi
from toolkit.disks import inventory as disks_mod
from toolkit.iscsi.portal import format_portal
from toolkit.system import keymap
from tui.views.iscsi import AttachedRow, ChapView, DiscoverView, IscsiView, TargetsView


def _volumes(disk) -> str:
    if disk is None:
        return ""
    parts = [p for p in disk.partitions if p.fstype] or []
    vols = [f'{p.fstype}{f" {chr(34)}{p.label}{chr(34)}" if p.label else ""}' for p in parts]
    if not vols and disk.fstype:
        vols.append(disk.fstype + (f' "{disk.label}"' if disk.label else ""))
    return ", ".join(vols)


def attached_rows(sessions, disks) -> list[AttachedRow]:
    """The attached list: SOURCE LUNs first, numbered per role, with size and volumes."""
    by_path = {d.path: d for d in disks}
    rows = []
    for s in sessions:
        for lun in s.luns:
            if lun.device is None:
                continue  # tgt's controller LUN 0 and the like
            disk = by_path.get(lun.device)
            rows.append(AttachedRow(lun.role, 0, lun.device, s.target, lun.lun, s.portal,
                                    disk.size if disk else None, _volumes(disk),
                                    cluster=disk.cluster if disk else None))
    order = {"SOURCE": 0, "TARGET": 1}
    rows.sort(key=lambda r: (order.get(r.role or "", 2), r.iqn, r.lun))
    counts: dict[str | None, int] = {}
    for r in rows:
        counts[r.role] = counts.get(r.role, 0) + 1
        r.number = counts[r.role]
    return rows


class IscsiController:
    def __init__(self, app, list_disks=disks_mod.list_disks):
        self.app = app
        self._list_disks = list_disks
        self.last_portal = ""
        self.last_port = 3260

    # --- the attached list ---------------------------------------------------
    def _load(self):
        initiator = iscsi.read_initiator_name() or "(none: iscsid not set up)"
        return initiator, attached_rows(iscsi.list_sessions(), self._list_disks())

    def show(self) -> None:
        self.app.background("Reading iSCSI sessions...", self._load,
                            lambda r: self.app.push(IscsiView(self, *r)), self._error)

    def _refresh(self, messages=()) -> None:
        """Reload the attached list; ``messages`` (notes, reservation warnings) show on it."""
        def done(r) -> None:
            self.app.replace_view_of(IscsiView, IscsiView(self, *r, messages=list(messages)))

        self.app.background("Reading iSCSI sessions...", self._load, done, self._error)

    def rescan(self) -> None:
        self.app.background("Rescanning all sessions for new LUNs...", iscsi.rescan,
                            lambda _r: self._refresh(), self._error)

    def _error(self, e: Exception) -> None:
        title = {iscsi.IscsiAuthError: "CHAP refused", iscsi.IscsiPortalUnreachable:
                 "Portal unreachable", iscsi.IscsiTargetNotFound: "Target not found",
                 iscsi.IscsidNotRunning: "iSCSI service"}.get(type(e), "iSCSI error")
        self.app.dialog(title, str(e), [("OK", self.app.close_dialog)])

    # --- discover and attach -------------------------------------------------
    def show_discover(self) -> None:
        self.app.push(DiscoverView(self.discover, self.last_portal, keymap.hint()))

    def discover(self, form: DiscoverView) -> None:
        """The form's portal is typed (the form checks that); it may still be malformed."""
        try:
            host, port = iscsi.split_portal(form.portal.edit_text.strip(), form.port.value())
        except ValueError as e:
            form.show_error(str(e))
            return
        chap = None
        if form.user.edit_text.strip():
            chap = iscsi.Chap(form.user.edit_text.strip(), form.secret.edit_text)
        self.last_portal, self.last_port = host, port
        self.app.background(
            f"Discovering targets at {format_portal(host, port)}...",
            lambda: iscsi.discover(host, port, chap),
            lambda result: self.app.push(TargetsView(result, self.attach)), self._error)

    def attach(self, target, role: str, chap=None, mutual=None) -> None:
        def failed(e: Exception) -> None:
            if isinstance(e, iscsi.IscsiAuthError):
                message = "The credentials were refused: try again." if chap else ""
                self.app.push(ChapView(target.iqn, role, lambda f: self._attach_chap(
                    target, role, f), message, keymap.hint()))
            else:
                self._error(e)

        def done(result) -> None:
            if isinstance(self.app.stack[-1], ChapView):
                self.app.pop()
            self.app.pop_to(IscsiView)
            self._refresh([*result.notes, *result.warnings])

        self.app.background(
            f"Logging in to {target.iqn} as {role}...",
            lambda: iscsi.attach(target.host, target.iqn, role, port=target.port, chap=chap,
                                 mutual=mutual), done, failed)

    def _attach_chap(self, target, role: str, form: ChapView) -> None:
        """User and secret are typed (the form checks that), the mutual pair is optional."""
        user = form.user.edit_text.strip()
        mutual = None
        if form.mutual_user.edit_text.strip():
            mutual = iscsi.Chap(form.mutual_user.edit_text.strip(), form.mutual_secret.edit_text)
        self.app.pop()  # the form; a refusal brings a fresh one (no secret kept on screen)
        self.attach(target, role, iscsi.Chap(user, form.secret.edit_text), mutual)

    # --- detach, initiator ---------------------------------------------------
    def confirm_detach(self, row: AttachedRow | None) -> None:
        if row is None:
            return
        self.app.dialog(
            "Detach?", f"Log out of {row.iqn} (all its LUNs, {row.device} among them)?",
            [("Cancel", self.app.close_dialog), ("Detach", lambda: self._detach(row))])

    def _detach(self, row: AttachedRow) -> None:
        self.app.close_dialog()
        self.app.background(f"Logging out of {row.iqn}...", lambda: iscsi.detach(row.iqn),
                            lambda _r: self._refresh(), self._error)

    def confirm_new_initiator(self) -> None:
        self.app.dialog(
            "New initiator name?",
            "Generate a new initiator name for this boot? Only possible with no session "
            "attached. Targets that allow only certain initiators may then refuse this one.",
            [("Cancel", self.app.close_dialog), ("Generate", self._new_initiator)])

    def _new_initiator(self) -> None:
        self.app.close_dialog()
        self.app.background("Setting a new initiator name...",
                            lambda: iscsi.set_initiator_name(iscsi.generate_initiator_name()),
                            lambda _r: self._refresh(), self._error)
