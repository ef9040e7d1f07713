"""Bare-metal restore of OS images onto a disk (``rtk restore``, the menu's Restore).

What the menu and the command line call::

    plan = plan_restore(IMAGE, TARGET, RestoreOptions(grow=True))  # raises Refused
    result = restore(plan, progress=callback, cancel=event)          # RestoreResult
    result.status, result.message, result.exit_code, result.report.text

IMAGE is a local file or an HTTP(S) URL: raw (optionally gzip/xz/zstd), qcow2,
VHD, VHDX or VMDK, recognised by content. See docs/restore.md.
"""

from toolkit.errors import Refused
from toolkit.jobs.progress import Progress
from toolkit.restore.engine import restore
from toolkit.restore.plan import ImageInfo, RestoreOptions, RestorePlan, plan_restore, probe_image
from toolkit.restore.report import RestoreResult

__all__ = ["ImageInfo", "Progress", "Refused", "RestoreOptions", "RestorePlan", "RestoreResult",
           "plan_restore", "probe_image", "restore"]
