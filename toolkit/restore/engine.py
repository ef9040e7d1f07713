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

A ``udpcast://`` image (:mod:`toolkit.restore.multicast`) is a live stream that
cannot be read twice: no first pass. When there is room (:mod:`toolkit.restore.spool`)
it is held whole first, its SHA-256 checked there before anything is written, then
written from the spool as below. Else its first MiB is read before anything is
written (raw only; compression, sector size and size checked against the
target), the rest is written while hashed, and the SHA-256 is compared after
the rest and before the first MiB: a wrong image overwrites the disk but never
leaves one that looks valid (its first and last MiB zeroed, no table).

A file that changes on the server while it is streamed onto the disk
(:class:`toolkit.restore.source.EntityChanged`) is never spliced: the stream
restarts from byte 0 of the new file (the same kind and sector size, fits the
target), up to :data:`MAX_RESTARTS` times, then stops with "the image changed
on the server during the download (...): restore stopped; the disk is not
usable".
"""

from __future__ import annotations

import threading
import time

from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter
from toolkit.restore import (
    boot,
    bootmode,
    contents,
    detect,
    fit,
    linux_initramfs,
    multicast,
    qemu,
    stream,
    windows_drivers,
)
from toolkit.restore import layout as layoutmod
from toolkit.restore import shrink as shrinkmod
from toolkit.restore import source as sourcemod
from toolkit.restore import spool as spoolmod
from toolkit.restore.checks import ChecksumMismatch
from toolkit.restore.checksum import (
    MAX_RESTARTS,
    PASS_CHUNK,
    SPOOL_MARGIN,
    Checked,
    add_warnings,
    check_image,
    check_sha,
    open_image,
    plain,
    spool_fits,
)
from toolkit.restore.container import restore_container
from toolkit.restore.plan import RestorePlan, target_open_problem
from toolkit.restore.report import RestoreResult, write_restore_report, write_running_report
from toolkit.restore.source import read_full
from toolkit.restore.write import HEAD, Failed, Target, write_stream

ERRORS = (OSError, stream.CorruptImage, qemu.QemuError, fit.FitError)
__all__ = ["ERRORS", "MAX_RESTARTS", "PASS_CHUNK", "SPOOL_MARGIN", "Checked", "check_image",
           "restore", "spool_fits"]


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
        target.outage_limit = plan.options.outage_limit
        target.watch(reporter, cancel)  # an outage of its path: waited out, from now on
        res.report = write_running_report(res)  # a power cut leaves it; replaced at the end
        checked = check_image(plan, cancel=cancel, reporter=reporter) or \
            spoolmod.receive(plan, reporter, cancel)  # a multicast stream, held whole first
        if checked is not None:
            res.input_sha256 = checked.sha256
            res.sha256_match = True if plan.image.expected_sha256 else None
            res.resumes = checked.resumes
            add_warnings(res, checked.warnings)
        if plan.shrink is not None:  # onto a smaller disk: shrunk on an overlay first
            _shrunk(plan, target, reporter, cancel, res)
        elif plan.image.format == detect.RAW:
            _stream(plan, target, reporter, cancel, res, checked)
        else:
            restore_container(plan, target, reporter, cancel, res, checked)
        done = f"restored {res.image_size} bytes onto {plan.target.node}" + \
            (", verified" if res.verify else "")
        try:
            _after(plan, reporter, res, target.hold, cancel)  # the gate still holds the disk
        except ERRORS as e:
            if not cancel.is_set():
                raise Failed(f"{done}, but fitting or inspecting the disk failed: "
                             f"{plain(e)}") from None
        except MemoryError:  # the live system runs from RAM: one line, not a traceback
            raise Failed(f"{done}, but fitting or inspecting the disk ran out of "
                         "memory") from None
        if cancel.is_set():  # Ctrl-C during the last steps: their tools were stopped too
            raise Failed(f"cancelled after the image was written ({done}): the steps "
                         "after it (fitting, boot entry, drivers, initramfs) may not all "
                         "have run; see the report", "cancelled")
        res.status, res.message = "ok", done
    except ChecksumMismatch as e:
        res.status, res.message = "mismatch", "; ".join(e.problems)
        res.input_sha256, res.sha256_match = e.sha256, False
    except Refused as e:
        res.status, res.message = "refused", "; ".join(e.problems)
    except Failed as e:
        res.status, res.message = e.status, str(e)
    except ERRORS as e:
        res.message = plain(e)
    finally:
        if res.status != "ok" and target is not None and target.fd >= 0 and res.wiped:
            try:
                target.wipe_ends(res.image_size or plan.image.size)
                res.message += "; the target's first and last MiB were zeroed again"
            except (OSError, Failed) as e:  # Failed: an outage meanwhile, not waited out
                res.message += f"; zeroing the target's ends failed too: {plain(e)}"
        if target is not None:
            target.close()
        if plan.checked is not None:
            plan.checked.close()
            plan.checked = None
        res.finished = time.time()
        res.report = write_restore_report(res, paths=res.report)  # the running one's
    return res


def _stream(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res,
            checked: Checked | None) -> None:
    """Stream the image (or its spool) onto the target; a file changed on the server
    while it streams is restarted from its byte 0 (the disk written again), never
    spliced."""
    spool = checked.spool if checked else None
    changed = None  # why the stream restarts
    for attempt in range(MAX_RESTARTS + 1):
        src = open_image(plan, spool, same=attempt == 0)
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
            add_warnings(res, getattr(src, "warnings", []))
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
    if comp != img.compression or fmt != detect.RAW or detect.archive(data):
        what = f"{comp}-compressed" if comp else "not compressed"
        raise Failed(f"{why} is {what} and {detect.FORMAT_NAMES.get(fmt, 'unknown')}, not "
                     f"{img.kind}: restore stopped; the disk is not usable")
    geo = detect.geometry(data)
    if geo.sector_size and geo.sector_size != target.sector:
        raise Failed(f"{why} has {geo.sector_size}-byte sectors, the target "
                     f"{target.sector}: restore stopped; the disk is not usable")
    size = src.size if not comp else geo.disk_size
    ends = max(size or 0, geo.min_size or 0, geo.parts_end or 0)
    if ends > target.size:
        raise Failed(f"{why} has {ends} bytes, more than the target's {target.size}: restore "
                     "stopped; the disk is not usable")
    return size


def _multicast_kind(plan: RestorePlan, target: Target, head: bytes, res) -> int | None:
    """A multicast stream's first MiB, before anything is written: a raw image (plain or
    gzip/xz/zstd), the target's sector size, fitting it, the boot mode a plan requires
    (:mod:`toolkit.restore.bootmode`); records what it is in the plan's image (the
    report's kind, table); returns its size (None: unknown)."""
    img = plan.image
    if not head:
        raise Failed(f"{img.location}: the multicast stream holds no data; nothing was written")
    comp = detect.compression(head)
    try:
        data = stream.peek_decompressed(head, comp, HEAD) if comp else head
    except stream.CorruptImage as e:
        raise Refused(f"{img.location}: {e}; nothing was written") from None
    fmt = detect.container(data, None)
    if why := detect.not_a_disk_image(img.location, data):
        raise Refused(why)
    if fmt != detect.RAW:
        raise Refused(f"{img.location} streams a {detect.FORMAT_NAMES.get(fmt, fmt)} image: "
                      "only raw images (plain, gzip, xz, zstd) are restored from multicast; "
                      "nothing was written")
    geo = detect.geometry(data)
    img.compression, img.table, img.sector_size = comp, geo.table, geo.sector_size
    # a plain stream's length: held whole, or told by size= (the file is the image)
    told = img.file_size if img.file_size is not None else _told_size(img.location)
    length = told if comp is None else None
    img.size = length if length is not None else geo.disk_size
    cut = detect.truncation(length, geo)
    if cut:
        raise Refused(f"{img.location}: {cut}; nothing was written")
    if geo.sector_size and geo.sector_size != target.sector:
        raise Refused(f"{img.location} has {geo.sector_size}-byte sectors, the target "
                      f"{target.sector}: nothing was written")
    if img.size is not None and img.size > target.size:
        raise Refused(f"{img.location} holds a {img.size}-byte disk, more than the target's "
                      f"{target.size}: nothing was written")
    ends = max(geo.min_size or 0, geo.parts_end or 0)  # its partitions end there at least
    if ends > target.size:
        raise Refused(f"{img.location}: its partition table describes a disk of at least "
                      f"{ends} bytes (partition {geo.last_partition} ends at byte {ends}), "
                      f"more than the target's {target.size}: nothing was written")
    if img.size is None:
        add_warnings(res, [spoolmod.size_unknown(comp)])
    img.layout = layoutmod.from_head(data)
    problems, warnings = bootmode.check(img.layout, plan.options.boot_mode,
                                        plan.options.sys_root)
    if problems:
        raise Refused(problems)
    add_warnings(res, [*warnings, *layoutmod.notes(img.layout, plan.options.grow)])
    return img.size


