"""Small shared widgets: selectable menu lines, the base view (with its keys), dialogs, key
hints, buttons, the progress and result screens of long work."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import urwid

from toolkit.units import human_duration, human_rate, human_size


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
    """A screen in the app's stack: a title, the key hints for the footer, and ``keys``:
    what a key does on this screen (key -> callback), before its widgets see the key."""

    title = ""
    hints: tuple[tuple[str, str], ...] = ()
    keys: Mapping[str, Callable[[], object]] = {}

    def keypress(self, size, key):
        action = self.keys.get(key)
        if action is not None:
            action()
            return None
        return super().keypress(size, key)


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


def button(label: str, callback) -> urwid.Widget:
    """A button as wide as its label, calling ``callback()`` when pressed."""
    return urwid.Padding(urwid.AttrMap(urwid.Button(label, lambda _b: callback()), "button",
                                       "focus"), width=len(label) + 4)


class ProgressView(View):
    """Long work under way: what is copied where, phase, bar, amounts, rate and ETA,
    lines of its own (``extra``), a Cancel button; Esc asks to cancel too."""

    hints = (("Esc", "cancel (asks first)"),)
    phases: dict[str, str] = {}  # phase -> what the technician reads

    def __init__(self, heading: str, on_cancel, extra: tuple = ()):
        self.on_cancel = on_cancel
        self.keys = {"esc": on_cancel}
        self.bar = urwid.ProgressBar("body", "focus", 0, 100)
        self.phase = urwid.Text("starting")
        self.figures = urwid.Text("")
        rows = [urwid.Text(heading), urwid.Divider(), self.phase, self.bar, urwid.Divider(),
                self.figures, *extra, urwid.Divider(), button("Cancel", on_cancel)]
        super().__init__(urwid.Filler(urwid.Pile(rows), valign="top"))

    def update(self, p) -> None:
        note = getattr(p, "note", "")  # "waiting": a storage outage, what is waited for
        self.phase.set_text(("warn", note) if note else
                            ("title", self.phases.get(p.phase, p.phase)))
        self.bar.set_completion(100 * p.fraction)
        eta = human_duration(p.eta) if p.eta is not None else "?"
        self.figures.set_text(f"{human_size(p.done)} of {human_size(p.total)}   "
                              f"{human_rate(p.rate)} now   ETA {eta}")


class ResultView(View):
    """The end of long work: the headline of the result's status (``headlines``, else the
    status in capitals; an "ok" that was not ``verified`` gets ``unverified``), its message,
    the details (``rows``), back to the main menu."""

    hints = (("Enter", "main menu"),)
    headlines: dict[str, str] = {}
    unverified = "DONE (NOT VERIFIED)"

    def __init__(self, result, verified: bool, rows: list, on_close):
        self.on_close = on_close
        self.keys = {"esc": on_close, "enter": on_close}
        ok = result.status == "ok"
        headline = self.headlines.get(result.status, result.status.upper())
        if ok and not verified:
            headline = self.unverified
        body = [urwid.Text(("ok" if ok else "warn", f"  {headline}")), urwid.Divider(),
                urwid.Text(result.message), *rows, urwid.Divider(),
                button("Main menu", on_close)]
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(body)))
