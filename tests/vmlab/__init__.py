"""The VM lab: QEMU guests booted from the ISO, a real tgtd, an HTTP server."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """Terminate, then kill if it does not go within ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
