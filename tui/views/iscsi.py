"""iSCSI Manager screens: attached LUNs, discovery form, targets, CHAP form."""

from __future__ import annotations

from dataclasses import dataclass

import urwid

from toolkit.units import human_size
from tui.widgets.base import SelectableLine, View
from tui.widgets.disk_summary import cluster_lines
from tui.widgets.form import Field, Form


@dataclass
class AttachedRow:
    """One attached LUN as the list shows it (plain data from the controller)."""

    role: str | None
    number: int  # SOURCE 1, SOURCE 2, TARGET 1...
    device: str | None
    iqn: str
    lun: int
    portal: str
    size: int | None
    volumes: str  # 'ntfs "Vol1", vfat "ESP"'
    warning: str | None = None
    cluster: object = None  # the disk's ClusterIdentity (disk GUID, CSV IDs), if read


def _chomp(item):
    """A markup item without its last newline (the last line of an entry)."""
    return (item[0], item[1].rstrip("\n")) if isinstance(item, tuple) else item.rstrip("\n")


def attached_markup(r: AttachedRow) -> list:
    role = r.role or "NO ROLE"
    attr = {"SOURCE": "source", "TARGET": "target"}.get(r.role or "", "warn")
    size = human_size(r.size) if r.size is not None else "?"
    out = [(attr, f" {role} {r.number} " if r.role else f" {role} "),
           ("title", f"  {r.device or '(no device)':<10}"), f"  LUN {r.lun}  {size:>9}  ",
           r.volumes or "no volumes", "\n", ("dim", f"    {r.iqn} @ {r.portal}")]
    tail = cluster_lines(r.cluster)  # CSV IDs: how the cluster and the appliance name it
    if r.warning:
        tail.append(("warn", f"    {r.warning}"))
    if tail:
        out += ["\n", *tail[:-1], _chomp(tail[-1])]
    return out


class IscsiView(View):
    title = "iSCSI Manager"
    hints = (("a", "discover & attach"), ("x", "detach"), ("F5", "rescan"),
             ("i", "initiator"), ("Esc", "back"))

    def __init__(self, controller, initiator: str, rows: list[AttachedRow],
                 messages: list[str] = ()):
        self.controller = controller
        self.attached = rows
        self.keys = {"a": controller.show_discover, "x": self.detach_focused,
                     "delete": self.detach_focused, "f5": controller.rescan,
                     "i": controller.confirm_new_initiator}
        items: list = [urwid.Text([("dim", "Initiator name: "), initiator])]
        items += [urwid.Text(("warn", m)) for m in messages]
        items += [urwid.Divider(),
                       urwid.Text(("title", f"Attached LUNs ({len(rows)})")),
                       urwid.Divider("─")]
        self.lines = []
        for r in rows:
            line = SelectableLine(attached_markup(r))
            self.lines.append((line, r))
            items += [line, urwid.Divider("─")]
        if not rows:
            items.append(urwid.Text("None yet. Press a to discover a portal's targets and "
                                    "attach them as SOURCE (backup snapshots, read only) or "
                                    "TARGET (volumes to write)."))
        items += [urwid.Divider(), SelectableLine(("hotkey", " a  Discover targets and attach "),
                                                  controller.show_discover)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(items))
        super().__init__(self.listbox)

    def focused_row(self) -> AttachedRow | None:
        focus = self.listbox.focus
        return next((r for line, r in self.lines if line is focus), None)

    def detach_focused(self) -> None:
        self.controller.confirm_detach(self.focused_row())


class DiscoverView(Form):
    title = "iSCSI Manager: discover"
    portal = Field("Portal address", required="Type the portal's address.")
    port = Field("Port", 3260, integer=True)
    user = Field("Discovery CHAP user")
    secret = Field("Discovery CHAP secret", secret=True)

    def __init__(self, on_submit, last_portal: str = "", keyboard: str = ""):
        super().__init__(
            "The portal of the backup appliance or SAN (address or name). Discovery CHAP "
            "only if the portal asks for it." + (f"\n{keyboard}" if keyboard else ""),
            "Discover", on_submit, portal=last_portal)


class TargetsView(View):
    hints = (("↑↓", "move"), ("Enter", "attach"), ("Esc", "back"))

    def __init__(self, result, on_attach):
        self.title = f"iSCSI Manager: targets at {result.portal}"
        rows: list = [urwid.Text(("warn", n)) for n in result.notes]
        if not result.targets:
            rows.append(urwid.Text("The portal offers no target to this initiator."))
        for t in result.targets:
            rows += [urwid.Divider("─"), urwid.Text([("title", t.iqn), f"\n  portal {t.portal}"])]
            if t.note:
                rows.append(urwid.Text(("dim", f"  {t.note}")))
            rows.append(urwid.Columns([
                (24, SelectableLine(("source", " Attach as SOURCE "),
                                    lambda t=t: on_attach(t, "SOURCE"))),
                (24, SelectableLine(("target", " Attach as TARGET "),
                                    lambda t=t: on_attach(t, "TARGET")))], dividechars=2))
        rows += [urwid.Divider(), urwid.Text(("dim", "SOURCE: a backup snapshot, made read-only "
                                                     "in the kernel. TARGET: a volume to write."))]
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(rows)))


class ChapView(Form):
    title = "iSCSI Manager: CHAP"
    user = Field("CHAP user", required="Type the CHAP user and secret.")
    secret = Field("CHAP secret", secret=True, required="Type the CHAP user and secret.")
    mutual_user = Field("Target's user (mutual)")
    mutual_secret = Field("Target's secret", secret=True)

    def __init__(self, iqn: str, role: str, on_submit, message: str = "", keyboard: str = ""):
        """``keyboard``: the console's layout, said beside the secrets (a hint)."""
        self.iqn, self.role = iqn, role
        super().__init__(
            f"{iqn} asks for CHAP. {message}\nMutual CHAP (the target proves itself too): "
            "fill in the target's user and secret as well."
            + (f"\n{keyboard}" if keyboard else ""), f"Attach as {role}", on_submit)
