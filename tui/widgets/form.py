"""Declared forms (subiquity's way): a form view lists its fields; the tab order, the
check of required fields and the submit live here, once.

    class PingForm(Form):
        title = "Network: ping"
        host = Field("Address", required="Type an address.")

        def __init__(self, on_submit, last=""):
            super().__init__("Check that a portal or server answers.", "Ping", on_submit,
                             host=last)

Each field becomes an edit widget of its name on the form (``form.host.edit_text``), in
the order declared. Tab and ↓ move down; Enter in a field or on the button submits: a
required field left empty shows its message, else ``on_submit(form)`` is called, and the
controller may answer with :meth:`Form.show_error`.
"""

from __future__ import annotations

from collections.abc import Callable

import urwid

from tui.widgets.base import View, button

LABEL_WIDTH = 22


class Field:
    """One labelled line of a form: text (``secret``: shown as ``*``) or a whole number."""

    def __init__(self, label: str, default: str | int = "", *, secret: bool = False,
                 integer: bool = False, required: str | None = None):
        self.label, self.default, self.required = label, default, required
        self.secret, self.integer = secret, integer

    def widget(self, value: str | int | None) -> urwid.Edit:
        value = self.default if value is None else value
        if self.integer:
            return urwid.IntEdit("", value)
        return urwid.Edit("", str(value), mask="*" if self.secret else None)

    def filled(self, edit: urwid.Edit) -> bool:
        """A secret counts as typed even if it is all spaces; other text once stripped."""
        return bool(edit.edit_text if self.secret else edit.edit_text.strip())


class Form(View):
    """An intro, ``head`` rows (choices above the fields), the declared fields, an error
    line and the submit button. ``values`` give fields a starting value by name."""

    hints = (("Tab ↑↓", "move"), ("Enter", "submit"), ("Esc", "back"))
    fields: tuple[tuple[str, Field], ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = dict(cls.fields)
        declared.update((k, v) for k, v in vars(cls).items() if isinstance(v, Field))
        cls.fields = tuple(declared.items())

    def __init__(self, intro: str, submit: str, on_submit: Callable[[Form], None],
                 head: tuple = (), **values):
        self.on_submit = on_submit
        self.error = urwid.Text("")
        rows: list = [urwid.Text(intro), urwid.Divider(), *head]
        for name, field in self.fields:
            edit = field.widget(values.get(name))
            setattr(self, name, edit)
            rows.append(urwid.AttrMap(urwid.Columns([(LABEL_WIDTH, urwid.Text(field.label)),
                                                     edit]), "body", "focus"))
        rows += [urwid.Divider(), self.error, button(submit, self.submit)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = 2
        super().__init__(self.listbox)

    def submit(self) -> None:
        for name, field in self.fields:
            if field.required and not field.filled(getattr(self, name)):
                self.show_error(field.required)
                return
        self.on_submit(self)

    def show_error(self, message: str) -> None:
        self.error.set_text(("warn", message))

    def keypress(self, size, key):
        if key == "tab":
            key = "down"
        if key == "enter" and isinstance(self.listbox.focus, urwid.AttrMap):
            self.submit()
            return None
        return super().keypress(size, key)
