"""The rows of a chooser (the disk chooser, the volume chooser): one per choice, those that
may be chosen selectable, the others greyed out with the reason."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import urwid

from tui.widgets.base import SelectableLine


def choice_rows(choices: Iterable[tuple[object, str | None]], markup: Callable[[object], list],
                short: Callable[[object], str], on_choose: Callable[[object], None]) -> list:
    """A row and a rule per choice: ``(item, None)``, one that may be chosen, is
    ``markup(item)`` and calls ``on_choose(item)`` on Enter; ``(item, reason)`` is the
    grey line ``short(item)`` and "cannot be chosen: reason"."""
    rows: list = []
    for item, reason in choices:
        if reason is None:
            rows.append(SelectableLine(markup(item), lambda i=item: on_choose(i)))
        else:
            rows.append(urwid.Text([("dim", short(item) + "\n"),
                                    ("warn", f"    cannot be chosen: {reason}")]))
        rows.append(urwid.Divider("─"))
    return rows
