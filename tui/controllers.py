"""Controllers: they call ``toolkit`` and hand plain data to the views."""

from __future__ import annotations

import os
import subprocess

from toolkit import disks, logs, system
from toolkit.disks import Disk
from tui.views.disks import DiskDetailView, DisksView
from tui.views.logs import LogListView, LogTextView


class DisksController:
    def __init__(self, app, list_disks=disks.list_disks):
        self.app = app
        self._list_disks = list_disks

    def _load(self) -> tuple[list[Disk], str | None]:
        try:
            return self._list_disks(), None
        except OSError as e:
            return [], f"Could not read the disks: {e}"

    def show(self) -> None:
        found, error = self._load()
        self.app.push(DisksView(self, found, error))

    def refresh(self) -> None:
        found, error = self._load()
        self.app.replace(DisksView(self, found, error))

    def show_disk(self, disk: Disk) -> None:
        self.app.push(DiskDetailView(disk))


class LogsController:
    def __init__(self, app, log_dir: str = system.LOG_DIR):
        self.app = app
        self.log_dir = log_dir

    def show(self) -> None:
        self.app.push(LogListView(self, logs.sources(self.log_dir)))

    def open(self, source: logs.LogSource) -> None:
        view = LogTextView(source.title, logs.read(source))
        self.app.push(view)


class SystemController:
    """Shell, reboot and power off."""

    def __init__(self, app, power=system.power):
        self.app = app
        self._power = power

    def shell(self) -> None:
        shell = os.environ.get("SHELL") or "/bin/bash"
        env = dict(os.environ, RTK_IN_MENU="1")
        banner = "\nRecovery Toolkit root shell. Type 'exit' to return to the menu.\n"
        with self.app.suspended():
            print(banner, flush=True)
            subprocess.call([shell, "-l"], env=env)

    def confirm_power(self, action: str) -> None:
        verb = {"reboot": "Reboot", "poweroff": "Power off"}[action]
        self.app.dialog(
            f"{verb}?",
            f"{verb} this machine now? Running work stops and iSCSI sessions are dropped.",
            [("Cancel", self.app.close_dialog), (verb, lambda: self._do_power(action))],
        )

    def _do_power(self, action: str) -> None:
        self.app.close_dialog()
        try:
            self._power(action)
        except (OSError, subprocess.CalledProcessError) as e:
            self.app.dialog("Failed", f"Could not {action}: {e}", [("OK", self.app.close_dialog)])
