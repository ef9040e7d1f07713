"""Small shared widgets: selectable menu lines, dialogs, key hints."""

from __future__ import annotations

from collections.abc import Callable

import urwid


class SelectableLine(urwid.WidgetWrap):
    """A focusable block of text that calls ``on_activate`` on Enter."""

    def __init__(self, markup, on_activate: Callable[[], None] | None = None):
        self._on_activate = on_activate
        self.text = urwid.Text(markup)
        super().__init__(urwid.AttrMap(self.text, "body", "focus"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size, key):
        if key == "enter" and self._on_activate:
            self._on_activate()
            return None
        return key


class View(urwid.WidgetWrap):
    """A screen in the app's stack: a title and the key hints for the footer."""

    title = ""
    hints: tuple[tuple[str, str], ...] = ()


class Dialog(urwid.WidgetWrap):
    """A framed box with a message and buttons; Esc means the first button (the safe one)."""

    def __init__(self, title: str, message, buttons: list[tuple[str, Callable[[], None]]],
                 attr: str = "dialog"):
        self.buttons = buttons
        btns = [urwid.AttrMap(urwid.Button(label, on_press=lambda _b, cb=cb: cb()), "button",
                              "focus") for label, cb in buttons]
        rows = [urwid.Text(message)]
        if buttons:
            rows += [urwid.Divider(),
                     urwid.Columns([(len(label) + 4, b) for (label, _), b in
                                    zip(buttons, btns, strict=True)], dividechars=2)]
        body = urwid.Pile(rows)
        super().__init__(urwid.AttrMap(urwid.LineBox(urwid.Padding(body, left=1, right=1),
                                                     title=title), attr))

    def selectable(self) -> bool:
        return True  # a box with no buttons ("please wait") still takes the keys

    def keypress(self, size, key):
        if key == "esc" and self.buttons:
            self.buttons[0][1]()
            return None
        if not self.buttons:
            return None  # wait: keys do nothing until the work is done
        return super().keypress(size, key)


def hints_markup(hints) -> list:
    out: list = []
    for key, label in hints:
        out += [("hint_key", f" {key}"), ("footer", f" {label} ")]
    return out
