"""Where the live system keeps things: the state directory, the data partition, the boot
medium.

The state directory (mapfiles, reports, logs) is ``/var/log/rtk`` (:data:`LOG_DIR`;
``RTK_LOG_DIR`` replaces it, for tests). On the live system it lies on the tmpfs overlay
and is lost at reboot, unless a data partition labelled ``RTK-DATA`` was found at boot
(:mod:`toolkit.system.state`): that partition is then mounted at :data:`DATA_MOUNT` and
``/var/log/rtk`` becomes a symbolic link to its ``rtk`` directory, so every path the
toolkit writes stays the same.
"""

from __future__ import annotations

import os

LOG_DIR = os.environ.get("RTK_LOG_DIR", "/var/log/rtk")
LIVE_MEDIUM = "/run/live/medium"  # where live-boot mounts the boot medium
DATA_LABEL = "RTK-DATA"  # the label of the data partition that keeps the state across boots
DATA_MOUNT = "/run/rtk/data"  # where it is mounted (``$RTK_RUN_DIR/data`` when that is set)
STATE_SUBDIR = "rtk"  # the state directory on it: /run/rtk/data/rtk


def state_dir() -> str:
    """The state directory now (``RTK_LOG_DIR`` is read at each call, for tests)."""
    return os.environ.get("RTK_LOG_DIR", LOG_DIR)


def run_dir() -> str:
    """This boot's runtime directory (``RTK_RUN_DIR``, default ``/run/rtk``)."""
    return os.environ.get("RTK_RUN_DIR", "/run/rtk")


def data_mount() -> str:
    """Where the data partition is mounted: ``/run/rtk/data`` (under ``RTK_RUN_DIR``)."""
    return os.path.join(os.environ["RTK_RUN_DIR"], "data") if os.environ.get(
        "RTK_RUN_DIR") else DATA_MOUNT
