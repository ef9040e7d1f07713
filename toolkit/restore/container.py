"""The container path of a restore (qcow2, VHD, VHDX, VMDK): the image downloaded and/or
decompressed into a temporary file when it must be (:func:`local_copy`), or read by
qemu-img over HTTP (curl); a VHDX whose log was never replayed replayed first
(:mod:`toolkit.restore.vhdx`: a copy of our own where it is, the person's file on a copy
or, when asked, in place); what it refers to checked through the write gate; a new
file's boot mode and encrypted partitions checked (:mod:`toolkit.restore.bootmode`);
then converted (and compared, piece by piece) onto the target by
:mod:`toolkit.restore.qemu`, its first MiB last.
"""

from __future__ import annotations

import os
import tempfile

from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter
from toolkit.restore import bootmode, checks, detect, qemu, qemu_compare, stream, vhdx
from toolkit.restore import layout as layoutmod
from toolkit.restore.checksum import MAX_RESTARTS, Checked, add_warnings, check_sha, open_image
from toolkit.restore.plan import RestorePlan, container_size
from toolkit.restore.write import HEAD, Failed, Target


def local_copy(plan: RestorePlan, reporter: Reporter, cancel, res, tmp: str,
                location: str | None = None) -> str:
    """Download and/or decompress a container image (or its spool, ``location``) into
    ``tmp``; return its path. A file changed on the server during the download is
    downloaded again from its start (nothing is written yet)."""
    img = plan.image
    path = os.path.join(tmp, "image." + img.format)
    for attempt in range(MAX_RESTARTS + 1):
        src = open_image(plan, location, same=attempt == 0)
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
            add_warnings(res, getattr(src, "warnings", []))
            src.close()
    res.input_sha256 = raw.sha256.hexdigest()
    check_sha(img, res, written=False)
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


def _replayed(plan: RestorePlan, path: str, tmp: str, reporter: Reporter, cancel, res
              ) -> str:
    """A VHDX whose log was never replayed, replayed before anything is written: a copy of
    our own (downloaded, unpacked) where it is; the person's file on a copy in ``tmp``, or
    in the file itself when they asked for that (``options.vhdx_log == "in-place"``)."""
    img = plan.image
    try:
        return _replay(plan, path, tmp, reporter, cancel, res)
    except qemu.QemuError as e:  # qemu-img check -r all failed: nothing written yet
        raise Refused(f"{vhdx.state(img.location)}, but replaying it failed ({e}); nothing "
                      "was written") from None


def _replay(plan: RestorePlan, path: str, tmp: str, reporter: Reporter, cancel, res) -> str:
    img = plan.image
    if path != img.location:
        if not vhdx.needs_replay(path):
            return path
        vhdx.replay(path)
        res.warnings.append(f"{vhdx.state(img.location)}: it was replayed on the "
                            f"{'downloaded' if img.is_url else 'unpacked'} copy before "
                            "anything was written")
        return path
    if not img.vhdx_log:
        return path
    if plan.options.vhdx_log == "in-place":
        vhdx.replay_in_place(path)
        res.warnings.append(f"{vhdx.state(path)}: it was replayed in {path} itself, as asked, "
                            "before anything was written")
        return path
    vhdx.plan_note(path, False, os.path.dirname(tmp))  # room still: NoRoomToReplay
    try:
        copy = vhdx.replay_copy(path, tmp, reporter, cancel)
    except InterruptedError:
        raise Failed("cancelled", "cancelled") from None
    res.warnings.append(f"{vhdx.state(path)}: it was replayed on a copy in "
                        f"{os.path.dirname(tmp)} before anything was written; {path} itself "
                        "was not changed")
    return copy


