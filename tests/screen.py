"""Drive the urwid app as a person does: type keys, read the 80x24 screen as text."""

from __future__ import annotations

SIZE = (80, 24)


def render(app, size=SIZE) -> str:
    canvas = app.root.render(size, focus=True)
    return "\n".join(line.decode("utf-8") for line in canvas.text)


def press(app, *keys: str, size=SIZE) -> str:
    for key in keys:
        app.keypress(size, key)
    return render(app, size)
