"""The disk chooser: the screen where a SOURCE, a TARGET or an image's disk is picked
(Disk Copy, Restore). The controller decides which disks may be chosen; the chooser
shows the others greyed out with the reason."""

from __future__ import annotations

import urwid

from toolkit.disks.inventory import Disk
from toolkit.units import human_size
from tui.widgets.base import View
from tui.widgets.choices import choice_rows
from tui.widgets.disk_summary import disk_markup


def _short(disk: Disk) -> str:
    """The grey line of a disk that cannot be chosen."""
    return f"{disk.path:<13} {human_size(disk.size):>9}  {disk.model or disk.transport}"


class ChooseDiskView(View):
    """Disks to pick from; those that cannot be picked say why.

    ``choices``: (disk, None) for a disk that may be chosen, (disk, reason) for one that
    may not; ``on_choose(disk)`` on Enter."""

    hints = (("↑↓", "move"), ("Enter", "choose"), ("Esc", "back"))

    def __init__(self, title: str, intro: str, choices: list[tuple[Disk, str | None]],
                 on_choose):
        self.title = title
        rows: list = [urwid.Text(intro), urwid.Divider("─")]
        rows += choice_rows(choices, disk_markup, _short, on_choose)
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        super().__init__(self.listbox)
