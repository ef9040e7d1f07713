"""Shell, reboot and power off: the controller of the menu's system entries."""

from __future__ import annotations

import os
import subprocess

from toolkit.system import machine


class SystemController:
    """Shell, reboot and power off."""

    def __init__(self, app, power=machine.power):
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
