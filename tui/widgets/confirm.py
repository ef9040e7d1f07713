"""The typed confirmation before a disk is overwritten (Disk Copy, Restore): both ends side
by side, the warning, the options, then "Type WORD to confirm". Nothing starts until the
word typed is the target's :func:`confirmation_word`."""

from __future__ import annotations

from collections.abc import Callable

import urwid

from toolkit.disks.inventory import Disk
from tui.widgets.base import View, button
from tui.widgets.disk_summary import disk_column


def confirmation_word(disk: Disk) -> str:
    """What the technician types to confirm: the stable identity, else the kernel name."""
    return disk.identity or disk.name


class ConfirmOverwriteView(View):
    """``source`` (a column's markup) beside the ``target`` end's column, "Everything on
    TARGET will be overwritten with ``what``", the plan's ``warnings``, the ``options`` rows,
    then the typed confirmation and the ``start`` button. Enter in the confirmation or the
    button calls ``on_confirmed()`` once ``expected`` is typed; Tab moves down."""

    hints = (("↑↓", "options"), ("Space", "toggle"), ("Enter", "start"), ("Esc", "back"))

    def __init__(self, source: list, target, what: str, warnings, options: list,
                 expected: str, start: str, on_confirmed: Callable[[], None]):
        self.expected = expected
        self.on_confirmed = on_confirmed
        self.confirm = urwid.Edit(f"Type {expected} to confirm: ")
        self.error = urwid.Text("")
        confirm_row = urwid.AttrMap(self.confirm, "body", "focus")
        rows: list = [
            urwid.Columns([urwid.Text(source),
                           urwid.Text(disk_column("TARGET (overwritten)", target))],
                          dividechars=2),
            urwid.Divider("─"),
            urwid.Text(("warn", f"Everything on {target.node} will be overwritten with "
                                f"{what}.")),
            *(urwid.Text(("warn", w)) for w in warnings),
            *options, urwid.Divider(), confirm_row, self.error, button(start, self.start)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = rows.index(confirm_row)  # the options are above
        super().__init__(self.listbox)

    def start(self) -> None:
        typed = self.confirm.edit_text.strip()
        if typed != self.expected:
            self.error.set_text(("warn", f"Type exactly {self.expected} (you typed "
                                         f"{typed or 'nothing'})."))
            return
        self.on_confirmed()

    def keypress(self, size, key):
        if key == "enter" and self.listbox.focus.base_widget is self.confirm:
            self.start()
            return None
        if key == "tab":
            key = "down"
        return super().keypress(size, key)
