"""The Recovery Toolkit menu: frame (title, footer with key hints) and a stack
of screens. Runs on the Linux console (80x24) and on serial terminals."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading

import urwid

import toolkit
from toolkit.exitcodes import EXIT_INTERRUPTED, EXIT_OK
from toolkit.system import machine, paths, remote
from tui.controllers.copy import CopyController
from tui.controllers.disks import DisksController
from tui.controllers.iscsi import IscsiController
from tui.controllers.keyboard import KeyboardController
from tui.controllers.logs import LogsController
from tui.controllers.network import NetworkController
from tui.controllers.remote import RemoteController
from tui.controllers.restore import RestoreController
from tui.controllers.system import SystemController
from tui.views.menu import MainMenuView
from tui.widgets.base import Dialog, View, hints_markup

PALETTE = [
    # name, foreground, background, monochrome
    ("body", "light gray", "black"),
    ("header", "white", "dark blue", "standout"),
    ("header_alert", "yellow", "dark blue", "bold"),  # remote access on
    ("footer", "black", "light gray", "standout"),
    ("hint_key", "white", "dark cyan", "bold"),
    ("focus", "black", "light cyan", "standout"),
    ("title", "white", "black", "bold"),
    ("hotkey", "black", "yellow", "bold"),
    ("dim", "dark cyan", "black"),
    ("transport", "light magenta", "black", "bold"),
    ("warn", "yellow", "black", "bold"),
    ("ok", "light green", "black"),
    ("source", "white", "dark red", "standout"),
    ("target", "black", "dark green", "standout"),
    ("dialog", "black", "light gray", "standout"),
    ("button", "black", "light gray"),
]

HEADER_REFRESH_SECONDS = 5


class App:
    def __init__(self, log_dir: str = paths.LOG_DIR, list_disks=None, power=None):
        self.loop: urwid.MainLoop | None = None
        self.header = urwid.Text("")
        self.footer = urwid.Text("")
        self.stack: list[View] = []
        self.frame = urwid.Frame(
            urwid.SolidFill(" "),
            header=urwid.AttrMap(self.header, "header"),
            footer=urwid.AttrMap(self.footer, "footer"),
        )
        self.root = urwid.WidgetPlaceholder(urwid.AttrMap(self.frame, "body"))
        self._dialog: Dialog | None = None
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_fd: int | None = None
        self.worker: threading.Thread | None = None  # the latest background() thread
        self.disks = DisksController(self, **({"list_disks": list_disks} if list_disks else {}))
        self.logs = LogsController(self, log_dir)
        self.system = SystemController(self, **({"power": power} if power else {}))
        self.copy = CopyController(self, **({"list_disks": list_disks} if list_disks else {}))
        self.iscsi = IscsiController(self, **({"list_disks": list_disks} if list_disks else {}))
        self.network = NetworkController(self)
        self.keyboard = KeyboardController(self)
        self.remote = RemoteController(self)
        self.restore = RestoreController(self, **({"list_disks": list_disks} if list_disks else {}))
        self.refresh_header()
        self.push(MainMenuView([
            ("d", "Disks", "every disk: size, model, serial, transport, use", self.disks.show),
            ("i", "iSCSI Manager", "attach snapshot LUNs as SOURCE, SAN LUNs as TARGET",
             self.iscsi.show),
            ("c", "Disk Copy", "copy a SOURCE disk onto a TARGET disk, verified",
             self.copy.show),
            ("b", "Restore", "write an OS image to a disk (raw, zst, qcow2, VHDX...)",
             self.restore.show),
            ("n", "Network", "NICs, DHCP or static address, MTU, VLAN, ping",
             self.network.show),
            ("k", "Keyboard", "layout of the VGA console (us, de, fr, uk...)",
             self.keyboard.show),
            ("a", "Remote access", "SSH to this menu: off unless turned on here",
             self.remote.show),
            ("l", "Logs", "toolkit reports, kernel messages, journal", self.logs.show),
            ("s", "Shell", "a root shell; type exit to come back", self.system.shell),
            ("r", "Reboot", "restart this machine", lambda: self.system.confirm_power("reboot")),
            ("p", "Power off", "turn this machine off",
             lambda: self.system.confirm_power("poweroff")),
        ]))

    # --- frame ---------------------------------------------------------------
    def refresh_header(self, *_args) -> None:
        addrs = machine.ip_addresses()
        ips = ", ".join(addr for _nic, addr in addrs[:2]) or "no IP address"
        st = remote.status()  # remote access on: who is connected
        ssh = remote.header(st, remote.sessions() if st.enabled else [])
        self.header.set_text([f" Recovery Toolkit {toolkit.__version__} │ {machine.hostname()} │ "
                              f"{ips}", *([" │ ", ("header_alert", ssh)] if ssh else [])])
        if self.loop:
            self.loop.set_alarm_in(HEADER_REFRESH_SECONDS, self.refresh_header)

    def _show_top(self) -> None:
        view = self.stack[-1]
        title = urwid.AttrMap(urwid.Text(("title", f" {view.title}")), "title")
        self.frame.body = urwid.Frame(view, header=urwid.Pile([title, urwid.Divider("─")]))
        hints = list(view.hints)
        if len(self.stack) == 1:
            hints.append(("F10", "power"))
        self.footer.set_text(hints_markup(hints))

    def push(self, view: View) -> None:
        self.stack.append(view)
        self._show_top()

    def replace(self, view: View) -> None:
        self.stack[-1] = view
        self._show_top()

    def pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()
            self._show_top()

    def dialog(self, title: str, message, buttons) -> None:
        self._dialog = Dialog(title, message, buttons)
        self.root.original_widget = urwid.Overlay(
            self._dialog, urwid.AttrMap(self.frame, "body"), "center", 60, "middle", "pack")

    def close_dialog(self) -> None:
        self._dialog = None
        self.root.original_widget = urwid.AttrMap(self.frame, "body")

    @contextlib.contextmanager
    def suspended(self):
        """Give the terminal to another program (a shell: with its own Ctrl-C), then take
        it back."""
        if self.loop:
            self.loop.screen.stop()
        try:
            yield
        finally:
            if self.loop:
                self.loop.screen.start()
                self.keys_not_signals()
                self.loop.screen.clear()

    def keys_not_signals(self) -> None:
        """Ctrl-C, Ctrl-\\ and Ctrl-Z (and Ctrl-S, Ctrl-Q) are keys in the menu, not the
        terminal's signals: a copy or restore runs in a thread of this process, and a
        stray SIGINT, SIGQUIT or SIGTSTP would end it with the menu, or freeze both
        (Ctrl-S: the screen, then the job's progress). urwid's screen puts the terminal's
        own keys back whenever it stops (the Shell entry, the end) and start() keeps
        them, hence this after each start."""
        if self.loop:
            self.loop.screen.tty_signal_keys(intr="undefined", quit="undefined",
                                             start="undefined", stop="undefined",
                                             susp="undefined")

    def pop_to_root(self) -> None:
        del self.stack[1:]
        self._show_top()

    def pop_to(self, cls: type) -> None:
        """Back to the newest screen of class ``cls`` (if there is one)."""
        while len(self.stack) > 1 and not isinstance(self.stack[-1], cls):
            self.stack.pop()
        self._show_top()

    def replace_view_of(self, cls: type, view: View) -> None:
        """Put ``view`` in place of the newest screen of class ``cls``, else push it."""
        for i in range(len(self.stack) - 1, -1, -1):
            if isinstance(self.stack[i], cls):
                self.stack[i] = view
                self._show_top()
                return
        self.push(view)

    # --- work in threads -----------------------------------------------------
    def call_from_thread(self, fn) -> None:
        """Run ``fn`` in the UI thread soon. Worker threads never touch widgets."""
        self._calls.put(fn)
        if self._wake_fd is not None:
            os.write(self._wake_fd, b".")

    def background(self, message: str, work, done, failed) -> threading.Thread:
        """Run blocking ``work()`` in a thread behind a "please wait" box; then
        ``done(result)`` or ``failed(exception)`` in the UI thread."""
        self.dialog("Please wait", message, [])

        def run() -> None:
            try:
                result = work()
            except Exception as e:  # noqa: BLE001 - shown to the technician, not swallowed
                error = e
                self.call_from_thread(lambda: (self.close_dialog(), failed(error)))
                return
            self.call_from_thread(lambda: (self.close_dialog(), done(result)))

        thread = threading.Thread(target=run, name="background", daemon=True)
        self.worker = thread
        thread.start()
        return thread

    def drain(self) -> None:
        """Run the calls queued by worker threads (the main loop does this on wake-up)."""
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def _on_wake(self, _data: bytes) -> bool:
        self.drain()
        return True

    # --- keys ----------------------------------------------------------------
    def unhandled_input(self, key) -> bool | None:
        if self._dialog is not None:
            return None
        if key == "esc":
            self.pop()
            return True
        if key == "f10":
            self.system.confirm_power("poweroff")
            return True
        return None

    def keypress(self, size: tuple[int, int], key: str) -> None:
        """What the main loop does with one key (used by tests to type)."""
        rest = self.root.keypress(size, key)
        if rest:
            self.unhandled_input(rest)

    def run(self) -> None:
        screen = urwid.display.raw.Screen()
        screen.set_terminal_properties(colors=16)
        self.loop = urwid.MainLoop(self.root, PALETTE, screen=screen, handle_mouse=False,
                                   unhandled_input=self.unhandled_input)
        self.loop.set_alarm_in(HEADER_REFRESH_SECONDS, self.refresh_header)
        self._wake_fd = self.loop.watch_pipe(self._on_wake)
        screen.start()  # (run() finds it started) so that no key is a signal from the start
        self.keys_not_signals()
        self.loop.run()


def main() -> int:
    try:
        App().run()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