def _told_size(location: str) -> int | None:
    """The image file's size a ``udpcast://`` location's ``size=`` gives, else None."""
    try:
        return multicast.parse(location).size
    except ValueError:
        return None


def _shrunk(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res) -> None:
    """The image fitted to the smaller target (:mod:`toolkit.restore.shrink`: shrunk on an
    overlay, never in the image) streamed onto it like a raw image, and verified against
    that."""
    img = plan.image
    with shrinkmod.prepared(img.location, img.format, plan.shrink, reporter, cancel) as src:
        res.shrink = {**plan.shrink.to_dict(), "done": src.done}
        add_warnings(res, [d for d in src.done if "CHANGED" in d])  # e2fsck repaired: said
        _stream_once(plan, target, reporter, cancel, res, src, restarted=None, composed=True)


def _stream_once(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res, src, *,
                 restarted: sourcemod.EntityChanged | None, composed: bool = False) -> None:
    """One stream of ``src`` onto the target; ``restarted``: why it is not the first (the
    new file is then checked to be what was planned, before anything is written);
    ``composed``: ``src`` is the image fitted to a smaller disk (its size; the image file's
    SHA-256 was checked before, by :func:`check_image`)."""
    img = plan.image
    size, prefix = (src.size if composed else img.size), b""
    if restarted is not None:
        prefix = read_full(src, HEAD)
        size = _same_kind(plan, target, src, prefix, restarted)
    elif sourcemod.is_multicast(img.location):
        prefix = read_full(src, HEAD)  # MulticastError: no sender; nothing written
        size = _multicast_kind(plan, target, prefix, res)
    raw = stream.Input(src, prefix, background=True)
    back = None  # the read-back thread, stopped on every way out
    try:
        try:
            reader = stream.decompressor(raw, img.compression)
            head = read_full(reader, HEAD)
            if not head:
                raise Failed(f"{img.location} holds no data")
            target.wipe_ends(size)
            res.wiped = res.touched = True
            known = size is not None
            end, digest, back = write_stream(
                reader, target, head=head, algorithm=plan.options.algorithm,
                reporter=reporter, cancel=cancel,
                total=size if known else (src.size or img.file_size or 0),
                progress_of=None if known else (lambda _pos: raw.consumed),
                read_back=plan.options.verify)
            res.image_size = end
            res.zeroed_bytes = target.zeroed
            cut = detect.truncation(end, detect.geometry(head))
            if cut:  # a stream that ended early: never a table over half an image
                raise Failed(f"{img.location}: {cut}; its first MiB was not written (no "
                             "partition table: the disk does not look valid)")
        finally:
            raw.close()
        res.image_hash, res.algorithm = digest.hexdigest, plan.options.algorithm
        if not composed:
            res.input_sha256 = raw.sha256.hexdigest()
            check_sha(img, res, written=True)
        else:  # the image file was hashed before writing: it must still be that file
            shrinkmod.unchanged(img.location, plan.shrink)
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


def _after(plan: RestorePlan, reporter: Reporter, res, hold=None, cancel=None) -> None:
    """Fit the disk, re-read its table, inspect it, plan (and in UEFI mode make) the boot,
    make a Windows image's storage drivers start at boot (:mod:`~toolkit.restore.windows_drivers`).

    The fitting tools read the table from the disk itself, so the kernel is told
    about it once, afterwards."""
    disk = plan.target.node
    reporter.start("finish", 1)
    res.fit = fit.fit(disk, image_size=res.image_size, disk_size=plan.target.size,
                      grow=plan.options.grow, hold=hold)
    contents.refresh_partitions(disk)
    res.contents = contents.inspect_disk(disk)
    bp = boot.plan_boot(disk, res.contents, mode=boot.firmware_mode(plan.options.sys_root),
                        layout=plan.image.layout)
    if plan.options.boot and bp.command:
        bp = boot.apply_boot(bp)
    res.boot = bp
    res.windows_drivers = windows_drivers.run(plan, res, hold)  # the gate lends a partition
    res.linux_initramfs = linux_initramfs.run(plan, res, hold, cancel)  # a Linux root's
    reporter.update(1, force=True)
