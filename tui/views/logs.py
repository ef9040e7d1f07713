"""The log viewer: a list of logs, then one log's text; where to save a logs bundle."""

from __future__ import annotations

import urwid

from tui.widgets.base import SelectableLine, View
from tui.widgets.form import Field, Form


class LogListView(View):
    title = "Logs"
    hints = (("↑↓", "move"), ("Enter", "open"), ("s", "save bundle"), ("Esc", "back"))

    def __init__(self, controller, sources):
        self.keys = {"s": controller.save_bundle}
        rows = [SelectableLine(f" {s.title}", lambda s=s: controller.open(s)) for s in sources]
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(rows)))


class LogTextView(View):
    hints = (("↑↓ PgUp PgDn", "scroll"), ("Home End", "top/bottom"), ("Esc", "back"))

    def __init__(self, title: str, text: str):
        self.title = title
        lines = text.splitlines() or ["(empty)"]
        self.walker = urwid.SimpleFocusListWalker(
            [urwid.AttrMap(SelectableLine(line.expandtabs()), "body") for line in lines])
        self.listbox = urwid.ListBox(self.walker)
        self.listbox.focus_position = len(self.walker) - 1  # newest at the bottom
        super().__init__(self.listbox)

    def keypress(self, size, key):
        if key == "home":
            self.listbox.focus_position = 0
            return None
        if key == "end":
            self.listbox.focus_position = len(self.walker) - 1
            return None
        return super().keypress(size, key)


class BundleUrlForm(Form):
    title = "Logs bundle: send to a URL"
    url = Field("URL", required="Type the URL to send the bundle to (http:// or https://).")

    def __init__(self, on_submit, last: str = ""):
        super().__init__("The bundle (.tar.gz, secrets masked) is sent with HTTP POST, "
                         "Content-Type application/gzip. https:// is checked against the "
                         "system's certificate authorities.", "Send", on_submit, url=last)
