"""The SHA-256 checked before anything is written: :func:`check_image` (a first pass over
the image file as stored, phase "checksum"; an HTTP image spooled to the temporary
directory on the way when it fits there), :class:`Checked` (its result and spool), and
what the restore's paths share: :func:`open_image` (refused when an HTTP image changed
since it was inspected), :func:`check_sha` (the stream's hash against the given one) and
:func:`plain` (an error in plain words).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field

from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter
from toolkit.restore import detect, stream
from toolkit.restore import source as sourcemod
from toolkit.restore.checks import ChecksumMismatch, mismatch_message
from toolkit.restore.plan import RestorePlan
from toolkit.restore.write import Failed

MAX_RESTARTS = 2  # a file changed on the server mid-download: restarts from zero
SPOOL_MARGIN = 64 << 20  # free space left in the temporary directory after a spool
PASS_CHUNK = 8 << 20


@dataclass
class Checked:
    """The image's SHA-256, checked before writing (:func:`check_image`). ``spool``: the
    path of the HTTP image's copy in the temporary directory (restored from), or None;
    ``entity``: the HTTP answer's (ETag, Last-Modified, size) of the first pass."""

    sha256: str
    spool: str | None = None
    entity: tuple | None = None
    resumes: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def close(self) -> None:
        """Remove the spooled copy (idempotent)."""
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp, self.spool = None, None


def spool_fits(size: int | None, tmpdir: str) -> bool:
    """Whether a file of ``size`` bytes fits in ``tmpdir`` (with a margin left free)."""
    try:
        return size is not None and size + SPOOL_MARGIN <= shutil.disk_usage(tmpdir).free
    except OSError:
        return False


def check_image(plan: RestorePlan, progress=None, cancel: threading.Event | None = None, *,
                reporter: Reporter | None = None) -> Checked | None:
    """Check the image's expected SHA-256 before anything is written: None without one.

    A first pass hashes the image file as stored (the value ``sha256sum`` prints), with
    progress (phase "checksum"); an HTTP image is spooled to the temporary directory
    (``options.tmpdir``) on the way when it fits there. Raises :class:`ChecksumMismatch`
    (nothing written), :class:`Refused` (the file changed on the server during the pass
    or since it was inspected), :class:`Failed` ("cancelled") or OSError (cannot read it).
    The result is kept in ``plan.checked`` (the restore then uses it: call
    ``plan.checked.close()`` to drop the spool when no restore follows).
    """
    img = plan.image
    if not img.expected_sha256 or sourcemod.is_multicast(img.location):
        return None  # a live stream: checked while written, before its first MiB
    if plan.checked is not None:
        return plan.checked
    cancel = cancel or threading.Event()
    reporter = reporter or Reporter(progress, plan.options.interval)
    tmpdir = plan.options.tmpdir or tempfile.gettempdir()
    t0, tmp, spool = time.monotonic(), None, None
    if img.is_url and spool_fits(img.file_size, tmpdir):
        tmp = tempfile.TemporaryDirectory(prefix="rtk-restore-", dir=tmpdir)
        spool = os.path.join(tmp.name, "image")
    elif img.is_url and img.format != detect.RAW:
        # no room: the container path downloads it itself (checked before writing) or
        # refuses (qemu.http_strategy); a first pass would only be read in vain
        return None
    try:
        got, entity, resumes, warnings = _hash_pass(plan, reporter, cancel, spool)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    checked = Checked(got, spool, entity, resumes, warnings, time.monotonic() - t0, tmp)
    if got != img.expected_sha256:
        checked.close()
        raise ChecksumMismatch(mismatch_message(img.location, got, img.expected_sha256,
                                                img.sha256_from) + "; nothing was written",
                               got)
    plan.checked = checked
    return checked


def open_image(plan: RestorePlan, location: str | None = None, *, same: bool = True):
    """A source of the image (or of ``location``: a spool). An HTTP image must be the file
    the plan inspected (``same``): else :class:`Refused`, before anything is written."""
    img = plan.image
    src = sourcemod.open_source(location or img.location, **plan.options.source_kw())
    entity = getattr(src, "entity", None)
    if same and location is None and img.http_entity is not None and entity is not None \
            and not sourcemod.same_entity(img.http_entity, entity):
        src.close()
        raise Refused(f"the image {img.location} changed on the server since it was inspected "
                      f"({sourcemod.describe_entity(img.http_entity)}, now "
                      f"{sourcemod.describe_entity(entity)}): nothing was written; start the "
                      "restore again to inspect the new file")
    return src


def _hash_pass(plan: RestorePlan, reporter: Reporter, cancel, spool: str | None):
    """``(sha256, entity, resumes, warnings)`` of one pass over the image (into ``spool``).
    The reading and hashing run in a thread of their own (:class:`stream.Input`), the
    spool's writes here."""
    img = plan.image
    done = 0
    with open_image(plan) as src:
        reporter.start("checksum", img.file_size or src.size or 0)
        raw = stream.Input(src, background=True)
        out = open(spool, "wb") if spool else None  # noqa: SIM115 - closed below
        try:
            while data := raw.read(PASS_CHUNK):
                if cancel.is_set():
                    raise Failed("cancelled during the SHA-256 check: nothing was written",
                                 "cancelled")
                if out is not None:
                    out.write(data)
                done += len(data)
                reporter.update(done)
        except sourcemod.EntityChanged as e:
            raise Refused(f"{e}, while its SHA-256 was checked: nothing was written; start the "
                          "restore again to inspect the new file") from None
        except OSError as e:  # the server went away, a read error, the spool's disk full
            raise Refused(f"cannot check the SHA-256 of the image {img.location}: {plain(e)}; "
                          "nothing was written") from None
        finally:
            raw.close()
            if out is not None:
                out.close()
        reporter.update(done, force=True)
        return (raw.sha256.hexdigest(), getattr(src, "entity", None), src.resumes,
                list(getattr(src, "warnings", [])))


def plain(e: BaseException) -> str:
    """An error's message without Python's class names or ``[Errno N]``."""
    if isinstance(e, OSError) and e.errno is not None and not isinstance(
            e, sourcemod.SourceError):
        where = f" ({e.filename})" if e.filename else ""
        return f"I/O error: {sourcemod.os_reason(e)}{where}"
    return str(e) or type(e).__name__


def check_sha(img, res, written: bool) -> None:
    if not img.expected_sha256:
        return
    res.sha256_match = res.input_sha256 == img.expected_sha256
    if not res.sha256_match:
        msg = mismatch_message(img.location, res.input_sha256, img.expected_sha256,
                               img.sha256_from)
        if written and sourcemod.is_multicast(img.location):  # a live stream: checked now
            raise Failed(msg + ": the rest of the disk was overwritten, its first MiB was "
                         "not written (no partition table: the disk does not look valid)",
                         "mismatch")
        if written:  # checked before, so the file changed since (or was read wrong)
            raise Failed(msg + " (it matched before writing: the file changed since?): its "
                         "first MiB was not written", "mismatch")
        raise ChecksumMismatch(msg + "; nothing was written", res.input_sha256)


def add_warnings(res, warnings) -> None:
    res.warnings += [w for w in warnings if w not in res.warnings]
