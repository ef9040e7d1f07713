"""The disk chooser: the screen where a SOURCE, a TARGET or an image's disk is picked
(Disk Copy, Restore). The controller decides which disks may be chosen; the chooser
shows the others greyed out with the reason."""

from __future__ import annotations

import urwid

from toolkit.disks.inventory import Disk
from toolkit.units import human_size
from tui.widgets.base import SelectableLine, View
from tui.widgets.disk_summary import disk_markup


class ChooseDiskView(View):
    """Disks to pick from; those that cannot be picked say why.

    ``choices``: (disk, None) for a disk that may be chosen, (disk, reason) for one that
    may not; ``on_choose(disk)`` on Enter."""

    hints = (("↑↓", "move"), ("Enter", "choose"), ("Esc", "back"))

    def __init__(self, title: str, intro: str, choices: list[tuple[Disk, str | None]],
                 on_choose):
        self.title = title
        rows: list = [urwid.Text(intro), urwid.Divider("─")]
        for disk, reason in choices:
            if reason is None:
                rows.append(SelectableLine(disk_markup(disk), lambda d=disk: on_choose(d)))
            else:
                rows.append(urwid.Text([("dim", f"{disk.path:<13} {human_size(disk.size):>9}  "
                                                f"{disk.model or disk.transport}\n"),
                                        ("warn", f"    cannot be chosen: {reason}")]))
            rows.append(urwid.Divider("─"))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        super().__init__(self.listbox)
