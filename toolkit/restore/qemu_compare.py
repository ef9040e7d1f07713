"""A verified container restore's comparison, by ``qemu-img compare`` of the same two
views as the conversion (the image's ``raw,offset=`` view and the target read with
O_DIRECT): :func:`compare_range` (a range, in :data:`COMPARE_PIECES` pieces at once) and
:func:`convert_and_compare` (the image converted in pieces by
:func:`toolkit.restore.qemu.convert_range`, each compared while the next converts).
"""

from __future__ import annotations

import queue
import re
import threading

from toolkit.restore import qemu
from toolkit.restore.write import HEAD, Failed

COMPARE_PIECES = 4  # qemu-img compare reads one request at a time: run several


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
    name, fds = qemu.target_to_read(target)
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
                qemu.source_opts(location, fmt, off, n, curl=curl),
                qemu.target_opts(name, off, n, locking=False)]
        try:
            results[i] = qemu.with_progress(args, part, found, fds)
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


def convert_and_compare(location: str, fmt: str, target, virtual_size: int, reporter,
                        cancel: threading.Event, curl: dict | None = None
                        ) -> tuple[str | None, int]:
    """A verified conversion of the image's bytes after its first MiB, in pieces
    (:func:`~toolkit.restore.qemu.piece_size`) converted one after the other; a thread compares each
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
    piece = qemu.piece_size(size)
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
                qemu.convert_range(location, fmt, target, start, n,
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
