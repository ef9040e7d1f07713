"""The container path of a restore (qcow2, VHD, VHDX, VMDK): the image downloaded and/or
decompressed into a temporary file when it must be (:func:`local_copy`), or read by
qemu-img over HTTP (curl); what it refers to checked through the write gate; then
converted (and compared, piece by piece) onto the target by :mod:`toolkit.restore.qemu`,
its first MiB last.
"""

from __future__ import annotations

import os
import tempfile

from toolkit.errors import Refused
from toolkit.jobs.progress import Reporter
from toolkit.restore import checks, detect, qemu, qemu_compare, stream
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


def restore_container(plan: RestorePlan, target: Target, reporter: Reporter, cancel, res,
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
                path = local_copy(plan, reporter, cancel, res, tmp, spool)
        # the image as given was probed by the plan (a local one: qemu-img check and info);
        # a download or an unpacked copy is a new file, probed now
        probed = curl or path == img.location
        # what the copy qemu-img converts reads (its backing chain, extents, data file:
        # Refused when that cannot be told), through the gate's decision, before writing
        referenced = qemu.referenced_files(path, img.format)
        inputs = [*plan.inputs, *checks.image_inputs(path, None, referenced)]
        problems, _ = checks.check_target(plan.target, img.location, None, None,
                                          plan.source_role, deep=True, inputs=inputs)
        if problems:
            raise Refused(problems)
        size = img.size if probed else container_size(path, img.format)
        head = qemu.first_mib(path, img.format, size, curl=curl)
        geo = detect.geometry(head)
        problems, _ = checks.check_target(plan.target, img.location, size, geo.sector_size,
                                          (), inputs=[])
        cut = detect.truncation(size, geo)
        if cut:
            problems.append(f"{img.location}: {cut}")
        if problems:
            raise Refused(problems)
        res.image_size, res.table = size, geo.table
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
