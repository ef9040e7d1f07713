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
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time

from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter
from toolkit.restore import boot, checks, contents, detect, fit, qemu, stream
from toolkit.restore import source as sourcemod
from toolkit.restore.plan import RestorePlan, container_size
from toolkit.restore.report import RestoreResult, write_restore_report
from toolkit.restore.source import read_full
from toolkit.restore.write import HEAD, Failed, Target, write_stream

ERRORS = (OSError, stream.CorruptImage, qemu.QemuError, fit.FitError)


def restore(plan: RestorePlan, progress=None, cancel: threading.Event | None = None,
            ) -> RestoreResult:
    """Restore ``plan.image`` onto ``plan.target``; ``progress(Progress)`` from this thread.

    Never raises for a failed restore: the result's ``status`` ("ok", "refused",
    "failed", "mismatch", "cancelled") and ``message`` say what happened.
    """
    cancel = cancel or threading.Event()
    reporter = Reporter(progress, plan.options.interval)
    res = RestoreResult(status="failed", message="", image=plan.image, target=plan.target,
                        warnings=list(plan.warnings), started=time.time())
    target = None
    try:
        target = Target(plan.target.path)
        if plan.image.format == detect.RAW:
            _stream(plan, target, reporter, cancel, res)
        else:
            _container(plan, target, reporter, cancel, res)
        target.close()
        done = f"restored {res.image_size} bytes onto {plan.target.node}" + \
            (", verified" if res.verify else "")
        try:
            _after(plan, reporter, res)
        except ERRORS as e:
            raise Failed(f"{done}, but fitting or inspecting the disk failed: {e}") from None
        res.status, res.message = "ok", done
    except Refused as e:
        res.status, res.message = "refused", "; ".join(e.problems)
    except Failed as e:
        res.status, res.message = e.status, str(e)
    except ERRORS as e:
        res.message = f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else str(e)
    finally:
        if res.status != "ok" and target is not None and target.fd >= 0 and res.wiped:
            try:
                target.wipe_ends(res.image_size or plan.image.size)
                res.message += "; the target's first and last MiB were zeroed again"
            except OSError as e:
                res.message += f"; zeroing the target's ends failed too: {e}"
        if target is not None:
            target.close()
        res.finished = time.time()
        res.report = write_restore_report(res)
    return res


def _stream(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res) -> None:
    img = plan.image
    src = sourcemod.open_source(img.location, **plan.options.source_kw())
    raw = stream.Input(src, background=True)
    back = None  # the read-back thread, stopped on every way out
    try:
        try:
            reader = stream.decompressor(raw, img.compression)
            head = read_full(reader, HEAD)
            if not head:
                raise Failed(f"{img.location} holds no data")
            target.wipe_ends(img.size)
            res.wiped = True
            known = img.size is not None
            end, digest, back = write_stream(
                reader, target, head=head, algorithm=plan.options.algorithm,
                reporter=reporter, cancel=cancel,
                total=img.size if known else (img.file_size or 0),
                progress_of=None if known else (lambda _pos: raw.consumed),
                read_back=plan.options.verify)
            res.image_size = end
            res.resumes = getattr(src, "resumes", 0)
            res.zeroed_bytes = target.zeroed
        finally:
            raw.close()
            src.close()
        res.input_sha256 = raw.sha256.hexdigest()
        res.image_hash, res.algorithm = digest.hexdigest, plan.options.algorithm
        _check_sha(img, res, written=True)
        if back:
            out = back.finish(digest, reporter, cancel)
            res.verify = {"method": "read back (O_DIRECT) behind the writer, after each "
                                    "fdatasync; BLAKE3 per region",
                          "match": out.match, "first_difference": out.first_difference,
                          "error": out.error, "read_while_writing": back.while_writing}
            if not out.match:
                where = out.first_difference or {}
                extra = f"; {out.error}" if out.error else ""
                raise Failed(f"verification failed: the target differs from the image in "
                             f"bytes {where.get('start')}-{where.get('end')} "
                             f"({out.differing_regions} regions){extra}", "mismatch")
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
        msg = (f"SHA-256 mismatch: the image {img.location} hashes to {res.input_sha256}, "
               f"expected {img.expected_sha256} (from {img.sha256_from})")
        if written:
            raise Failed(msg + ": its first MiB was not written", "mismatch")
        raise Refused(msg + "; nothing was written")


def _local_copy(plan: RestorePlan, reporter: Reporter, cancel, res, tmp: str) -> str:
    """Download and/or decompress a container image into ``tmp``; return its path."""
    img = plan.image
    path = os.path.join(tmp, "image." + img.format)
    with sourcemod.open_source(img.location, **plan.options.source_kw()) as src:
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
        res.resumes = getattr(src, "resumes", 0)
    reporter.update(raw.consumed, force=True)
    res.input_sha256 = raw.sha256.hexdigest()
    _check_sha(img, res, written=False)
    return path


def _container(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res) -> None:
    img, opts = plan.image, plan.options
    tmpdir = opts.tmpdir or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(prefix="rtk-restore-", dir=tmpdir) as tmp:
        path, curl = img.location, None
        if img.is_url or img.compression:
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
                path = _local_copy(plan, reporter, cancel, res, tmp)
        elif img.expected_sha256:
            res.input_sha256 = _hash_file(path, reporter, cancel)
            _check_sha(img, res, written=False)
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
            diff, early = qemu.convert_and_compare(path, img.format, target.path, size,
                                                   reporter, cancel, curl=curl)
            res.verify = {"method": "qemu-img compare (target read with O_DIRECT) of each "
                                    f"{qemu.piece_size(size - HEAD) >> 20} MiB piece once "
                                    "converted, while the next one converts",
                          "match": diff is None, "error": diff, "read_while_writing": early}
            if diff:
                raise Failed(f"verification failed: {diff}", "mismatch")
        else:
            reporter.start("write", size)
            qemu.convert_rest(path, img.format, target.path, size,
                              lambda f: reporter.update(HEAD + int(f * (size - HEAD))), cancel,
                              curl=curl)
        os.fsync(target.fd)
        target.write_head(head)
        res.wiped = False


def _hash_file(path: str, reporter: Reporter, cancel) -> str:
    h, done = hashlib.sha256(), 0
    reporter.start("checksum", os.path.getsize(path))
    with open(path, "rb") as f:
        while data := f.read(8 << 20):
            if cancel.is_set():
                raise Failed("cancelled", "cancelled")
            h.update(data)
            done += len(data)
            reporter.update(done)
    return h.hexdigest()


def _after(plan: RestorePlan, reporter: Reporter, res) -> None:
    """Fit the disk, re-read its table, inspect it, plan (and in UEFI mode make) the boot.

    The fitting tools read the table from the disk itself, so the kernel is told
    about it once, afterwards."""
    disk = plan.target.node
    reporter.start("finish", 1)
    res.fit = fit.fit(disk, image_size=res.image_size, disk_size=plan.target.size,
                      grow=plan.options.grow)
    contents.refresh_partitions(disk)
    res.contents = contents.inspect_disk(disk)
    bp = boot.plan_boot(disk, res.contents)
    if plan.options.boot and bp.command:
        bp = boot.apply_boot(bp)
    res.boot = bp
    reporter.update(1, force=True)

