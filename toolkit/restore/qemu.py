"""Container formats (qcow2, VHD, VHDX, VMDK) through qemu-img.

qemu-img reads the container and writes raw bytes: ``qemu-img convert -n -t
none -W -m 16`` (O_DIRECT on the target, no page cache, flushed at the end;
out-of-order writes by 16 coroutines, as qemu-img advises for block
devices) with both sides seen through qemu's ``raw`` driver with
``offset=1MiB``, so qemu-img
writes everything but the first MiB; :mod:`toolkit.restore.write` writes that
last, read from the image by qemu-img. Verification is ``qemu-img compare`` of
the same two views (the target read with O_DIRECT), then the first MiB read
back. A verified restore converts in pieces (:func:`piece_size`) and compares
each one while the next is converted (:func:`convert_and_compare`).

HTTP(S) sources of these formats are downloaded to a temporary file first,
not read through qemu-img's curl driver (which this qemu-img has: see
:func:`has_curl`). The curl driver reads with one Range request per cluster
run, has no resume of its own beyond a few retries, cannot be given a CA file
(only ``sslverify=off``), and the image's SHA-256 cannot be checked before
writing. A download is hashed while it runs, checked before anything is
written, and a truncated or corrupt file is refused with the target untouched.
The cost is temporary space: :func:`http_strategy` falls back to the curl
driver only when the file does not fit and no checksum or CA file was asked for.

qemu-img writes a block device only through the write gate's hold
(:class:`toolkit.disks.gate.WriteHold`, given as the restore's ``Target``): it gets the
hold's own descriptor (``pass_fds``) and opens ``/proc/self/fd/N``, the very device the
gate decided on and holds with O_EXCL, never a path that could lead elsewhere by now.
:func:`referenced_files` names the files a container refers to (backing files, VMDK
extents, a data file), which the gate treats as inputs of the restore.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading

from toolkit.blockio.blockdev import is_block_device
from toolkit.errors import Refused
from toolkit.restore.write import HEAD, Failed
from toolkit.system import tools

QEMU_IMG = "qemu-img"


class QemuError(tools.ToolError):
    """qemu-img failed: it refused the image (corrupt, truncated, unsupported) or could not
    convert or compare it. Its message names the subcommand, the last stderr line and the
    exit status: ``qemu-img info failed: Could not open 'x': ... (exit 1)``."""

    @property
    def name(self) -> str:
        sub = next((a for a in self.argv[1:] if not a.startswith("-")), None)
        return f"{self.tool} {sub}" if sub else self.tool


def url_secrets(args) -> list[str]:
    """The passwords (``user:PASSWORD@``) and queries (tokens) of the URLs in ``args``:
    masked in the log and in errors, as the reports do (a query ends at a single comma
    of the qemu options; ``,,`` is an escaped comma)."""
    out = []
    for a in args:
        for m in re.finditer(r"https?://([^/@\s]*)@", a):
            out.append(m.group(1).partition(":")[2])
        out += [m.group(1) for m in re.finditer(r"https?://[^?\s]*\?((?:[^,]|,,)*)", a)]
    return [y for x in out if x for y in {x, x.replace(",,", ",")}]


def _run(*args: str) -> str:
    return tools.run([QEMU_IMG, *args], error=QemuError, secrets=url_secrets(args)).stdout


def has_curl() -> bool:
    """Whether this qemu-img lists the ``https`` block driver (libcurl)."""
    try:
        text = tools.run([QEMU_IMG, "--help"], check=False, timeout=30).stdout
    except tools.ToolError:
        return False
    for line in text.splitlines():
        if line.startswith("Supported formats:"):
            return "https" in line.split()
    return False


def info(location: str, fmt: str) -> dict:
    """``qemu-img info --output=json`` of the image (format forced: never probed)."""
    return json.loads(_run("info", "--output=json", "-f", fmt, location))


def referenced_files(location: str, fmt: str) -> list[str]:
    """The local files and devices the image ``location`` makes qemu-img read besides
    itself: its backing chain, VMDK extents (a descriptor may name a raw device) and a
    qcow2 external data file. Empty when qemu-img cannot tell (its check refuses such an
    image anyway)."""
    try:
        chain = json.loads(_run("info", "--backing-chain", "--output=json", "-f", fmt,
                                location))
    except (tools.ToolError, ValueError):
        return []
    found: list[str] = []

    def add(name) -> None:
        if isinstance(name, str) and name and ":" not in name.split("/", 1)[0]:
            path = os.path.abspath(name)
            if path != os.path.abspath(location) and path not in found:
                found.append(path)

    for layer in chain if isinstance(chain, list) else [chain]:
        add(layer.get("filename"))
        add(layer.get("full-backing-filename"))
        data = (layer.get("format-specific") or {}).get("data") or {}
        add(data.get("data-file"))
        for extent in data.get("extents") or []:
            add(extent.get("filename"))
    return found


def _target_file(target, *, writing: bool) -> tuple[str, tuple[int, ...]]:
    """What qemu-img opens as the target, and the descriptors it inherits: the write
    gate's hold (a restore's ``Target`` or a ``WriteHold``) as ``/proc/self/fd/N`` of its
    own descriptor; a path only to read, or to write a regular file."""
    hold = getattr(target, "hold", None) or (target if hasattr(target, "fd_path") else None)
    if hold is not None:
        try:
            return hold.fd_path(), (hold.fd,)
        except Refused as e:  # the hold was lost after writing began: a failure
            raise Failed(str(e)) from None
    if writing and is_block_device(target):
        raise Failed(f"{target} is a block device: it is written only through the write "
                     "gate's hold")
    return target, ()


def check(path: str, fmt: str) -> list[str]:
    """What ``qemu-img check`` finds wrong: corruption, or data past the end of the file
    (a truncated copy: qemu-img convert would read zeros there and succeed).

    Exit codes: 0 clean, 3 leaked clusters only (harmless), 63 the format has no
    check (VHD: its open already fails on a truncated file), 1 and 2 errors.
    """
    p = tools.run([QEMU_IMG, "check", "-f", fmt, path], check=False)
    if p.returncode in (0, 3, 63):
        return []
    lines = [x.strip() for x in (p.stderr + p.stdout).splitlines() if x.strip()]
    shown = "; ".join(lines[:3]) + (f" (and {len(lines) - 3} more lines)" if len(lines) > 3
                                     else "")
    return [f"qemu-img check finds {path} damaged or truncated: {shown}"]


def _opt(value: str) -> str:
    return value.replace(",", ",,")


def source_opts(location: str, fmt: str, offset: int, size: int, *, curl: dict | None = None
                ) -> str:
    """The image's bytes ``[offset, offset+size)`` as qemu ``--image-opts``."""
    if curl is not None:
        proto = "https" if location.startswith("https:") else "http"
        leaf = f"file.file.driver={proto},file.file.url={_opt(location)}"
        if curl.get("insecure"):
            leaf += ",file.file.sslverify=off"
        leaf += ",file.file.timeout=60"
    else:
        leaf = f"file.file.driver=file,file.file.filename={_opt(location)}"
    return f"driver=raw,offset={offset},size={size},file.driver={fmt},{leaf}"


