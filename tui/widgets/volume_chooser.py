"""The volume chooser: the screen where a filesystem is picked to hold something (the
state directory before a long job, a logs bundle). The controller decides which may be
chosen (:func:`toolkit.system.volumes.volumes`); the others are shown with the reason.
``extra`` lines come first (another destination: the data partition, a URL)."""

from __future__ import annotations

import urwid

from toolkit.system.volumes import Volume
from toolkit.units import human_size
from tui.widgets.base import SelectableLine, View
from tui.widgets.choices import choice_rows
from tui.widgets.disk_summary import transport_name


def volume_markup(v: Volume) -> list:
    """Two lines: the filesystem (path, type, label, size), then its disk."""
    d = v.disk
    label = f'"{v.label}"' if v.label else "(no label)"
    ident = d.serial or d.wwn or "no serial"
    return [("title", f"{v.path:<15}"), f" {v.fstype:<6} {label[:24]:<24} "
            f"{human_size(v.size):>9}\n",
            ("dim", f"    on {d.path} {transport_name(d)} {(d.model or '-')[:24]} {ident[:24]}")]


def _short(v: Volume) -> str:
    """The grey line of a filesystem that cannot be chosen."""
    return f"{v.path:<15} {v.fstype:<6} {human_size(v.size):>9}"


class ChooseVolumeView(View):
    """``choices``: (volume, None) for one that may be chosen, (volume, reason) for one that
    may not; ``on_choose(volume)`` on Enter. ``extra``: (markup, callback) lines above."""

    hints = (("↑↓", "move"), ("Enter", "choose"), ("Esc", "back"))

    def __init__(self, title: str, intro: str, choices: list[tuple[Volume, str | None]],
                 on_choose, extra: tuple = ()):
        self.title = title
        rows: list = [urwid.Text(intro), urwid.Divider("─")]
        for markup, callback in extra:
            rows += [SelectableLine(markup, callback), urwid.Divider("─")]
        rows += choice_rows(choices, volume_markup, _short, on_choose)
        if not choices and not extra:
            rows.append(urwid.Text(("warn", "No filesystem that could be written was found.")))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        super().__init__(self.listbox)
