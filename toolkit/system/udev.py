"""Waiting for udev, and for device nodes without it.

With udev (the live system), ``udevadm settle`` and ``udevadm wait`` return
once the device nodes and their ``/dev/disk/by-*`` links exist. Without
``udevadm`` (a container, a build host, a minimal Debian) there is no daemon
to wait for and no links will come: the kernel's devtmpfs makes the nodes
themselves, so the settle is skipped (said once in the log) and callers wait
for the nodes they need with :func:`wait_for_nodes`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable

from toolkit.system import tools

UDEVADM = "udevadm"
log = logging.getLogger(__name__)
_said = False  # the missing udevadm was logged (once per process)


def _have_udevadm() -> bool:
    """udevadm is on PATH; if not, say once in the log that the settle is skipped."""
    global _said
    if tools.installed(UDEVADM):
        return True
    if not _said:
        _said = True
        log.info("%s: udev settle skipped (no udev: device nodes come from devtmpfs and are "
                 "waited for by polling /dev; no /dev/disk/by-* links)",
                 tools.ToolNotInstalled([UDEVADM]))
    return False


def settle(timeout: float = 60) -> bool:
    """Wait for udev to finish creating (or removing) device nodes and links; False when
    there is no udevadm (then nothing waits)."""
    if not _have_udevadm():
        return False
    with contextlib.suppress(tools.ToolError):  # timed out: the caller checks what it needs
        tools.run([UDEVADM, "settle", f"--timeout={timeout:g}"], check=False,
                  timeout=timeout + 10)
    return True


def wait_devices(devices: list[str], timeout: float = 30) -> None:
    """Wait until udev has processed each device (its by-path and by-id links exist):
    ``udevadm wait --settle`` (systemd 251+), else ``udevadm settle``; without udevadm,
    until the device nodes exist."""
    if not devices:
        return
    if not _have_udevadm():
        wait_for_nodes(devices, timeout=min(timeout, 10))
        return
    try:
        p = tools.run([UDEVADM, "wait", "--settle", f"--timeout={timeout:g}", *devices],
                      check=False, timeout=timeout + 10)
    except tools.ToolError:
        return
    if p.returncode != 0:
        settle(timeout)


def wait_for_nodes(paths: Iterable[str], timeout: float = 10, interval: float = 0.05
                   ) -> list[str]:
    """Poll until every path exists, at most ``timeout`` seconds; the ones still missing."""
    missing = [p for p in paths if not os.path.exists(p)]
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        time.sleep(interval)
        missing = [p for p in missing if not os.path.exists(p)]
    return missing
