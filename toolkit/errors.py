"""The exception every capability raises when a job must not start."""

from __future__ import annotations


class Refused(Exception):
    """The job (copy, verification, restore) must not start: nothing was written.
    ``problems`` says why, each in full."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))
