"""Running a restore: :func:`restore` takes a :class:`~toolkit.restore.plan.RestorePlan`.

Raw images (plain or gzip/xz/zstd-compressed, local or HTTP) are streamed:
decompressed and hashed on the way, written with O_DIRECT, never stored.
Container images go through qemu-img, from the local file, or from a
temporary file for a URL or a compressed container (see
:mod:`toolkit.restore.qemu` for why). Either way the first MiB is written
last (:mod:`toolkit.restore.write`). Then the partitions are re-read, the
disk fitted (:mod:`toolkit.restore.fit`), inspected
(:mod:`toolkit.restore.contents`), the boot entry planned or made
(:mod:`toolkit.restore.boot`), and a report written.

A given SHA-256 is checked before anything is written, by :func:`check_image`
(the one check-before-write step: the CLI, the menu and unattended mode all
come through it): a first pass over the image file as stored (phase
"checksum"). An HTTP image is spooled to the temporary directory on the way
when it fits there, and restored from the spool (downloaded once); else the
first pass reads it over HTTP and the restore downloads it again, refused
before writing when the server's ETag/Last-Modified says it is another file
now. The stream still hashes what it writes and compares before the first MiB
is written (a file changed between the two passes: exit 4, no table).

A file that changes on the server while it is streamed onto the disk
(:class:`toolkit.restore.source.EntityChanged`) is never spliced: the stream
restarts from byte 0 of the new file (the same kind and sector size, fits the
target), up to :data:`MAX_RESTARTS` times, then stops with "the image changed
on the server during the download (...): restore stopped; the disk is not
usable".
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
from toolkit.restore import boot, checks, contents, detect, fit, qemu, stream
from toolkit.restore import source as sourcemod
from toolkit.restore.checks import ChecksumMismatch, mismatch_message
from toolkit.restore.plan import RestorePlan, container_size, target_open_problem
from toolkit.restore.report import RestoreResult, write_restore_report
from toolkit.restore.source import read_full
from toolkit.restore.write import HEAD, Failed, Target, write_stream

ERRORS = (OSError, stream.CorruptImage, qemu.QemuError, fit.FitError)
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
    if not img.expected_sha256:
        return None
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


def _open_image(plan: RestorePlan, location: str | None = None, *, same: bool = True):
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
    with _open_image(plan) as src:
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
            raise Refused(f"cannot check the SHA-256 of the image {img.location}: {_plain(e)}; "
                          "nothing was written") from None
        finally:
            raw.close()
            if out is not None:
                out.close()
        reporter.update(done, force=True)
        return (raw.sha256.hexdigest(), getattr(src, "entity", None), src.resumes,
                list(getattr(src, "warnings", [])))


def _plain(e: BaseException) -> str:
    """An error's message without Python's class names or ``[Errno N]``."""
    if isinstance(e, OSError) and e.errno is not None and not isinstance(
            e, sourcemod.SourceError):
        where = f" ({e.filename})" if e.filename else ""
        return f"I/O error: {sourcemod.os_reason(e)}{where}"
    return str(e) or type(e).__name__


def restore(plan: RestorePlan, progress=None, cancel: threading.Event | None = None,
            consent=None) -> RestoreResult:
    """Restore ``plan.image`` onto ``plan.target``; ``progress(Progress)`` from this thread.

    The target is opened by the write gate (:meth:`Target.open`), which refuses unless
    ``consent`` (:class:`toolkit.disks.gate.Consent`: what the person typed or passed)
    names it and it overlaps nothing the restore reads (``plan.inputs``); it stays held
    until the fitting is done. A Python caller that passes no consent names the target
    by ``plan.target.path``.

    Never raises for a failed restore: the result's ``status`` ("ok", "refused",
    "failed", "mismatch", "cancelled") and ``message`` say what happened.
    """
    cancel = cancel or threading.Event()
    reporter = Reporter(progress, plan.options.interval)
    res = RestoreResult(status="failed", message="", image=plan.image, target=plan.target,
                        warnings=list(plan.warnings), started=time.time())
    target = None
    try:
        try:
            target = Target.open(plan.target, plan.inputs, consent=consent,
                                 source_role=plan.source_role)
        except OSError as e:
            raise Refused(target_open_problem(plan.target.path, e, writing=True)) from None
        checked = check_image(plan, cancel=cancel, reporter=reporter)
        if checked is not None:
            res.input_sha256, res.sha256_match = checked.sha256, True
            res.resumes = checked.resumes
            _warn(res, checked.warnings)
        if plan.image.format == detect.RAW:
            _stream(plan, target, reporter, cancel, res, checked)
        else:
            _container(plan, target, reporter, cancel, res, checked)
        done = f"restored {res.image_size} bytes onto {plan.target.node}" + \
            (", verified" if res.verify else "")
        try:
            _after(plan, reporter, res, target.hold)  # the gate still holds the disk
        except ERRORS as e:
            raise Failed(f"{done}, but fitting or inspecting the disk failed: {_plain(e)}"
                         ) from None
        res.status, res.message = "ok", done
    except ChecksumMismatch as e:
        res.status, res.message = "mismatch", "; ".join(e.problems)
        res.input_sha256, res.sha256_match = e.sha256, False
    except Refused as e:
        res.status, res.message = "refused", "; ".join(e.problems)
    except Failed as e:
        res.status, res.message = e.status, str(e)
    except ERRORS as e:
        res.message = _plain(e)
    finally:
        if res.status != "ok" and target is not None and target.fd >= 0 and res.wiped:
            try:
                target.wipe_ends(res.image_size or plan.image.size)
                res.message += "; the target's first and last MiB were zeroed again"
            except OSError as e:
                res.message += f"; zeroing the target's ends failed too: {_plain(e)}"
        if target is not None:
            target.close()
        if plan.checked is not None:
            plan.checked.close()
            plan.checked = None
        res.finished = time.time()
        res.report = write_restore_report(res)
    return res


def _warn(res, warnings) -> None:
    res.warnings += [w for w in warnings if w not in res.warnings]


def _stream(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res,
            checked: Checked | None) -> None:
    """Stream the image (or its spool) onto the target; a file changed on the server
    while it streams is restarted from its byte 0 (the disk written again), never
    spliced."""
    spool = checked.spool if checked else None
    changed = None  # why the stream restarts
    for attempt in range(MAX_RESTARTS + 1):
        src = _open_image(plan, spool, same=attempt == 0)
        try:
            _stream_once(plan, target, reporter, cancel, res, src, restarted=changed)
            return
        except (Failed, OSError, stream.CorruptImage):
            changed = getattr(src, "changed", None)
            if changed is None or cancel.is_set():
                raise
            if attempt == MAX_RESTARTS:
                raise Failed(f"{changed}: restore stopped after {MAX_RESTARTS} restarts; the "
                             "disk is not usable") from None
            res.warnings.append(f"{changed}, at byte {src.pos}: the download restarted from "
                                "byte 0 and the disk is written again from the start (the "
                                "two files are never mixed)")
        finally:
            res.resumes += getattr(src, "resumes", 0)
            _warn(res, getattr(src, "warnings", []))
            src.close()


def _same_kind(plan: RestorePlan, target: Target, src, head: bytes, changed) -> int | None:
    """After a restart on a changed file: the new one must be what was planned (the same
    compression, a raw image, the same sector size, fitting the target); its size."""
    img = plan.image
    why = f"{changed}: the new file"
    comp = detect.compression(head)
    try:
        data = stream.peek_decompressed(head, comp, HEAD) if comp else head
    except stream.CorruptImage:
        data = b""
    fmt = detect.container(data, None) if data else None
    if comp != img.compression or fmt != detect.RAW:
        what = f"{comp}-compressed" if comp else "not compressed"
        raise Failed(f"{why} is {what} and {detect.FORMAT_NAMES.get(fmt, 'unknown')}, not "
                     f"{img.kind}: restore stopped; the disk is not usable")
    geo = detect.geometry(data)
    if geo.sector_size and geo.sector_size != target.sector:
        raise Failed(f"{why} has {geo.sector_size}-byte sectors, the target "
                     f"{target.sector}: restore stopped; the disk is not usable")
    size = src.size if not comp else geo.disk_size
    if size is not None and size > target.size:
        raise Failed(f"{why} has {size} bytes, more than the target's {target.size}: restore "
                     "stopped; the disk is not usable")
    return size


def _stream_once(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res, src, *,
                 restarted: sourcemod.EntityChanged | None) -> None:
    """One stream of ``src`` onto the target; ``restarted``: why it is not the first (the
    new file is then checked to be what was planned, before anything is written)."""
    img = plan.image
    size, prefix = img.size, b""
    if restarted is not None:
        prefix = read_full(src, HEAD)
        size = _same_kind(plan, target, src, prefix, restarted)
    raw = stream.Input(src, prefix, background=True)
    back = None  # the read-back thread, stopped on every way out
    try:
        try:
            reader = stream.decompressor(raw, img.compression)
            head = read_full(reader, HEAD)
            if not head:
                raise Failed(f"{img.location} holds no data")
            target.wipe_ends(size)
            res.wiped = True
            known = size is not None
            end, digest, back = write_stream(
                reader, target, head=head, algorithm=plan.options.algorithm,
                reporter=reporter, cancel=cancel,
                total=size if known else (src.size or img.file_size or 0),
                progress_of=None if known else (lambda _pos: raw.consumed),
                read_back=plan.options.verify)
            res.image_size = end
            res.zeroed_bytes = target.zeroed
        finally:
            raw.close()
        res.input_sha256 = raw.sha256.hexdigest()
        res.image_hash, res.algorithm = digest.hexdigest, plan.options.algorithm
        _check_sha(img, res, written=True)
        if back:
            out = back.finish(digest, reporter, cancel)
            res.verify = {"method": "read back (O_DIRECT) behind the writer, after each "
                                    "fdatasync; BLAKE3 per region",
                          "match": out.match, "first_difference": out.first_difference,
                          "error": out.error, "read_while_writing": back.while_writing}
            if out.error:  # not read back in full: no verdict on the bytes, a failure
                raise Failed(f"verification did not finish: {out.error}")
            if not out.match:
                where = out.first_difference or {}
                raise Failed(f"verification failed: the target differs from the image in "
                             f"bytes {where.get('start')}-{where.get('end')} "
                             f"({out.differing_regions} regions)", "mismatch")
    finally:
        if back:
            back.stop()
    target.write_head(head)
    res.wiped = False  # the image's own first MiB is back: a valid table


def _check_sha(img, res, written: bool) -> None:
    if not img.expected_sha256:
        return
    res.sha256_match = res.input_sha256 == img.expected_sha256
    if not res.sha256_match:
        msg = mismatch_message(img.location, res.input_sha256, img.expected_sha256,
                               img.sha256_from)
        if written:  # checked before, so the file changed since (or was read wrong)
            raise Failed(msg + " (it matched before writing: the file changed since?): its "
                         "first MiB was not written", "mismatch")
        raise ChecksumMismatch(msg + "; nothing was written", res.input_sha256)


def _local_copy(plan: RestorePlan, reporter: Reporter, cancel, res, tmp: str,
                location: str | None = None) -> str:
    """Download and/or decompress a container image (or its spool, ``location``) into
    ``tmp``; return its path. A file changed on the server during the download is
    downloaded again from its start (nothing is written yet)."""
    img = plan.image
    path = os.path.join(tmp, "image." + img.format)
    for attempt in range(MAX_RESTARTS + 1):
        src = _open_image(plan, location, same=attempt == 0)
        try:
            raw = _copy_into(plan, reporter, cancel, src, path)
            break
        except (OSError, stream.CorruptImage):
            changed = getattr(src, "changed", None)
            if changed is None or cancel.is_set():
                raise
            if attempt == MAX_RESTARTS:
                raise Refused(f"{changed}, again and again: nothing was written") from None
            res.warnings.append(f"{changed}, at byte {src.pos}: the download restarted from "
                                "byte 0")
        finally:
            res.resumes += getattr(src, "resumes", 0)
            _warn(res, getattr(src, "warnings", []))
            src.close()
    res.input_sha256 = raw.sha256.hexdigest()
    _check_sha(img, res, written=False)
    return path


def _copy_into(plan: RestorePlan, reporter: Reporter, cancel, src, path: str):
    img = plan.image
    raw = stream.Input(src, background=True)
    try:
        reader = stream.decompressor(raw, img.compression)
        reporter.start("download" if img.is_url else "unpack", img.file_size or 0)
        with open(path, "wb") as f:
            while True:
                if cancel.is_set():
                    raise Failed("cancelled", "cancelled")
                data = reader.read(8 << 20)
                if not data:
                    break
                f.write(data)
                reporter.update(raw.consumed)
    finally:
        raw.close()
    reporter.update(raw.consumed, force=True)
    return raw


def _container(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res,
               checked: Checked | None) -> None:
    img, opts = plan.image, plan.options
    tmpdir = opts.tmpdir or tempfile.gettempdir()
    spool = checked.spool if checked else None
    with tempfile.TemporaryDirectory(prefix="rtk-restore-", dir=tmpdir) as tmp:
        path, curl = img.location, None
        if spool and not img.compression:
            path = spool  # downloaded and checked: qemu-img reads it
        elif img.is_url or img.compression:
            how = "download"
            if img.is_url and not img.compression:
                try:
                    how = qemu.http_strategy(img.file_size, tmpdir,
                                             want_hash=bool(img.expected_sha256),
                                             ca_file=opts.ca_file)
                except ValueError as e:
                    raise Refused(str(e)) from None
            if how == "curl":
                curl = {"insecure": opts.insecure}
            else:
                path = _local_copy(plan, reporter, cancel, res, tmp, spool)
        # the image as given was probed by the plan (a local one: qemu-img check and info);
        # a download or an unpacked copy is a new file, probed now
        probed = curl or path == img.location
        size = img.size if probed else container_size(path, img.format)
        head = qemu.first_mib(path, img.format, size, curl=curl)
        geo = detect.geometry(head)
        problems, _ = checks.check_target(plan.target, img.location, size, geo.sector_size,
                                          ())
        if problems:
            raise Refused(problems)
        res.image_size, res.table = size, geo.table
        target.wipe_ends(size)
        res.wiped = True
        if opts.verify:
            diff, early = qemu.convert_and_compare(path, img.format, target, size,
                                                   reporter, cancel, curl=curl)
            res.verify = {"method": "qemu-img compare (target read with O_DIRECT) of each "
                                    f"{qemu.piece_size(size - HEAD) >> 20} MiB piece once "
                                    "converted, while the next one converts",
                          "match": diff is None, "error": diff, "read_while_writing": early}
            if diff:
                raise Failed(f"verification failed: {diff}", "mismatch")
        else:
            reporter.start("write", size)
            qemu.convert_rest(path, img.format, target, size,
                              lambda f: reporter.update(HEAD + int(f * (size - HEAD))), cancel,
                              curl=curl)
        os.fsync(target.fd)
        target.write_head(head)
        res.wiped = False


def _after(plan: RestorePlan, reporter: Reporter, res, hold=None) -> None:
    """Fit the disk, re-read its table, inspect it, plan (and in UEFI mode make) the boot.

    The fitting tools read the table from the disk itself, so the kernel is told
    about it once, afterwards."""
    disk = plan.target.node
    reporter.start("finish", 1)
    res.fit = fit.fit(disk, image_size=res.image_size, disk_size=plan.target.size,
                      grow=plan.options.grow, hold=hold)
    contents.refresh_partitions(disk)
    res.contents = contents.inspect_disk(disk)
    bp = boot.plan_boot(disk, res.contents)
    if plan.options.boot and bp.command:
        bp = boot.apply_boot(bp)
    res.boot = bp
    reporter.update(1, force=True)

