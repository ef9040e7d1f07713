"""iSCSI Manager screens: attached LUNs, discovery form, targets, CHAP form."""

from __future__ import annotations

from dataclasses import dataclass

import urwid

from toolkit.units import human_size
from tui.widgets.base import SelectableLine, View


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


def attached_markup(r: AttachedRow) -> list:
    role = r.role or "NO ROLE"
    attr = {"SOURCE": "source", "TARGET": "target"}.get(r.role or "", "warn")
    size = human_size(r.size) if r.size is not None else "?"
    out = [(attr, f" {role} {r.number} " if r.role else f" {role} "),
           ("title", f"  {r.device or '(no device)':<10}"), f"  LUN {r.lun}  {size:>9}  ",
           r.volumes or "no volumes", "\n", ("dim", f"    {r.iqn} @ {r.portal}")]
    if r.warning:
        out += ["\n", ("warn", f"    {r.warning}")]
    return out


class IscsiView(View):
    title = "iSCSI Manager"
    hints = (("a", "discover & attach"), ("x", "detach"), ("F5", "rescan"),
             ("i", "initiator"), ("Esc", "back"))

    def __init__(self, controller, initiator: str, rows: list[AttachedRow],
                 messages: list[str] = ()):
        self.controller = controller
        self.attached = rows
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

    def keypress(self, size, key):
        if key == "a":
            self.controller.show_discover()
        elif key in ("x", "delete"):
            self.controller.confirm_detach(self.focused_row())
        elif key == "f5":
            self.controller.rescan()
        elif key == "i":
            self.controller.confirm_new_initiator()
        else:
            return super().keypress(size, key)
        return None


class _Form(View):
    """Labelled edit fields, Tab/↓ to move, Enter on the last field or the button submits."""

    hints = (("Tab ↑↓", "move"), ("Enter", "submit"), ("Esc", "back"))

    def __init__(self, intro: str, fields: list[tuple[str, urwid.Edit]], button: str,
                 on_submit):
        self.on_submit = on_submit
        self.error = urwid.Text("")
        rows: list = [urwid.Text(intro), urwid.Divider()]
        for label, edit in fields:
            rows.append(urwid.AttrMap(urwid.Columns([(22, urwid.Text(label)), edit]), "body",
                                      "focus"))
        rows += [urwid.Divider(), self.error,
                 urwid.Padding(urwid.AttrMap(urwid.Button(button, lambda _b: on_submit()),
                                             "button", "focus"), width=len(button) + 4)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = 2
        super().__init__(self.listbox)

    def show_error(self, message: str) -> None:
        self.error.set_text(("warn", message))

    def keypress(self, size, key):
        if key == "tab":
            key = "down"
        if key == "enter" and isinstance(self.listbox.focus, urwid.AttrMap):
            self.on_submit()
            return None
        return super().keypress(size, key)


class DiscoverView(_Form):
    title = "iSCSI Manager: discover"

    def __init__(self, on_submit, last_portal: str = ""):
        self.portal = urwid.Edit("", last_portal)
        self.port = urwid.IntEdit("", 3260)
        self.user = urwid.Edit("")
        self.secret = urwid.Edit("", mask="*")
        super().__init__(
            "The portal of the backup appliance or SAN (address or name). Discovery CHAP "
            "only if the portal asks for it.",
            [("Portal address", self.portal), ("Port", self.port),
             ("Discovery CHAP user", self.user), ("Discovery CHAP secret", self.secret)],
            "Discover", lambda: on_submit(self))


class TargetsView(View):
    hints = (("↑↓", "move"), ("Enter", "attach"), ("Esc", "back"))

    def __init__(self, result, on_attach):
        self.title = f"iSCSI Manager: targets at {result.portal}"
        rows: list = [urwid.Text(("warn", n)) for n in result.notes]
        if not result.targets:
            rows.append(urwid.Text("The portal offers no target to this initiator."))
        for t in result.targets:
            rows += [urwid.Divider("─"), urwid.Text([("title", t.iqn), f"\n  portal "
                                                    f"{t.host}:{t.port}"])]
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


class ChapView(_Form):
    title = "iSCSI Manager: CHAP"

    def __init__(self, iqn: str, role: str, on_submit, message: str = ""):
        self.iqn, self.role = iqn, role
        self.user = urwid.Edit("")
        self.secret = urwid.Edit("", mask="*")
        self.mutual_user = urwid.Edit("")
        self.mutual_secret = urwid.Edit("", mask="*")
        super().__init__(
            f"{iqn} asks for CHAP. {message}\nMutual CHAP (the target proves itself too): "
            "fill in the target's user and secret as well.",
            [("CHAP user", self.user), ("CHAP secret", self.secret),
             ("Target's user (mutual)", self.mutual_user),
             ("Target's secret", self.mutual_secret)],
            f"Attach as {role}", lambda: on_submit(self))
