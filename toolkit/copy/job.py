"""A copy job of several SOURCE -> TARGET pairs: planned together, confirmed target by
target, run one after another (or side by side), reported as one job (docs/copy.md,
"Several pairs").

* :func:`plan_job` plans each pair (:func:`toolkit.copy.plan.plan_copy`) and refuses,
  before anything is written, a job where a disk is the TARGET of two pairs, or where a
  TARGET is, by any alias, the SOURCE or TARGET of another pair
  (:func:`cross_problems`: the write gate's own :func:`toolkit.disks.gate.write_problems`
  with every other pair's ends as its inputs).
* :func:`run_job` runs the pairs through :func:`toolkit.copy.engine.copy`, each with its
  own consent (the gate checks it when it opens that target), mapfile and report.
  ``concurrent`` (the default, :data:`DEFAULT_CONCURRENT`): pairs that share no device
  (:func:`lanes`) run side by side, those that share one, one after another; otherwise
  all one after another. A pair that fails, is refused, is cancelled or does not verify
  stops the job: the pairs running go on to their end, no other starts, and the job's
  report says which ran and which did not. A pair with unreadable ranges (copied, zeros
  written there) does not stop it. The job's status is its worst pair's
  (:data:`SEVERITY`), and so is its exit code.
* The job's own report (:mod:`toolkit.copy.job_report`) lists each pair, its verdict and
  its report; progress: :mod:`toolkit.copy.job_progress`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from toolkit import exitcodes
from toolkit.blockio.mapfile import MapfileError
from toolkit.copy import domain_choice, engine
from toolkit.copy.engine import CopyOptions, CopyPlan, CopyResult
from toolkit.copy.job_progress import NOT_STARTED, RUNNING, JobMeter, JobProgress
from toolkit.disks import decision, gate
from toolkit.disks.inventory import Disk, list_disks
from toolkit.errors import Refused
from toolkit.jobs import report

# The default order, from the measurement in docs/copy.md ("Several pairs"): pairs that
# share no device, side by side, took 0.76-0.92 of the time one after another took, on
# loop devices over the page cache, over a disk (direct I/O), and with the targets in RAM.
DEFAULT_CONCURRENT = True
# worst last: the job's status is its worst pair's (and its exit code, through it)
SEVERITY = ("ok", "unreadable", "refused", "cancelled", "failed", "mismatch")
STOPS = ("refused", "cancelled", "failed", "mismatch")  # a pair ending so starts no other


@dataclass
class JobPair:
    """One pair of the job: its plan, its copy's options (mapfile, resume...), what the
    person confirmed its target with (None: a program's call, the path), and whether
    only the source's used blocks are copied (mapped when the pair starts,
    :func:`toolkit.copy.domain_choice.with_used_blocks`)."""

    plan: CopyPlan
    options: CopyOptions = field(default_factory=CopyOptions)
    consent: gate.Consent | None = None
    used_blocks: bool = False


@dataclass
class PairOutcome:
    """What became of one pair: ``status`` "not started", "running", or how it ended (the
    copy's status; "refused" or "failed" when it raised)."""

    number: int
    plan: CopyPlan
    status: str = NOT_STARTED
    message: str = ""
    result: CopyResult | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def exit_code(self) -> int | None:
        return None if self.status in (NOT_STARTED, RUNNING) else exitcodes.for_status(
            self.status)

    @property
    def label(self) -> str:
        return f"pair {self.number} ({self.plan.source.node} -> {self.plan.target.node})"


@dataclass
class JobResult(exitcodes.StatusExit):
    status: str
    message: str
    pairs: list[PairOutcome]
    concurrent: bool
    started: float
    finished: float
    warnings: list[str] = field(default_factory=list)
    report: report.ReportPaths | None = None


def pair_name(number: int, plan: CopyPlan) -> str:
    return f"pair {number} ({plan.source.node} -> {plan.target.node})"


def cluster_sentence(plan: CopyPlan, *, notable: bool = False) -> str | None:
    """What the copy does to cluster disks, in words ("this LUN held this cluster disk
    ...: the copy puts it back", "you are about to overwrite disk GUID X (Vol2, ...) with
    a copy of ..."), by :func:`toolkit.disks.cluster.comparison` of both ends' partition
    tables as the inventory read them; None when there is nothing to say. ``notable``:
    only when the target holds a cluster disk (the same, another, overwritten by a blank
    source), for a screen with no line to spare. The one place the job's summaries
    (``rtk copy``, the menu, unattended runs) take it from."""
    try:
        from toolkit.disks import cluster
    except ImportError:  # a build without cluster identities
        return None
    try:
        ids = [e.disk.cluster if hasattr(e.disk, "cluster") else cluster.of_disk(e.disk)
               for e in (plan.source, plan.target)]
        c = cluster.comparison(
            *ids, source_offset=plan.source.start if plan.source.is_partition else None,
            target_offset=plan.target.start if plan.target.is_partition else None)
    except Exception:  # noqa: BLE001 - a sentence of the summary never stops a copy
        return None
    if notable and c.verdict not in (cluster.SAME, cluster.DIFFERENT, cluster.SOURCE_BLANK):
        return None
    return c.text or None


def _inputs(plans: Sequence[CopyPlan], i: int, every_target: bool) -> list[gate.Input]:
    """What pair ``i``'s target must not destroy besides its own source: every other
    pair's source, and the targets of the pairs after it (a collision of two targets is
    said once, by the first), or ``every_target`` other."""
    out = []
    for j, q in enumerate(plans):
        if j != i:
            out.append(gate.Input(q.source.path, f"source of pair {j + 1}", endpoint=q.source))
        if j > i or (every_target and j != i):
            out.append(gate.Input(q.target.path, f"target of pair {j + 1}", endpoint=q.target))
    return out


def cross_problems(plans: Sequence[CopyPlan], *, deep: bool = True,
                   only: int | None = None) -> list[str]:
    """Why the pairs may not run in one job, each reason naming its pair: a disk that is
    the TARGET of two pairs; a TARGET that is, by any alias the write gate resolves, the
    SOURCE or TARGET of another pair. ``only``: the reasons of that pair (from 0)."""
    problems: list[str] = []
    for i, p in enumerate(plans):
        if only is not None and i != only:
            continue
        for j, q in enumerate(plans):
            if (j > i or (only is not None and j != i)) and p.target.rdev is not None \
                    and p.target.rdev == q.target.rdev:
                a, b = sorted((i + 1, j + 1))
                problems.append(f"{p.target.node} is the TARGET of pair {a} and of pair "
                                f"{b}: a disk can be the target of one pair only")
        inputs = [x for x in _inputs(plans, i, only is not None)
                  if not (x.role.startswith("target") and x.endpoint.rdev is not None
                          and x.endpoint.rdev == p.target.rdev)]  # said just above
        for why in gate.write_problems(p.target, inputs, deep=deep):
            problems.append(f"{pair_name(i + 1, p)}: {why}")
    return list(dict.fromkeys(problems))


def plan_job(pairs: Iterable[tuple[str, str]], *, source_role: Iterable[str] = frozenset(),
             disks: list[Disk] | None = None) -> list[CopyPlan]:
    """Each pair's plan, once every pair is safe on its own and beside the others;
    else :class:`Refused` with every problem, each naming its pair."""
    pairs = list(pairs)
    disks = list_disks() if disks is None else disks
    role = frozenset(source_role)
    plans, problems = [], []
    for n, (src, dst) in enumerate(pairs, 1):
        try:
            plans.append(engine.plan_copy(src, dst, source_role=role, disks=disks))
        except Refused as e:
            problems += [f"pair {n} ({src} -> {dst}): {p}" for p in e.problems]
    if not problems:
        problems = cross_problems(plans)
    if problems:
        raise Refused(problems)
    return plans


def _share(a: CopyPlan, b: CopyPlan) -> bool:
    """Whether two pairs touch one medium (then they run one after another)."""
    if any(x.keys & y.keys for x in (a.source, a.target) for y in (b.source, b.target)):
        return True
    return decision.alias_problem(a.source, gate.Input(b.source.path, endpoint=b.source)) \
        is not None


def lanes(plans: Sequence[CopyPlan]) -> list[list[int]]:
    """The pairs (indexes from 0) in groups that share a device by any end: a group runs
    one pair after another, the groups side by side."""
    group = list(range(len(plans)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i
    for i in range(len(plans)):
        for j in range(i + 1, len(plans)):
            if root(i) != root(j) and _share(plans[i], plans[j]):
                group[root(j)] = root(i)
    out: dict[int, list[int]] = {}
    for i in range(len(plans)):
        out.setdefault(root(i), []).append(i)
    return list(out.values())


def worst(statuses: Iterable[str]) -> str | None:
    """The worst of the pairs' statuses (:data:`SEVERITY`; "not started" does not count)."""
    ranked = [s for s in statuses if s not in (NOT_STARTED, RUNNING)]
    return max(ranked, key=lambda s: SEVERITY.index(s) if s in SEVERITY else len(SEVERITY),
               default=None)


class _Run:
    """One run of the job: the pairs' outcomes, the meter, the report as it goes."""

    def __init__(self, pairs: Sequence[JobPair], concurrent: bool, progress, on_pair,
                 cancel: threading.Event | None, report_dir: str | None, write: bool):
        self.pairs, self.concurrent = list(pairs), concurrent
        self.plans = [p.plan for p in self.pairs]
        self.outcomes = [PairOutcome(i + 1, p.plan) for i, p in enumerate(self.pairs)]
        self.meter = JobMeter([p.plan.source.size for p in self.pairs],
                              [p.options.verify for p in self.pairs], progress)
        self.on_pair = on_pair or (lambda _outcome: None)
        self.cancel = cancel or threading.Event()
        self.halt = threading.Event()  # set: no further pair starts
        self.starting = threading.Lock()  # one copy starts at a time (its report's name)
        self.report_lock = threading.Lock()
        self.report_dir, self.write = report_dir, write
        self.report_paths: report.ReportPaths | None = None
        self.started = time.time()

    def result(self, final: bool) -> JobResult:
        """The job as it stands (``final``: it ended; else its status is "running")."""
        from toolkit.copy.job_report import job_message
        status = (worst(o.status for o in self.outcomes) or "cancelled") if final else RUNNING
        return JobResult(status, job_message(self.outcomes, final), self.outcomes,
                         self.concurrent, self.started, time.time(), report=self.report_paths)

    def save_report(self, final: bool = False) -> None:
        """Write the job's report (the first time) or rewrite it in place: after a power
        cut, the last version says which pairs had ended."""
        if not self.write:
            return
        from toolkit.copy.job_report import write_job_report
        with self.report_lock:
            r = self.result(final)
            with contextlib.suppress(OSError):  # each pair's own report stands
                self.report_paths = write_job_report(r, self.report_dir,
                                                     paths=self.report_paths)

    def run_pair(self, i: int) -> None:
        pair, out = self.pairs[i], self.outcomes[i]
        again = cross_problems(self.plans, only=i)  # the identities, once more, right now
        out.started, out.status = time.time(), RUNNING
        self.on_pair(out)
        self.meter.started(i)
        if again:
            out.status, out.message = "refused", "; ".join(again)
        else:
            out.status, out.message, out.result = self._copy(i, pair)
        out.finished = time.time()
        self.meter.ended(i, out.status)
        if out.status in STOPS:
            self.halt.set()
        self.save_report()
        self.on_pair(out)

    def _copy(self, i: int, pair: JobPair) -> tuple[str, str, CopyResult | None]:
        first = self.meter.for_pair(i)
        held = [self.starting.acquire()]  # released at the copy's first event: its report

        def progress(p) -> None:
            if held and held.pop():
                self.starting.release()
            first(p)
        try:
            options = (domain_choice.with_used_blocks(pair.options, pair.plan.source)
                       if pair.used_blocks else pair.options)
            r = engine.copy(pair.plan, options, progress=progress, cancel=self.cancel,
                            consent=pair.consent)
        except Refused as e:
            return "refused", "; ".join(e.problems), None
        except MapfileError as e:
            return "refused", f"the mapfile of this pair: {e}", None
        except OSError as e:
            return "failed", f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", None
        except Exception as e:  # noqa: BLE001 - one pair's failure is reported, not raised
            return "failed", f"{type(e).__name__}: {e}", None
        finally:
            if held and held.pop():
                self.starting.release()
        return r.status, r.message, r

    def lane(self, indexes: list[int]) -> None:
        for i in indexes:
            if self.halt.is_set() or self.cancel.is_set():
                return
            self.run_pair(i)

    def run(self) -> JobResult:
        self.save_report()
        groups = lanes(self.plans) if self.concurrent else [list(range(len(self.plans)))]
        if len(groups) == 1:
            self.lane(groups[0])
        else:
            threads = [threading.Thread(target=self.lane, args=(g,), name=f"rtk-pairs-{n}",
                                        daemon=True) for n, g in enumerate(groups, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for i, o in enumerate(self.outcomes):
            if o.status == NOT_STARTED:
                self.meter.not_run(i)
        self.save_report(final=True)
        return self.result(True)


def run_job(pairs: Sequence[JobPair], *, concurrent: bool = DEFAULT_CONCURRENT,
            progress: Callable[[JobProgress], None] | None = None,
            on_pair: Callable[[PairOutcome], None] | None = None,
            cancel: threading.Event | None = None, report_dir: str | None = None,
            write_report: bool = True) -> JobResult:
    """Copy every pair (checked with :func:`plan_job` before), as the module says.

    ``progress`` gets a :class:`~toolkit.copy.job_progress.JobProgress` from the pairs'
    worker threads; ``on_pair(outcome)`` when a pair starts (status "running") and when it
    ends. ``cancel`` stops the pairs running (each leaves its mapfile) and starts no other.
    Never raises for a pair: each pair's refusal or failure is its outcome."""
    return _Run(pairs, concurrent, progress, on_pair, cancel, report_dir, write_report).run()