def _source(plan: RestorePlan, reporter: Reporter, cancel, res, tmp: str,
            checked: Checked | None) -> tuple[str, dict | None]:
    """What qemu-img converts: the image, its spool, a downloaded or unpacked copy (or the
    curl driver's URL: ``curl``), a VHDX's log replayed."""
    img, opts = plan.image, plan.options
    spool = checked.spool if checked else None
    path, curl = img.location, None
    if spool and not img.compression:
        path = spool  # downloaded and checked: qemu-img reads it
    elif img.is_url or img.compression:
        how = "download"
        if img.is_url and not img.compression:
            try:
                how = qemu.http_strategy(img.file_size, os.path.dirname(tmp),
                                         want_hash=bool(img.expected_sha256),
                                         ca_file=opts.ca_file)
            except ValueError as e:
                raise Refused(str(e)) from None
        if how == "curl":
            curl = {"insecure": opts.insecure}
        else:
            path = local_copy(plan, reporter, cancel, res, tmp, spool)
    if img.format == detect.VHDX and curl is None:
        path = _replayed(plan, path, tmp, reporter, cancel, res)
    return path, curl


def _layout_problems(plan: RestorePlan, path: str, head: bytes, curl, res) -> list[str]:
    """The boot mode and encrypted partitions of an image the plan could not read (a
    download, an unpacked or replayed copy): refusals; the notes go to the warnings."""
    opts = plan.options
    lay = layoutmod.from_head(head)
    if curl is None and lay is not None:
        layoutmod.read_contents(lay, *layoutmod.container_readers(path, plan.image.format))
    plan.image.layout = lay
    problems, warnings = bootmode.check(lay, opts.boot_mode, opts.sys_root)
    add_warnings(res, [*warnings, *layoutmod.notes(lay, opts.grow)])
    return problems


def _first_mib(path: str, fmt: str, size: int, curl, location: str) -> bytes:
    try:
        return qemu.first_mib(path, fmt, size, curl=curl)
    except qemu.QemuError as e:
        if curl is not None and vhdx.LOG_MESSAGE in str(e):  # read through curl: no copy
            raise Refused(f"{vhdx.state(location)}, on a copy, which does not fit in the "
                          "temporary directory: give one with room (--tmpdir DIR); nothing "
                          "was written") from None
        raise


def restore_container(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res,
               checked: Checked | None) -> None:
    img, opts = plan.image, plan.options
    tmpdir = opts.tmpdir or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(prefix="rtk-restore-", dir=tmpdir) as tmp:
        path, curl = _source(plan, reporter, cancel, res, tmp, checked)
        # the image as given was probed by the plan (a local one: qemu-img check and info);
        # a download, an unpacked copy or a replayed VHDX is a new file, probed now
        probed = curl or (path == img.location and not img.vhdx_log)
        # what the copy qemu-img converts reads (its backing chain, extents, data file:
        # Refused when that cannot be told), through the gate's decision, before writing
        referenced = qemu.referenced_files(path, img.format)
        inputs = [*plan.inputs, *checks.image_inputs(path, None, referenced)]
        problems, _ = checks.check_target(plan.target, img.location, None, None,
                                          plan.source_role, deep=True, inputs=inputs)
        if problems:
            raise Refused(problems)
        size = img.size if probed else container_size(path, img.format)
        head = _first_mib(path, img.format, size, curl, img.location)
        geo = detect.geometry(head)
        problems, _ = checks.check_target(plan.target, img.location, size, geo.sector_size,
                                          (), inputs=[])
        cut = detect.truncation(size, geo)
        if cut:
            problems.append(f"{img.location}: {cut}")
        if not probed or curl:
            problems += _layout_problems(plan, path, head, curl, res)
        if problems:
            raise Refused(problems)
        res.image_size, res.table = size, geo.table
        _write(plan, target, reporter, cancel, res, path, curl, size, head)


def _write(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res, path: str,
           curl, size: int, head: bytes) -> None:
    """Zero the target's ends, convert (and compare, piece by piece), first MiB last."""
    img, opts = plan.image, plan.options
    target.wipe_ends(size)
    res.wiped = True
    if opts.verify:
        diff, early = qemu_compare.convert_and_compare(path, img.format, target, size,
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
