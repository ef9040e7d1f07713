"""``rtk copy SRC1 DST1 SRC2 DST2 ...``: a copy job of several pairs (docs/copy.md,
"Several pairs"), :mod:`toolkit.copy.job` on the command line.

Every pair is planned and checked first, on its own and beside the others (a disk that
is the TARGET of two pairs, a TARGET that is another pair's SOURCE or TARGET by any
alias: refused, exit 5, nothing written); then one summary of all pairs, then one
confirmation per TARGET, in the order of the pairs: typed at the prompt, or
``--yes --target-id ID1 --target-id ID2 ...`` (one per pair, in order). Progress: one
line (rewritten on a terminal) for the pairs running and the whole job, and a line when a
pair starts and ends. The exit code is the worst pair's (:data:`toolkit.copy.job.SEVERITY`).
"""

from __future__ import annotations

import argparse
import sys
import time

from toolkit.cli.common import (
    ProgressLine,
    cancel_on_signals,
    collect_consent,
    err,
    refused,
)
from toolkit.errors import Refused
from toolkit.exitcodes import EXIT_REFUSED, EXIT_USAGE
from toolkit.units import human_size


def pairs_of(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """The pairs given (SRC DST SRC DST...), or None (an odd count: said on stderr)."""
    paths = [args.source, args.target, *args.more]
    if len(paths) % 2:
        err(f"copy: give SOURCE TARGET pairs: {len(paths)} paths given, the last "
            f"({paths[-1]}) has no TARGET")
        return None
    return list(zip(paths[::2], paths[1::2], strict=True))


def _summary(plans, args: argparse.Namespace, options_line: str) -> None:
    from toolkit.copy.job import cluster_sentence

    print(f"{len(plans)} pairs, {options_line}", file=sys.stderr)
    for n, plan in enumerate(plans, 1):
        s, t = plan.source, plan.target
        print(f"pair {n} of {len(plans)}:", file=sys.stderr)
        print(f"  source: {s.label()}", file=sys.stderr)
        print(f"  target: {t.label()}", file=sys.stderr)
        print(f"  size:   {s.size} bytes ({human_size(s.size)}); target {t.size} bytes",
              file=sys.stderr)
        if sentence := cluster_sentence(plan):  # toolkit.disks.cluster, when there
            print(f"  cluster: {sentence}", file=sys.stderr)
        for w in plan.warnings:
            print(f"  warning: {w}", file=sys.stderr)


def _consents(args: argparse.Namespace, plans) -> list | None:
    """One consent per TARGET, in order; None (said on stderr) when one is missing."""
    ids = args.target_id or []
    if args.yes and len(ids) != len(plans):
        err(f"copy refused: --yes needs one --target-id per pair, in the order of the pairs: "
            f"{len(plans)} pairs, {len(ids)} given")
        return None
    consents = []
    for n, plan in enumerate(plans, 1):
        one = argparse.Namespace(yes=args.yes, target_id=ids[n - 1] if args.yes else None)
        if not args.yes:
            print(f"pair {n} of {len(plans)}: {plan.source.node} -> {plan.target.node}",
                  file=sys.stderr)
        consent, why = collect_consent(one, plan.target)
        if why:
            err(f"copy refused: pair {n}: {why}")
            return None
        consents.append(consent)
    return consents


class JobLine:
    """The job's progress: a line per event of a pair (started, ended) and the running
    line of :class:`~toolkit.cli.common.ProgressLine` for the pairs and the whole job.
    A line that cannot be written (stderr a closed pipe: ``rtk copy ... 2>&1 | head``)
    is dropped, never the job: its pairs go on and its report is written to the end."""

    def __init__(self, count: int):
        self.line, self.count = ProgressLine(), count
        self.last = time.monotonic()  # the first block after 10 s
        self.gone = False  # a write failed: nothing more is written

    def __call__(self, jp) -> None:
        self._say(self._progress, jp)

    def pair(self, o) -> None:
        self._say(self._pair, o)

    def _say(self, what, arg) -> None:
        if self.gone:
            return
        try:
            what(arg)
        except (OSError, ValueError):  # BrokenPipeError; a closed stream: ValueError
            self.gone = True

    def _progress(self, jp) -> None:
        if self.line.tty:
            self.line(jp)
        elif time.monotonic() - self.last >= 10:  # one block every 10 s
            self.last = time.monotonic()
            for n in jp.running():
                print(jp.pair_line(n), file=sys.stderr)
            print(jp.overall_line(), file=sys.stderr)

    def _pair(self, o) -> None:
        from toolkit.copy.job_report import pair_verdict
        self.line.end()
        what = "started" if o.status == "running" else pair_verdict(o)
        print(f"pair {o.number} of {self.count} ({o.plan.source.node} -> "
              f"{o.plan.target.node}): {what}", file=sys.stderr)


def _finish(result) -> int:
    from toolkit.copy.job_report import pair_verdict
    for o in result.pairs:
        print(f"pair {o.number}: {o.plan.source.node} -> {o.plan.target.node}: "
              f"{pair_verdict(o)}")
        r = o.result
        if r and r.source_digest:
            print(f"  {r.algorithm} source: {r.source_digest.hexdigest}")
        if r and r.report:
            print(f"  report: {r.report.text}")
        if o.status == "not started":
            print(f"  to copy it: rtk copy {o.plan.source.path} {o.plan.target.path}")
    print(result.message)
    if result.report:
        print(f"job report: {result.report.text}")
    return result.exit_code


def cmd_copy_job(args: argparse.Namespace, pairs: list[tuple[str, str]], copymod) -> int:
    """Plan, summarise, confirm each target, run: see the module's text."""
    from toolkit.cli.copy import existing_problem, options_from
    from toolkit.copy import job
    from toolkit.disks import roles

    if args.mapfile is not None:
        err("copy: --mapfile names the mapfile of one pair; with several pairs each "
            "pair's mapfile is at its default place")
        return EXIT_USAGE
    try:
        plans = job.plan_job(pairs, source_role=roles.source_keys())
    except Refused as e:
        return refused(e, "copy")
    concurrent = job.DEFAULT_CONCURRENT if args.concurrent is None else args.concurrent
    order = "side by side where they share no device" if concurrent else "one after another"
    _summary(plans, args, f"{order}, verify "
             f"{'on (' + args.algorithm + ')' if args.verify else 'off'}"
             f"{', used blocks only' if args.used_blocks else ''}")
    problems = [f"pair {n}: {why}" for n, plan in enumerate(plans, 1)
                if (why := existing_problem(plan, args))]
    if problems:
        return refused(Refused(problems), "copy")
    consents = _consents(args, plans)
    if consents is None:
        return EXIT_REFUSED
    # the used blocks are mapped when each pair starts (a refusal there is that pair's)
    pairs_run = [job.JobPair(plan, options_from(args, copymod), consent, args.used_blocks)
                 for plan, consent in zip(plans, consents, strict=True)]
    line = JobLine(len(plans))
    result = job.run_job(pairs_run, concurrent=concurrent, progress=line, on_pair=line.pair,
                         cancel=cancel_on_signals())
    line._say(lambda _none: line.line.end(), None)
    return _finish(result)
