"""The Keyboard screen's controller: the VGA console's layout (toolkit.system.keymap)."""

from __future__ import annotations

import os

from toolkit.system import keymap
from tui.views.keyboard import KeyboardView


def on_virtual_console() -> bool:
    """Is this menu on one of the machine's own virtual consoles (tty1..)?"""
    try:
        name = os.ttyname(0)
    except OSError:
        return False
    return name.startswith("/dev/tty") and name[8:].isdigit()


class KeyboardController:
    def __init__(self, app, apply=keymap.apply, current=keymap.current,
                 boot_error=keymap.boot_error):
        self.app = app
        self._apply, self._current, self._boot_error = apply, current, boot_error

    def _view(self) -> KeyboardView:
        return KeyboardView([(lay.name, lay.description) for lay in keymap.LAYOUTS],
                            self._current().name, self.choose,
                            remote_terminal=not on_virtual_console(),
                            boot_error=self._boot_error())

    def show(self) -> None:
        self.app.push(self._view())

    def choose(self, name: str) -> None:
        def done(lay: keymap.Layout) -> None:
            self.app.replace_view_of(KeyboardView, self._view())
            self.app.dialog("Keyboard layout", f"Every VGA console types with the "
                            f"{lay.name} layout now: {lay.description}. Serial and SSH "
                            "terminals type with their own.", [("OK", self.app.close_dialog)])

        def failed(e: Exception) -> None:
            self.app.dialog("Failed", f"Could not set the keyboard layout {name}: {e}",
                            [("OK", self.app.close_dialog)])

        self.app.background(f"Loading the {name} layout...", lambda: self._apply(name),
                            done, failed)