def target_opts(path: str, offset: int, size: int, *, locking: bool = True) -> str:
    """The target's bytes ``[offset, offset+size)``, read and written with O_DIRECT.

    ``locking=False``: without qemu's image locks, for a compare that reads
    while a qemu-img convert writes other bytes of the target (which keeps its
    locks: a QEMU guest using the disk would make it fail). The restore itself
    holds the target open with O_EXCL."""
    driver = "host_device" if is_block_device(path) else "file"
    return (f"driver=raw,offset={offset},size={size},file.driver={driver},"
            f"file.filename={_opt(path)},file.cache.direct=on"
            + ("" if locking else ",file.locking=off"))


def first_mib(location: str, fmt: str, virtual_size: int, curl: dict | None = None) -> bytes:
    """The image's first MiB (or all of it, when smaller), read by qemu-img."""
    n = min(HEAD, virtual_size)
    with tempfile.TemporaryDirectory(prefix="rtk-head-") as d:
        out = os.path.join(d, "head")
        src = source_opts(location, fmt, 0, n, curl=curl)
        _run("convert", "--image-opts", src, "-O", "raw", out)
        with open(out, "rb") as f:
            return f.read(n)


def _with_progress(args: list[str], progress, cancel: threading.Event,
                   pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Run qemu-img with ``-p``, calling ``progress(fraction)``; terminate it on cancel.
    ``proc.failure()``: the QemuError for its exit status. ``pass_fds``: the write gate's
    descriptor, which ``/proc/self/fd/N`` in the arguments names."""
    proc = tools.popen([QEMU_IMG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       pass_fds=pass_fds)
    stop = threading.Event()

    proc.stopped = False  # terminated by us (a cancel), not killed by someone else

    def watch():
        while not stop.wait(0.2):
            if cancel.is_set():
                proc.stopped = True
                proc.terminate()
                return

    threading.Thread(target=watch, daemon=True).start()
    buf, said = b"", []
    while True:
        data = proc.stdout.read1(4096)
        if not data:
            break
        buf += data
        *parts, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for part in parts:
            text = part.decode(errors="replace").strip()
            if text.startswith("(") and "/100%" in text:
                with contextlib.suppress(ValueError):
                    progress(float(text[1:text.index("/")]) / 100)
            elif text:
                said.append(text)  # e.g. compare's "Content mismatch at offset N!"
    proc.wait()
    stop.set()
    proc.stdout_text = "\n".join([*said, buf.decode(errors="replace").strip()]).strip()
    proc.stderr_text = proc.stderr.read().decode(errors="replace").strip()
    proc.failure = lambda: tools.failure([QEMU_IMG, *args], proc.returncode, proc.stderr_text,
                                         stdout=proc.stdout_text, error=QemuError,
                                         secrets=url_secrets(args))
    return proc


def convert_rest(location: str, fmt: str, target, virtual_size: int, progress,
                 cancel: threading.Event, curl: dict | None = None) -> None:
    """Write the image's bytes after its first MiB onto ``target`` (same offsets)."""
    if virtual_size > HEAD:
        convert_range(location, fmt, target, HEAD, virtual_size - HEAD, progress, cancel,
                      curl)


def convert_range(location: str, fmt: str, target, start: int, length: int, progress,
                  cancel, curl: dict | None = None) -> None:
    """Write the image's bytes ``[start, start+length)`` onto the same bytes of ``target``
    (the write gate's hold; a path: a regular file only); qemu-img fdatasyncs the target
    before it exits."""
    name, fds = _target_file(target, writing=True)
    # -W -m 16: out-of-order writes, 16 coroutines (qemu-img recommends -W for block
    # devices; the first MiB is written last anyway): 30 % faster than the default here
    args = ["convert", "-p", "-n", "-t", "none", "-W", "-m", "16", "--image-opts",
            source_opts(location, fmt, start, length, curl=curl),
            "--target-image-opts", target_opts(name, start, length)]
    proc = _with_progress(args, progress, cancel, fds)
    if cancel.is_set():
        raise Failed("cancelled", "cancelled")
    if proc.returncode:
        raise proc.failure()


COMPARE_PIECES = 4  # qemu-img compare reads one request at a time: run several
PIECE = 1 << 30  # at most this many bytes converted, then compared, at a time (see piece_size)
PIECES = 8  # ... and the image cut in about this many pieces, of at least 64 MiB


class _Either:
    """``is_set()`` of the caller's cancel event, or of this comparison's own."""

    def __init__(self, cancel):
        self.cancel, self.event = cancel, threading.Event()

    def is_set(self) -> bool:
        return self.cancel.is_set() or self.event.is_set()


def compare_range(location: str, fmt: str, target, start: int, length: int, progress,
                  cancel, curl: dict | None = None) -> str | None:
    """None when the target's bytes ``[start, start+length)`` are the image's, else what
    differs, named by its byte on the disk.

    The range is split into :data:`COMPARE_PIECES` pieces compared at once (the
    target's reads are O_DIRECT, one at a time per qemu-img: several keep the
    device busy); the first piece to find a difference stops the others.
    """
    name, fds = _target_file(target, writing=False)
    step = -(-length // COMPARE_PIECES // HEAD) * HEAD
    pieces = [(start + off, min(step, length - off)) for off in range(0, length, step)]
    done = [0.0] * len(pieces)
    results: list = [None] * len(pieces)
    lock = threading.Lock()
    found = _Either(cancel)  # set by the first piece that differs or fails: stop the others

    def run(i: int, off: int, n: int) -> None:
        def part(f: float) -> None:
            with lock:
                done[i] = f * n
                progress(sum(done) / length)
        args = ["compare", "-p", "--image-opts",
                source_opts(location, fmt, off, n, curl=curl),
                target_opts(name, off, n, locking=False)]
        try:
            results[i] = _with_progress(args, part, found, fds)
            if results[i].returncode:
                found.event.set()
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            results[i] = e
            found.event.set()

    threads = [threading.Thread(target=run, args=(i, off, n), daemon=True)
               for i, (off, n) in enumerate(pieces)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if cancel.is_set():
        raise Failed("cancelled", "cancelled")
    for proc in results:
        if isinstance(proc, BaseException):
            raise proc
    for (off, n), proc in zip(pieces, results, strict=True):
        if proc.returncode < 0 and proc.stopped:  # another piece differed or failed
            continue
        if proc.returncode < 0:  # killed (the OOM killer...): this piece was not compared
            raise Failed(f"qemu-img compare of bytes {off}-{off + n} was killed "
                         f"(signal {-proc.returncode})")
        if proc.returncode == 1:
            m = re.search(r"offset (\d+)", proc.stderr_text + proc.stdout_text)
            where = f"at byte {off + int(m.group(1))}" if m else f"in bytes {off}-{off + n}"
            return f"the target differs from the image {where} (qemu-img compare)"
        if proc.returncode:
            raise proc.failure()
    return None


def piece_size(size: int) -> int:
    """How much a verified restore converts before comparing it: an eighth of the
    image, from 64 MiB to :data:`PIECE`, in whole MiB. Smaller pieces leave less to
    compare once the last conversion ends, and less of the source for the page
    cache to hold until its compare; but each costs five qemu-img runs, and on a
    target that is the slower side the comparison slows the conversion down
    (measured in docs/benchmarks.md: eight pieces keep that to a few per cent)."""
    n = -(-size // PIECES // HEAD) * HEAD  # rounded up to whole MiB
    return max(min(n, PIECE), min(64 << 20, PIECE))


def convert_and_compare(location: str, fmt: str, target, virtual_size: int, reporter,
                        cancel: threading.Event, curl: dict | None = None
                        ) -> tuple[str | None, int]:
    """A verified conversion of the image's bytes after its first MiB, in pieces
    (:func:`piece_size`) converted one after the other; a thread compares each
    piece (:func:`compare_range`, without qemu's image locks on the target) once
    converted and flushed, while the next ones are converted.

    The compare reads a piece's source back while it is still in the page
    cache: from a slow medium (a USB disk), the image is read once, not twice,
    and the verification is mostly done when the writing ends. (Two conversions
    at once end their last pieces together, leaving two to compare after the
    writing: slower, see docs/benchmarks.md.) Returns
    ``(difference or None, bytes compared by the end of the writing)``; the
    first difference stops the conversion and the comparison.
    """
    size = virtual_size - HEAD
    if size <= 0:
        return None, 0
    piece = piece_size(size)
    stop = _Either(cancel)  # the caller's cancel, or what the comparison found
    lock = threading.Lock()
    compared = [0.0]  # bytes compared, the piece being compared included
    outcome: list = []  # from the comparison: the difference (a str) or its error
    todo: queue.Queue = queue.Queue()  # converted pieces, then None

    def compare_pieces() -> None:
        while (item := todo.get()) is not None:
            start, n = item
            base = compared[0]

            def part(f: float, base: float = base, n: int = n) -> None:
                with lock:
                    compared[0] = base + f * n
            try:
                diff = compare_range(location, fmt, target, start, n, part, stop, curl)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                diff = e
            with lock:
                compared[0] = base + n
            if diff is not None:
                outcome.append(diff)
                stop.event.set()
                return

    checker = threading.Thread(target=compare_pieces, daemon=True, name="rtk-compare")
    reporter.start("write", virtual_size)
    checker.start()
    try:
        for off in range(0, size, piece):
            start, n = HEAD + off, min(piece, size - off)
            try:
                convert_range(location, fmt, target, start, n,
                              lambda f, s=start, n=n: reporter.update(s + int(f * n)), stop,
                              curl)
            except Failed:
                if cancel.is_set() or not stop.event.is_set():
                    raise
                break  # the comparison found something and stopped the conversion
            todo.put((start, n))
        early = int(compared[0])
        if not stop.is_set():
            reporter.start("verify", virtual_size, HEAD + early)
        todo.put(None)
        while checker.is_alive():
            checker.join(0.2)
            reporter.update(HEAD + int(compared[0]))
    finally:
        stop.event.set()  # on every way out: nothing may go on reading
        todo.put(None)
        checker.join()
    if cancel.is_set():
        raise Failed("cancelled", "cancelled")
    if outcome and isinstance(outcome[0], BaseException):
        raise outcome[0]
    return (outcome[0] if outcome else None), early


def http_strategy(size: int | None, tmpdir: str, *, want_hash: bool, ca_file: str | None
                  ) -> str:
    """``"download"`` (the default) or ``"curl"``; raises ValueError when neither fits."""
    free = shutil.disk_usage(tmpdir).free
    if size is None or size + (64 << 20) <= free:
        return "download"
    why = (f"the image ({size if size is not None else 'unknown size'} bytes) does not fit "
           f"in {tmpdir} ({free} bytes free)")
    if want_hash or ca_file:
        raise ValueError(f"{why}; qemu-img's curl driver cannot check a SHA-256 before "
                         "writing nor use a CA file: set a larger --tmpdir")
    if not has_curl():
        raise ValueError(f"{why}, and this qemu-img has no curl (https) driver")
    return "curl"
