"""The Keyboard screen: the VGA console's layout, chosen from a list, and a line to try
keys on."""

from __future__ import annotations

import urwid

from tui.widgets.base import SelectableLine, View


class KeyboardView(View):
    title = "Keyboard layout"
    hints = (("↑↓", "move"), ("Enter", "use this layout"), ("Esc", "back"))

    def __init__(self, layouts, current: str, on_choose, remote_terminal: bool,
                 boot_error: str | None = None):
        """``layouts``: (name, description) pairs; ``current``: the name in use;
        ``boot_error``: why ``rtk.keymap=`` did not take at boot."""
        where = ("This terminal is not the VGA console: the layout set here is the one of "
                 "the machine's own screen and keyboard; this terminal types with its own."
                 if remote_terminal else
                 "Applies at once to every virtual console (this menu, Alt+F2 shells). "
                 "Serial and SSH terminals keep their own layout.")
        self.trial = urwid.Edit("Try keys here: ")
        rows: list = [urwid.Text(("warn", f"At boot: {boot_error}; the console kept the "
                                          f"{current} layout.")), urwid.Divider()] \
            if boot_error else []
        rows += [urwid.Text(where), urwid.Divider(),
                 urwid.AttrMap(self.trial, "body", "focus"), urwid.Divider()]
        self.lines = {}
        for name, description in layouts:
            mark = "●" if name == current else " "
            line = SelectableLine([("title", f" {mark} {name:<14}"), description],
                                  lambda n=name: on_choose(n))
            self.lines[name] = line
            rows.append(line)
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        first = len(rows) - len(layouts)
        self.listbox.focus_position = rows.index(self.lines.get(current, rows[first]))
        super().__init__(self.listbox)
