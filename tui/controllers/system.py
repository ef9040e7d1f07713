"""Shell, reboot and power off: the controller of the menu's system entries."""

from __future__ import annotations

import os

from toolkit.system import machine, tools


class SystemController:
    """Shell, reboot and power off."""

    def __init__(self, app, power=machine.power):
        self.app = app
        self._power = power

    def shell(self) -> None:
        shell = os.environ.get("SHELL") or "/bin/bash"
        env = dict(os.environ, RTK_IN_MENU="1")
        banner = "\nRecovery Toolkit root shell. Type 'exit' to return to the menu.\n"
        failed = None
        with self.app.suspended():
            print(banner, flush=True)
            try:  # on the terminal: nothing captured, any exit status is the shell's own
                tools.run([shell, "-l"], check=False, capture=False, env=env)
            except tools.ToolError as e:  # not installed, or cannot be run
                failed = e
        if failed is not None:
            self.app.dialog("Failed", f"Could not start a shell: {failed}",
                            [("OK", self.app.close_dialog)])

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
        except OSError as e:  # a ToolError: "systemctl failed: ... (exit 1)"
            self.app.dialog("Failed", f"Could not {action}: {e}", [("OK", self.app.close_dialog)])
