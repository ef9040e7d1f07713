"""Log sources the menu's log viewer shows: the toolkit's own reports and logs
under /var/log/rtk (on the RTK-DATA partition when there is one:
:mod:`toolkit.system.state`), the kernel ring buffer and this boot's journal. The
Logs screen also saves them all as one bundle (:mod:`toolkit.system.bundle`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from toolkit.atomic import TMP_SUFFIX
from toolkit.system import tools
from toolkit.system.paths import LOG_DIR

MAX_BYTES = 2 * 1024 * 1024  # the tail of a file that the viewer shows


@dataclass(frozen=True)
class LogSource:
    title: str
    kind: str  # "file" or "command"
    target: str | tuple[str, ...]


def sources(log_dir: str = LOG_DIR) -> list[LogSource]:
    """Newest toolkit file first, then the system's logs."""
    files = []
    if os.path.isdir(log_dir):
        for name in os.listdir(log_dir):
            path = os.path.join(log_dir, name)
            if os.path.isfile(path) and not name.endswith(TMP_SUFFIX):  # a write under way
                files.append((os.path.getmtime(path), path))
    out = [LogSource(os.path.basename(p), "file", p) for _, p in sorted(files, reverse=True)]
    out.append(LogSource("Kernel messages (dmesg)", "command", ("dmesg", "--ctime")))
    out.append(
        LogSource("System journal, this boot", "command",
                  ("journalctl", "-b", "--no-pager", "-n", "3000", "-o", "short-monotonic"))
    )
    return out


def read(source: LogSource) -> str:
    """The text of a log, or a one-line explanation of why it cannot be read."""
    if source.kind == "file":
        try:
            with open(source.target, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - MAX_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"cannot read {source.target}: {e.strerror}"
    try:
        proc = tools.run(list(source.target), check=False, timeout=20)
    except tools.ToolError as e:  # "dmesg is not installed (util-linux)", a timeout
        return f"cannot run {source.target[0]}: {e}"
    return proc.stdout[-MAX_BYTES:] or proc.stderr or "(empty)"
