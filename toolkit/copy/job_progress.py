"""The progress of a copy job of several pairs (:mod:`toolkit.copy.job`): each pair's own
:class:`~toolkit.jobs.progress.Progress` and the whole job's, in bytes of work, rate and
ETA.

A pair's work is its copy (the bytes its copy phase counts: the source's size, or what a
used-blocks domain holds) and, verified, its verification (as many bytes again, until the
verification says its own total). A pair that ended counts as all done, whatever it did:
the job's ETA is of what is still to do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.jobs.progress import WAITING, Progress, RateMeter
from toolkit.units import human_duration, human_rate, human_size

VERIFY_PHASES = ("verify",)  # what counts as the verification's share of a pair's work
NOT_STARTED, RUNNING = "not started", "running"


@dataclass(frozen=True)
class JobProgress:
    """One progress event of the job: ``pairs`` (each pair's last :class:`Progress`, None
    before it starts), ``states`` (each pair's "not started", "running" or its result),
    ``overall`` (the whole job as one Progress: work bytes of every pair, the phase and
    note of the first pair running). ``done``, ``total``, ``line()``: the overall's, for
    any progress line."""

    pairs: tuple[Progress | None, ...]
    states: tuple[str, ...]
    overall: Progress

    @property
    def done(self) -> int:
        return self.overall.done

    @property
    def total(self) -> int:
        return self.overall.total

    @property
    def phase(self) -> str:
        return self.overall.phase

    def running(self) -> list[int]:
        """The numbers (from 1) of the pairs running now."""
        return [i + 1 for i, s in enumerate(self.states) if s == RUNNING]

    def pair_line(self, number: int) -> str:
        """``pair 2 of 3: copy  42.0%  1.2 GB of 3.0 GB ...`` (or its state)."""
        p, state = self.pairs[number - 1], self.states[number - 1]
        head = f"pair {number} of {len(self.pairs)}: "
        return head + (p.line() if state == RUNNING and p is not None else state)

    def line(self) -> str:
        """One line for all: ``pair 1: copy 42.0% 850.0 MB/s | all 21.0% ETA 1:03``."""
        o = self.overall
        parts = []
        for n in self.running():
            p = self.pairs[n - 1]
            if p is None:
                continue
            parts.append(f"pair {n}: {p.note}" if p.phase == WAITING else
                         f"pair {n}: {p.phase} {100 * p.fraction:.1f}% {human_rate(p.rate)}")
        eta = human_duration(o.eta) if o.eta is not None else "?"
        parts.append(f"all {len(self.pairs)} pairs {100 * o.fraction:.1f}% ETA {eta}")
        return " | ".join(parts)

    def overall_line(self) -> str:
        o = self.overall
        eta = human_duration(o.eta) if o.eta is not None else "?"
        ended = sum(1 for s in self.states if s not in (NOT_STARTED, RUNNING))
        return (f"all pairs: {ended} of {len(self.pairs)} ended, {100 * o.fraction:.1f}% of "
                f"the work ({human_size(o.done)} of {human_size(o.total)}), "
                f"{human_rate(o.rate)} (avg {human_rate(o.average_rate)}), ETA {eta}")


class JobMeter:
    """Collects the pairs' progress (from their worker threads) and calls ``callback``
    with a :class:`JobProgress` at each pair's event (each copy throttles its own)."""

    def __init__(self, sizes: list[int], verify: list[bool],
                 callback: Callable[[JobProgress], None] | None):
        n = len(sizes)
        self.callback, self.verify = callback, verify
        self.copy_total = list(sizes)
        self.verify_total = [s if v else 0 for s, v in zip(sizes, verify, strict=True)]
        self.copy_done, self.verify_done = [0] * n, [0] * n
        self.latest: list[Progress | None] = [None] * n
        self.states = [NOT_STARTED] * n
        self.lock = threading.Lock()
        self.meter = RateMeter(self._total(), 0, time.monotonic())

    def _total(self) -> int:
        return sum(self.copy_total) + sum(self.verify_total)

    def _done(self) -> int:
        return sum(self.copy_done) + sum(self.verify_done)

    def for_pair(self, index: int) -> Callable[[Progress], None]:
        """The progress callback of pair ``index`` (from 0)."""
        def update(p: Progress) -> None:
            with self.lock:
                self.latest[index] = p
                if p.phase in VERIFY_PHASES:
                    self.copy_done[index] = self.copy_total[index]
                    self.verify_total[index] = p.total
                    self.verify_done[index] = min(p.done, p.total)
                elif p.phase == "copy" and p.total > 1:
                    self.copy_total[index] = p.total  # a used-blocks domain: its bytes
                    if self.verify[index] and not self.verify_done[index]:
                        self.verify_total[index] = p.total
                    self.copy_done[index] = min(p.done, p.total)
                # trim, scrape, waiting: the copy's bytes stay where they were
            self._emit()
        return update

    def started(self, index: int) -> None:
        with self.lock:
            self.states[index] = RUNNING
        self._emit()

    def ended(self, index: int, status: str) -> None:
        with self.lock:
            self.states[index] = status
            self.copy_done[index] = self.copy_total[index]
            self.verify_done[index] = self.verify_total[index]
        self._emit()

    def not_run(self, index: int) -> None:
        """A pair the job will not start: its work is no longer ahead."""
        with self.lock:
            self.copy_total[index] = self.copy_done[index] = 0
            self.verify_total[index] = self.verify_done[index] = 0
        self._emit()

    def snapshot(self) -> JobProgress:
        with self.lock:
            now = time.monotonic()
            self.meter.total = self._total()
            self.meter.update(self._done(), now)
            m = self.meter
            running = [p for p, s in zip(self.latest, self.states, strict=True)
                       if s == RUNNING and p is not None]
            first = running[0] if running else None
            waiting = next((p for p in running if p.phase == WAITING), None)
            overall = Progress(
                first.phase if first else "copy", m.done, m.total, m.rate, m.average_rate,
                m.eta, sum(p.read_errors for p in self.latest if p),
                sum(p.unreadable_bytes for p in self.latest if p),
                waiting.note if waiting else "")
            return JobProgress(tuple(self.latest), tuple(self.states), overall)

    def _emit(self) -> None:
        if self.callback:
            self.callback(self.snapshot())
