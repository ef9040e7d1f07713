"""Progress of a long job: events, rate and ETA, and a throttled reporter.

Generic: Disk Copy uses it, and so can anything else that moves bytes (image
restore). :class:`Reporter` turns byte counts into :class:`Progress` events
for a callback, at most one per interval (and at phase ends).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.units import human_duration, human_rate, human_size

WAITING = "waiting"  # the phase of a job paused by a storage outage


@dataclass(frozen=True)
class Progress:
    """One progress event. ``phase`` names the step (Disk Copy's: "copy", "trim",
    "scrape" (narrowing down read errors), "verify"; any job's "waiting": a storage
    outage waited out, ``note`` says what: "SOURCE path to 10.0.2.2 lost, waiting 0:42
    (gives up at 10:00)", :mod:`toolkit.disks.transport`). Rates in bytes/s; ``eta`` in
    seconds or None."""

    phase: str
    done: int
    total: int
    rate: float
    average_rate: float
    eta: float | None
    read_errors: int = 0
    unreadable_bytes: int = 0
    note: str = ""  # phase "waiting": what is waited for

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def line(self) -> str:
        """``copy  42.0%  1.2 GB of 3.0 GB  850.0 MB/s (avg 830.0 MB/s)  ETA 0:02``; a step
        counted in steps, not bytes (total 0 or 1): ``finish  working`` or ``done``."""
        if self.phase == WAITING:
            return (f"{self.note or 'waiting'}  ({human_size(self.done)} of "
                    f"{human_size(self.total)} done)")
        if self.total == 0 and self.done > 1:  # bytes of a length not known (a live stream)
            return (f"{self.phase:<6} {human_size(self.done)}  {human_rate(self.rate)} (avg "
                    f"{human_rate(self.average_rate)})")
        if self.total <= 1:
            return f"{self.phase:<6} {'done' if self.done >= self.total > 0 else 'working'}"
        eta = human_duration(self.eta) if self.eta is not None else "?"
        s = (f"{self.phase:<6} {100 * self.fraction:5.1f}%  {human_size(self.done)} of "
             f"{human_size(self.total)}  {human_rate(self.rate)} (avg "
             f"{human_rate(self.average_rate)})  ETA {eta}")
        if self.read_errors:
            s += f"  read errors {self.read_errors}, unreadable {human_size(self.unreadable_bytes)}"
        return s


class RateMeter:
    """Current rate (over the last ``window`` seconds), average rate and ETA.

    ``done`` counts from ``start_done`` (bytes already done by an earlier run do
    not make this run look fast).
    """

    def __init__(self, total: int, start_done: int = 0, now: float = 0.0, window: float = 3.0):
        self.total, self.window = total, window
        self.start_done, self.start_time = start_done, now
        self.done, self.now = start_done, now
        self.samples: deque[tuple[float, int]] = deque([(now, start_done)])

    def update(self, done: int, now: float) -> None:
        self.done, self.now = done, now
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    @property
    def rate(self) -> float:
        t0, d0 = self.samples[0]
        return (self.done - d0) / (self.now - t0) if self.now > t0 else 0.0

    @property
    def average_rate(self) -> float:
        dt = self.now - self.start_time
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    @property
    def eta(self) -> float | None:
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        rate = self.rate or self.average_rate
        return remaining / rate if rate > 0 else None


class Reporter:
    """Throttles progress events to one per ``interval`` seconds (and phase ends)."""

    def __init__(self, callback: Callable[[Progress], None] | None, interval: float):
        self.callback, self.interval = callback, interval
        self.phase, self.meter, self.last = "", RateMeter(0), 0.0
        self.read_errors = self.unreadable = 0
        self.note: str | None = None  # set while waiting (an outage): the phase "waiting"
        self._lock = threading.Lock()  # waiting() may come from another thread (a reader)

    def start(self, phase: str, total: int, done: int = 0) -> None:
        self.phase = phase
        self.meter = RateMeter(total, done, time.monotonic())
        self.last = 0.0
        self.update(done, force=True)

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        with self._lock:
            self.meter.update(done, now)
            self.last = now
            self._emit(done)

    def _emit(self, done: int) -> None:
        if self.callback:
            m = self.meter
            if self.note is not None:
                self.callback(Progress(WAITING, done, m.total, 0.0, m.average_rate, None,
                                       self.read_errors, self.unreadable, self.note))
            else:
                self.callback(Progress(self.phase, done, m.total, m.rate, m.average_rate,
                                       m.eta, self.read_errors, self.unreadable))

    def waiting(self, note: str | None) -> None:
        """The job is paused (``note``: what it waits for; phase "waiting"), or goes on
        (None: the phase it was in). Every call is shown (they come once a second)."""
        with self._lock:
            self.note = note
            self.last = time.monotonic()
            self._emit(self.meter.done)
