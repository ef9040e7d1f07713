"""The unattended run at boot: where its lines go, and who has the consoles after it.

``rtk-unattended.service`` (``ConditionKernelCommandLine=rtk.mode``) runs
``rtk unattended --boot``. While it runs it owns tty1 and the serial consoles of
the command line (``console=ttyS0,...``): their gettys, which would start the menu,
are held back by ``rtk-console-free`` (an ``ExecCondition=`` of the getty units)
until :func:`hand_over` writes :func:`handover_path` and starts them again:

- ``menu``: the menu starts as after a normal boot;
- ``shell``: a root shell, no menu;
- ``stay`` (a failure, a stop before writing, a dry run): the console shows the
  reason and waits for Enter before it opens the menu, so the reason stays on the
  screen until someone reads it. Nothing reboots.

Every line also goes to the journal (standard output) and to
``/var/log/rtk/unattended.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import TextIO

from toolkit.atomic import write_atomic
from toolkit.jobs import report
from toolkit.system import systemctl, tools
from toolkit.unattended.cmdline import Cmdline, CmdlineError

SERIAL_PREFIXES = ("ttyS", "ttyAMA", "ttyUSB", "hvc")
CLEAR = "\033[H\033[2J"


def run_dir() -> str:
    return os.environ.get("RTK_RUN_DIR", "/run/rtk")


def handover_path() -> str:
    """The file that frees the consoles (read by rtk-console-free and rtk-console)."""
    return os.path.join(run_dir(), "unattended-console.json")


def console_ttys(cl: Cmdline | None) -> list[str]:
    """tty1 and every serial console of the command line, in order, without repeats."""
    out = ["tty1"]
    try:
        values = cl.raw_all("console") if cl is not None else []
    except CmdlineError:  # a bare "console" without a value
        values = []
    for value in values:
        name = value.split(",", 1)[0].removeprefix("/dev/")
        if name.startswith(SERIAL_PREFIXES) and name not in out:
            out.append(name)
    return out


def open_streams(ttys: list[str], dev: str | None = None) -> list[TextIO]:
    """Standard output (the journal), each console that opens, and the log file.
    ``dev``: where the consoles are (default ``$RTK_CONSOLE_DIR`` or /dev)."""
    dev = dev or os.environ.get("RTK_CONSOLE_DIR", "/dev")
    streams: list[TextIO] = [sys.stdout]
    for name in ttys:
        try:
            fd = os.open(os.path.join(dev, name), os.O_WRONLY | os.O_NOCTTY)
        except OSError:
            continue
        f = os.fdopen(fd, "w", encoding="utf-8", errors="replace", buffering=1)
        if name.startswith("tty") and name[3:].isdigit():
            f.write(CLEAR)  # a virtual console: start from a clean screen
        streams.append(f)
    try:
        os.makedirs(report.log_dir(), exist_ok=True)
        log = open(os.path.join(report.log_dir(), "unattended.log"), "a",  # noqa: SIM115
                   encoding="utf-8", buffering=1)
        streams.append(Stamped(log))
    except OSError:
        pass
    return streams


class Stamped:
    """A text stream that starts every line with the local date and time (the log)."""

    def __init__(self, f: TextIO):
        self.f, self.at_start = f, True

    def write(self, text: str) -> None:
        for piece in text.splitlines(keepends=True):
            if self.at_start:
                self.f.write(time.strftime("%Y-%m-%d %H:%M:%S "))
            self.f.write(piece)
            self.at_start = piece.endswith("\n")

    def flush(self) -> None:
        self.f.flush()


def start_units(units: list[str]) -> None:
    """``systemctl --no-block start`` (no systemd, in a container: nothing happens but a
    line in the tools log)."""
    with contextlib.suppress(tools.ToolError):
        systemctl.start(*units, block=False, check=False)


def hand_over(action: str, lines: list[str], ttys: list[str]) -> str:
    """Free the consoles for ``action`` (menu, shell, stay) and start their gettys
    (not for reboot and poweroff: the file only tells rtk-unattended-post that the
    run ended as planned). ``lines`` are shown again by a held console. Returns the
    handover file's path."""
    path = handover_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, json.dumps({"action": action, "lines": lines}))
    if action in ("reboot", "poweroff"):
        return path
    units = [f"getty@{t}.service" if t.startswith("tty") and t[3:].isdigit()
             else f"serial-getty@{t}.service" for t in ttys]
    start_units(units)
    return path
