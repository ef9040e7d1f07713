"""Where the live system keeps things: the log directory and the boot medium."""

from __future__ import annotations

import os

LOG_DIR = os.environ.get("RTK_LOG_DIR", "/var/log/rtk")
LIVE_MEDIUM = "/run/live/medium"  # where live-boot mounts the boot medium
