"""Disk Copy: choose SOURCE and TARGET, confirm, copy in a worker thread, report; or, with
"Add another pair" on the confirmation, a job of several pairs
(:mod:`tui.controllers.copy_job`)."""

from __future__ import annotations

from toolkit.copy import binding, domain_choice
from toolkit.copy import engine as dc
from toolkit.copy.job import cluster_sentence
from toolkit.disks import gate, roles
from toolkit.disks import inventory as disks_mod
from toolkit.disks.inventory import Disk
from tui.controllers.copy_job import CopyJobFlow, devices_here
from tui.controllers.state import before_long_job
from tui.job import Job, JobController
from tui.views.copy import CopyProgressView, CopyResultView, CopySummaryView
from tui.widgets.confirm import confirmation_word
from tui.widgets.disk_chooser import ChooseDiskView

# Devices that are never a sensible SOURCE or TARGET of a disk copy.
_NOT_DISKS = ("cdrom", "floppy")


class CopyController(JobController):
    def __init__(self, app, list_disks=disks_mod.list_disks, source_keys=roles.source_keys):
        self.app = app
        self._list_disks = list_disks
        self._source_keys = source_keys
        self.source_role: frozenset[str] = frozenset()  # names of SOURCE-role disks
        self.disks: list[Disk] = []
        self.source: Disk | None = None
        self.plan: dc.CopyPlan | None = None
        self.map_state: binding.MapState | None = None  # the pair's mapfile, if any
        self.summary: CopySummaryView | None = None  # the confirmation, what was typed
        self.job = Job(app, "Stop the copy?",
                       "The copy stops at a consistent point. Choosing the same SOURCE and "
                       "TARGET again offers to resume it.", "Keep copying")
        self.pairs = CopyJobFlow(self)  # "Add another pair": a job of several pairs

    # --- choosing ------------------------------------------------------------
    def _candidates(self) -> list[Disk]:
        found = [d for d in self._list_disks() if d.transport not in _NOT_DISKS]
        self.source_role = self._source_keys()
        # SOURCE-role LUNs first (BDR snapshots), then other iSCSI LUNs, then local disks
        return sorted(found, key=lambda d: (d.role != roles.SOURCE, d.transport != "iscsi"))

    def show(self) -> None:
        try:
            self.disks = self._candidates()
        except OSError as e:
            self.app.dialog("Disk Copy", f"Could not read the disks: {e}",
                            [("OK", self.app.close_dialog)])
            return
        choices = [(d, "boot medium of this live system" if d.boot_medium else None)
                   for d in self.disks]
        self.app.push(ChooseDiskView(
            "Disk Copy: choose the SOURCE",
            "The SOURCE is only read (a BDR snapshot LUN, the old disk).", choices,
            self.choose_source))

    def target_choices(self, source: Disk) -> list[tuple[Disk, str | None]]:
        src = dc.endpoint_from_disk(source)
        out = []
        for d in self.disks:
            if d.name == source.name:
                out.append((d, "this is the SOURCE"))
                continue
            # deep: every alias sysfs knows (a loop device over the source...), for devices
            # of this machine; the write gate decides the same again when it opens it
            problems, _warnings = dc.check_pair(src, dc.endpoint_from_disk(d),
                                                self.source_role,
                                                deep=devices_here(source, d))
            out.append((d, problems[0] if problems else None))
        # eligible targets first, TARGET-role LUNs (SAN volumes) first among them
        return sorted(out, key=lambda c: (c[1] is not None, c[0].role != roles.TARGET))

    def choose_source(self, disk: Disk) -> None:
        self.source = disk
        self.app.push(ChooseDiskView(
            "Disk Copy: choose the TARGET",
            f"SOURCE: {disk.path}. The TARGET is overwritten entirely (the SAN LUN, the new "
            "disk).", self.target_choices(disk), self.choose_target))

    def choose_target(self, target: Disk) -> None:
        assert self.source is not None
        try:
            plan = dc.plan_copy(self.source.path, target.path, source_role=self.source_role,
                                disks=self.disks)
        except dc.Refused as e:
            self.app.dialog("Cannot copy", str(e), [("OK", self.app.close_dialog)])
            return
        self.plan = plan

        def summary() -> None:  # the mapfile is looked for where the state is by then
            self.map_state = self.state_of(plan)
            self.summary = CopySummaryView(
                plan, confirmation_word(target), self.map_state, self.start,
                recognised=domain_choice.recognised(plan.source),
                cluster=cluster_sentence(plan, notable=True),
                on_add=lambda: self.pairs.add_pair((plan,)))
            self.app.push(self.summary)
        before_long_job(self.app, summary, busy=(plan.source.disk.path, plan.target.disk.path))

    def state_of(self, plan: dc.CopyPlan) -> binding.MapState:
        """What the default mapfile of this pair says (an interrupted or finished copy of
        it, another pair's, a changed source...): the summary asks what to do with it."""
        try:
            return binding.inspect(plan)
        except OSError:  # the source cannot be read for its fingerprint: the copy says so
            return binding.MapState(dc.default_mapfile(plan), default=True)

    # --- running -------------------------------------------------------------
    def start(self, *, verify: bool, algorithm: str, skip_zeros: bool, resume: bool,
              used_blocks: bool = False) -> None:
        plan = self.plan
        assert plan is not None
        state = self.map_state
        # none there: refuse one that appeared since; one with a problem: only start over
        existing = ("refuse" if state is None or not state.exists
                    else "resume" if resume and not state.problem else "restart")
        options = dc.CopyOptions(verify=verify, algorithm=algorithm, skip_zeros=skip_zeros,
                                 existing=existing, choices=binding.MENU)
        # what the technician typed: the write gate opens the target only if it names it
        consent = gate.Consent.menu(self.summary.confirm.edit_text)

        def run(progress, cancel):  # the used blocks are mapped here, in the worker
            opts = (domain_choice.with_used_blocks(options, plan.source) if used_blocks
                    else options)
            return dc.copy(plan, opts, progress=progress, cancel=cancel, consent=consent)
        self.job.start_behind(
            CopyProgressView(plan, self.job.confirm_cancel), "disk-copy", run,
            self._done, lambda e: self.job.failed("Cannot copy", str(e)), errors=(dc.Refused,))

    def _done(self, result: dc.CopyResult) -> None:
        self.app.replace(CopyResultView(result, self.app.pop_to_root))
