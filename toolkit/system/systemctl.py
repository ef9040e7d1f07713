"""``systemctl``: units of the live system, and power. Without systemd (a container, a
build host) a unit is never active, and starting one raises ToolNotInstalled."""

from __future__ import annotations

from toolkit.system import tools

SYSTEMCTL = "systemctl"


def systemctl(*args: str, check: bool = True, timeout: float = 90):
    """``systemctl ARGS``; its CompletedProcess (ToolError on failure when ``check``)."""
    return tools.run([SYSTEMCTL, *args], check=check, timeout=timeout)


def is_active(unit: str) -> bool:
    try:
        return systemctl("is-active", "--quiet", unit, check=False, timeout=30).returncode == 0
    except tools.ToolError:  # not installed, or no answer: not running as far as we know
        return False


def start(*units: str, block: bool = True, check: bool = True) -> None:
    """``systemctl [--no-block] start UNITS``."""
    systemctl(*([] if block else ["--no-block"]), "start", *units, check=check)


def restart(unit: str, *, check: bool = True) -> None:
    systemctl("restart", unit, check=check)


def signal(unit: str, sig: str, *, whom: str = "main") -> None:
    """Send ``sig`` (e.g. ``SIGHUP``) to the unit's ``whom`` process (needs no D-Bus)."""
    systemctl("kill", f"--signal={sig}", f"--kill-whom={whom}", unit, timeout=30)


def power(action: str) -> None:
    """``systemctl reboot`` or ``systemctl poweroff``."""
    if action not in ("reboot", "poweroff"):
        raise ValueError(f"unknown power action {action!r}")
    systemctl(action)
