"""Plain console lines for an unattended run: no cursor movement, no colours, so that
the same text reads well on tty1, the serial console and in the journal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from toolkit.jobs.progress import Progress


class Console:
    """``say()`` writes ``rtk: TEXT`` lines to every stream; ``progress()`` at most one
    line per ``interval`` seconds (and at each phase change). Never raises."""

    def __init__(self, streams: list[TextIO] | tuple[TextIO, ...] | None = None,
                 interval: float = 2.0, prefix: str = "rtk: "):
        self.streams = list(streams) if streams is not None else [sys.stdout]
        self.interval, self.prefix = interval, prefix
        self.last, self.phase = 0.0, None
        self.lines: list[str] = []
        self.last_banner: list[str] = []

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.lines.append(line)
            for s in self.streams:
                try:
                    s.write(self.prefix + line + "\n")
                    s.flush()
                except (OSError, ValueError):
                    pass

    def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if p.phase == self.phase and now - self.last < self.interval and (
                p.done < p.total or not p.total):  # total 0: bytes of a length not known
            return
        self.last, self.phase = now, p.phase
        self.say(p.line())

    def banner(self, title: str, lines: list[str]) -> None:
        """A block that stands out on a screen full of lines."""
        bar = "*" * 72
        self.last_banner = [title, *lines]
        self.say("\n".join([bar, title, *lines, bar]))
