"""Bare-metal restore of OS images onto a disk (``rtk restore``, the menu's Restore).

What the menu and the command line call::

    plan = plan_restore(IMAGE, TARGET, RestoreOptions(grow=True))  # raises Refused
    result = restore(plan, progress=callback, cancel=event)          # RestoreResult
    result.status, result.message, result.exit_code, result.report.text

``restore`` checks a given SHA-256 before it writes anything (:func:`check_image`,
which unattended mode calls in its check phase: ``plan.checked`` keeps the
result and the spooled copy of an HTTP image for the restore).

IMAGE is a local file or an HTTP(S) URL: raw (optionally gzip/xz/zstd), qcow2,
VHD, VHDX or VMDK, recognised by content. See docs/restore.md.
"""

from toolkit.errors import Refused
from toolkit.jobs.progress import Progress
from toolkit.restore.checks import ChecksumMismatch
from toolkit.restore.engine import Checked, check_image, restore
from toolkit.restore.plan import ImageInfo, RestoreOptions, RestorePlan, plan_restore, probe_image
from toolkit.restore.report import RestoreResult

__all__ = ["Checked", "ChecksumMismatch", "ImageInfo", "Progress", "Refused", "RestoreOptions",
           "RestorePlan", "RestoreResult", "check_image", "plan_restore", "probe_image",
           "restore"]
