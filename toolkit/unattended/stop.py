"""Stop: the exception an unattended run's phase raises to end the run there, before the
first write to any disk (or, after a partial write, with status "failed")."""

from __future__ import annotations


class Stop(Exception):
    """A check failed: stop before the first write. ``status`` is "refused" (nothing was
    written) unless said otherwise."""

    def __init__(self, phase: str, message: str, status: str = "refused"):
        super().__init__(message)
        self.phase, self.status = phase, status
