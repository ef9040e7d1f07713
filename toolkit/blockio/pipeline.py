"""The one pipeline of copy, restore and verification: reader -> [stage] -> consumer.

A *reader* function runs in its own thread: it takes buffers from a bounded
pool of aligned buffers (:meth:`Feed.buffer`) and puts items on a queue; an
optional middle *stage* (a hasher, :class:`toolkit.blockio.hashing.HashStage`)
transforms each item in a second thread; the *consumer*, in the caller's
thread, iterates the :class:`Pipeline`::

    with Pipeline(DeviceReader(fd, [(0, size)], chunk), chunk=chunk, stage=hash_stage,
                  cancel=cancel) as pipe:
        for kind, pos, n, payload in pipe:
            ...  # the buffer goes back to the pool when the next item is taken

An item is ``(kind, pos, n, payload)``: :data:`DATA` (the ``n`` bytes at
``pos`` are in the buffer ``payload``), :data:`ZERO` (they are zeros; a
buffer whose content is undefined), :data:`BAD` (unreadable; ``payload`` is
the error text).

A worker's failure (any exception: a bug, a MemoryError, not only I/O)
travels down the queue as an item behind those before it, and the
consumer's iteration raises it when it arrives (bmaptool's ("error",
exc_info) items): no consumer can miss it. The failing worker also stops the
other. Setting ``cancel``, or :meth:`Pipeline.stop`, makes the reader stop
at its next chunk; the items already read still arrive. Leaving the
``with`` block, however (the end, ``break``, an exception), stops the
workers, takes the buffers still queued back, joins both threads and frees
the pool.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from toolkit.blockio import blockdev

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_CHUNK = 8 * MiB
DATA, ZERO, BAD, END = "data", "zero", "bad", "end"
_ERROR = "error"  # payload: the worker's exception, raised to the consumer

Item = tuple[str, int, int, object]


class Feed:
    """What the reader function is given: free buffers, the queue, the stop signal."""

    __slots__ = ("_free", "_out", "stop")

    def __init__(self, free: queue.Queue, out: queue.Queue, stop: threading.Event):
        self._free, self._out, self.stop = free, out, stop

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def buffer(self) -> blockdev.AlignedBuffer:
        """A free buffer (waits while the pool is empty: the consumer hands them back)."""
        return self._free.get()

    def give_back(self, buf: blockdev.AlignedBuffer) -> None:
        """Return a buffer not put on the queue (a failed read, the end)."""
        self._free.put(buf)

    def put(self, kind: str, pos: int, n: int, payload) -> None:
        self._out.put((kind, pos, n, payload))


class Pipeline:
    """``read(feed)`` in a thread, then ``stage(item)`` in another (optional; it
    returns the item to pass on, or None to end it there), then the consumer.

    ``buffers`` aligned buffers of ``chunk`` bytes; ``names``: the two threads'.
    """

    def __init__(self, read: Callable[[Feed], None], *, chunk: int, buffers: int = 4,
                 stage: Callable[[Item], Item | None] | None = None,
                 cancel: threading.Event | None = None,
                 names: tuple[str, str] = ("rtk-reader", "rtk-hasher")):
        self._cancel = cancel
        self._stop = threading.Event()
        self._buffers = [blockdev.AlignedBuffer(chunk) for _ in range(buffers)]
        self._free: queue.Queue = queue.Queue()
        for b in self._buffers:
            self._free.put(b)
        first: queue.Queue = queue.Queue(buffers + 1)
        self._q = queue.Queue(buffers + 1) if stage else first  # what the consumer reads
        self._threads = [threading.Thread(target=self._run_reader, args=(read, first),
                                          daemon=True, name=names[0])]
        if stage:
            self._threads.append(threading.Thread(target=self._run_stage,
                                                  args=(stage, first, self._q),
                                                  daemon=True, name=names[1]))
        self._held = None  # the buffer of the item the consumer has
        self._started = self._ended = self._closed = False

    # the workers ------------------------------------------------------------------------
    def _run_reader(self, read, out: queue.Queue) -> None:
        try:
            read(Feed(self._free, out, self._stop))
        except BaseException as e:  # noqa: BLE001 - an item for the consumer
            self._stop.set()
            out.put((_ERROR, 0, 0, e))
        finally:
            out.put((END, 0, 0, None))

    def _run_stage(self, stage, inq: queue.Queue, out: queue.Queue) -> None:
        failed = False
        while True:
            item = inq.get()
            kind = item[0]
            if kind == END:
                out.put(item)
                return
            if not failed and kind != _ERROR:
                try:
                    passed = stage(item)
                except BaseException as e:  # noqa: BLE001 - an item for the consumer
                    failed = True  # later items pass unprocessed, their buffers come back
                    self._stop.set()
                    out.put((_ERROR, item[1], 0, e))
                    passed = item
                if passed is None:
                    if kind != BAD and item[3] is not None:
                        self._free.put(item[3])
                    continue
                item = passed
            out.put(item)

    # the consumer -----------------------------------------------------------------------
    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._started = True
        for t in self._threads:
            t.start()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the reader to stop at its next chunk (what it has read still arrives)."""
        self._stop.set()

    def _release(self) -> None:
        if self._held is not None:
            self._free.put(self._held)
            self._held = None

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item (:data:`END` at the end), or None after ``timeout`` seconds;
        raises a worker's failure when it comes. The previous item's buffer goes back."""
        self._release()
        if self._cancel is not None and self._cancel.is_set():
            self._stop.set()
        if self._ended:
            return (END, 0, 0, None)
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        kind, payload = item[0], item[3]
        if kind == END:
            self._ended = True
        elif kind == _ERROR:
            self._stop.set()
            raise payload
        elif kind != BAD:
            self._held = payload
        return item

    def __iter__(self) -> Pipeline:
        return self

    def __next__(self) -> Item:
        item = self.get()
        if item[0] == END:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the workers, take back every queued buffer, join the threads, free the pool."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._release()
        if self._started:
            while not self._ended:  # a failure arriving now has nobody to go to
                kind, _pos, _n, payload = self._q.get()
                if kind == END:
                    self._ended = True
                elif kind not in (BAD, _ERROR) and payload is not None:
                    self._free.put(payload)
            for t in self._threads:
                t.join()
        for b in self._buffers:
            b.close()
