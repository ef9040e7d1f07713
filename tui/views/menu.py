"""The main menu."""

from __future__ import annotations

import urwid

from tui.widgets.base import SelectableLine, View


class MainMenuView(View):
    title = "Main menu"
    hints = (("↑↓", "move"), ("Enter", "select"), ("d", "Disks"), ("i", "iSCSI"),
             ("c", "Copy"), ("s", "Shell"))

    def __init__(self, entries):
        """``entries``: (hotkey, label, description, callback) tuples."""
        self.keys = {}
        rows = [urwid.Divider()]
        for hotkey, label, description, callback in entries:
            self.keys[hotkey] = callback
            rows.append(SelectableLine([("hotkey", f" {hotkey} "), f" {label:<15}",
                                        ("dim", description)], callback))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = 1
        super().__init__(self.listbox)
