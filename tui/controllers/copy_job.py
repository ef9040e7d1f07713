"""Disk Copy with several pairs (a part of :class:`tui.controllers.copy.CopyController`):
after the first pair's summary, "Add another pair" chooses a SOURCE and a TARGET again
(what another pair already uses cannot be chosen, and says why), then one summary of
every pair, one typed confirmation per TARGET, the copies
(:func:`toolkit.copy.job.run_job`) behind one progress screen, one result.

The pairs chosen so far travel with the screens (a tuple of plans): going back with Esc
and choosing again replaces the later pairs, never adds a pair twice.
"""

from __future__ import annotations

import os
import stat

from toolkit.copy import binding, domain_choice
from toolkit.copy import engine as dc
from toolkit.copy import job as copyjob
from toolkit.copy.job_report import pair_verdict
from toolkit.disks import gate
from toolkit.disks.inventory import Disk
from tui.views.copy_job import CopyJobProgressView, CopyJobResultView, CopyJobView, PairConfirmView
from tui.widgets.confirm import confirmation_word
from tui.widgets.disk_chooser import ChooseDiskView


def devices_here(*disks: Disk) -> bool:
    """Whether every disk's node is a block device of this machine (then the write gate's
    deep checks can follow its aliases; a disk described by hand has none)."""
    try:
        return all(stat.S_ISBLK(os.stat(d.path).st_mode) for d in disks)
    except OSError:
        return False


def recognised_all(plans) -> list[str] | None:
    """What every pair's SOURCE holds that a tool maps, ``pair N: ...`` (None: this build
    cannot copy used blocks only)."""
    out: list[str] = []
    for n, plan in enumerate(plans, 1):
        found = domain_choice.recognised(plan.source)
        if found is None:
            return None
        out += [f"pair {n}: {x}" for x in found]
    return out


class CopyJobFlow:
    """The several-pairs part of the Disk Copy controller ``ctl`` (its app, disks, roles,
    single-pair checks and job)."""

    def __init__(self, ctl):
        self.ctl, self.app = ctl, ctl.app
        self.consents: dict[int, tuple[gate.Consent, bool]] = {}  # pair index: (consent, resume)
        self.states: list[binding.MapState] = []

    # --- choosing another pair ---------------------------------------------------------
    def used_by(self, base, disk: Disk) -> str | None:
        """Why ``disk`` cannot be the SOURCE of another pair: it is a TARGET already."""
        for n, plan in enumerate(base, 1):
            if disk.name == plan.target.disk.name:
                return f"the TARGET of pair {n}"
        return None

    def source_choices(self, base) -> list[tuple[Disk, str | None]]:
        return [(d, "boot medium of this live system" if d.boot_medium else
                 self.used_by(base, d)) for d in self.ctl.disks]

    def add_pair(self, base: tuple) -> None:
        self.app.push(ChooseDiskView(
            f"Disk Copy: choose the SOURCE of pair {len(base) + 1}",
            f"{len(base)} pair(s) chosen. The SOURCE is only read.", self.source_choices(base),
            lambda disk: self.choose_source(base, disk)))

    def target_choices(self, base, source: Disk) -> list[tuple[Disk, str | None]]:
        """The single pair's reasons, then what the other pairs forbid: a TARGET already,
        another pair's SOURCE, by any alias (the job's own check, :func:`cross_problems`)."""
        src = dc.endpoint_from_disk(source)
        out = []
        for d, why in self.ctl.target_choices(source):
            if why is None:
                why = self.used_by(base, d)
            if why is None:
                plans = [*base, dc.CopyPlan(src, dc.endpoint_from_disk(d))]
                found = copyjob.cross_problems(plans, deep=devices_here(source, d))
                why = found[0] if found else None
            out.append((d, why))
        return sorted(out, key=lambda c: c[1] is not None)

    def choose_source(self, base, disk: Disk) -> None:
        self.app.push(ChooseDiskView(
            f"Disk Copy: choose the TARGET of pair {len(base) + 1}",
            f"SOURCE: {disk.path}. The TARGET is overwritten entirely.",
            self.target_choices(base, disk), lambda t: self.choose_target(base, disk, t)))

    def choose_target(self, base, source: Disk, target: Disk) -> None:
        try:
            plan = dc.plan_copy(source.path, target.path, source_role=self.ctl.source_role,
                                disks=self.ctl.disks)
            plans = (*base, plan)
            problems = copyjob.cross_problems(plans)
            if problems:
                raise dc.Refused(problems)
        except dc.Refused as e:
            self.app.dialog("Cannot copy", str(e), [("OK", self.app.close_dialog)])
            return
        self.show(plans)

    def show(self, plans: tuple) -> None:
        """The one summary of every pair."""
        self.app.push(CopyJobView(
            plans, [copyjob.cluster_sentence(p, notable=True) for p in plans],
            recognised_all(plans),
            lambda **options: self.confirm(plans, options), lambda: self.add_pair(plans)))

    # --- one confirmation per target ---------------------------------------------------
    def confirm(self, plans: tuple, options: dict) -> None:
        self.states = [self.ctl.state_of(p) for p in plans]
        self.consents = {}
        self.ask(plans, options, 0)

    def ask(self, plans: tuple, options: dict, i: int) -> None:
        plan = plans[i]
        view: PairConfirmView | None = None

        def confirmed(resume: bool) -> None:
            self.consents[i] = (gate.Consent.menu(view.confirm.edit_text), resume)
            if i + 1 < len(plans):
                self.ask(plans, options, i + 1)
            else:
                self.start(plans, options)
        view = PairConfirmView(plan, i + 1, len(plans), confirmation_word(plan.target.disk),
                               self.states[i], confirmed)
        self.app.push(view)

    # --- running -----------------------------------------------------------------------
    def start(self, plans: tuple, options: dict) -> None:
        pairs = []
        for i, plan in enumerate(plans):
            consent, resume = self.consents[i]
            state = self.states[i]
            existing = ("refuse" if state is None or not state.exists
                        else "resume" if resume and not state.problem else "restart")
            opts = dc.CopyOptions(verify=options["verify"], algorithm=options["algorithm"],
                                  skip_zeros=options["skip_zeros"], existing=existing,
                                  choices=binding.MENU)
            pairs.append(copyjob.JobPair(plan, opts, consent, options["used_blocks"]))
        job = self.ctl.job
        job.start_behind(
            CopyJobProgressView(plans, job.confirm_cancel), "disk-copy-job",
            lambda progress, cancel: copyjob.run_job(
                pairs, concurrent=options["concurrent"], progress=progress, cancel=cancel),
            self.done, lambda e: job.failed("Cannot copy", str(e)), errors=(dc.Refused,))

    def done(self, result: copyjob.JobResult) -> None:
        verified = all(o.result and o.result.verify and o.result.verify.match
                       for o in result.pairs)
        self.app.replace(CopyJobResultView(result, [pair_verdict(o) for o in result.pairs],
                                           verified, self.app.pop_to_root))
