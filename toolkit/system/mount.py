"""``mount`` and ``umount``. A failure raises ToolError (``mount failed: ... (exit 32)``)."""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.system import tools


def mount(device: str, target: str, *, fstype: str | None = None,
          options: Sequence[str] = ()) -> None:
    """``mount [-t FSTYPE] [-o OPTIONS] DEVICE TARGET``."""
    tools.run(["mount", *(["-t", fstype] if fstype else []),
               *(["-o", ",".join(options)] if options else []), device, target], timeout=120)


def umount(target: str, *, lazy: bool = False) -> None:
    """``umount [-l] TARGET``."""
    tools.run(["umount", *(["-l"] if lazy else []), target], timeout=120)
