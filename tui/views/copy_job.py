"""Disk Copy with several pairs: the summary of all pairs (options, add another pair,
confirm the targets), the typed confirmation of each TARGET, the progress of each pair
and of the job, the job's result."""

from __future__ import annotations

import urwid

from toolkit.units import human_duration, human_rate, human_size
from tui.views.copy import domain_rows, mapfile_rows
from tui.widgets.base import View, button
from tui.widgets.confirm import ConfirmOverwriteView
from tui.widgets.disk_summary import disk_column


class CopyJobView(View):
    """Every pair chosen: both disks side by side (identities, sizes), what the copy does
    to cluster disks (``sentences``), the warnings; the options of the job; "Confirm the
    N targets" (one typed confirmation each, next) and "Add another pair"."""

    hints = (("↑↓", "move"), ("Space", "toggle"), ("Enter", "choose"), ("Esc", "back"))

    def __init__(self, plans, sentences, recognised, on_confirm, on_add):
        self.title = f"Disk Copy: {len(plans)} pairs"
        rows: list = []
        for n, (plan, sentence) in enumerate(zip(plans, sentences, strict=True), 1):
            rows += [urwid.Text(("title", f"Pair {n} of {len(plans)}")),
                     urwid.Columns([urwid.Text(disk_column("SOURCE (read only)", plan.source)),
                                    urwid.Text(disk_column("TARGET (overwritten)",
                                                           plan.target))], dividechars=2)]
            rows += [urwid.Text(("warn", w)) for w in
                     ([sentence] if sentence else []) + list(plan.warnings)]
            rows.append(urwid.Divider("─"))
        self.verify = urwid.CheckBox("Verify: read each target back and compare "
                                     "(recommended)", state=True)
        group: list = []
        self.blake3 = urwid.RadioButton(group, "BLAKE3 (fast)", state=True)
        self.sha256 = urwid.RadioButton(group, "SHA-256")
        self.skip_zeros = urwid.CheckBox("Skip writing zero chunks (only for targets that "
                                         "read back zeros: fresh thin LUNs)")
        domain, self.used_blocks = domain_rows(recognised)
        order: list = []
        self.side_by_side = urwid.RadioButton(order, "Side by side, where pairs share no "
                                                     "device (the faster where measured)",
                                              state=True)
        self.one_by_one = urwid.RadioButton(order, "One pair after another")
        rows += [*domain, self.verify, urwid.Columns([(20, self.blake3), (16, self.sha256)]),
                 self.skip_zeros, *order, urwid.Divider(),
                 button(f"Confirm the {len(plans)} targets", lambda: on_confirm(
                     verify=self.verify.state,
                     algorithm="sha256" if self.sha256.state else "blake3",
                     skip_zeros=self.skip_zeros.state, concurrent=self.side_by_side.state,
                     used_blocks=bool(self.used_blocks and self.used_blocks.state))),
                 button("Add another pair", on_add)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = len(rows) - 2  # "Confirm the N targets"
        super().__init__(self.listbox)


class PairConfirmView(ConfirmOverwriteView):
    """The typed confirmation of one pair's TARGET (``number`` of ``count``), and what to
    do with that pair's mapfile (:func:`tui.views.copy.mapfile_rows`); the last one starts
    the copies. ``on_confirmed(resume)``."""

    def __init__(self, plan, number: int, count: int, expected: str, state, on_confirmed):
        self.title = f"Disk Copy: confirm target {number} of {count}"
        rows, self.resume = mapfile_rows(plan, state)
        last = number == count
        super().__init__(
            disk_column(f"SOURCE {number} (read only)", plan.source), plan.target,
            f"the content of {plan.source.node}", plan.warnings, rows, expected,
            f"Start the {count} copies" if last else f"Confirm and go to target {number + 1}",
            lambda: on_confirmed(self.resume is not None and self.resume.state))


class CopyJobProgressView(View):
    """Each pair's line (phase, percentage, rate or its verdict) and the whole job's
    bar, amounts, rate and ETA; Cancel (asks first) stops every pair running."""

    hints = (("Esc", "cancel (asks first)"),)
    title = "Disk Copy: running"

    def __init__(self, plans, on_cancel):
        self.keys = {"esc": on_cancel}
        self.lines = [urwid.Text(f"pair {n}: {p.source.node} → {p.target.node}  waiting")
                      for n, p in enumerate(plans, 1)]
        self.plans = plans
        self.bar = urwid.ProgressBar("body", "focus", 0, 100)
        self.figures = urwid.Text("")
        rows = [*self.lines, urwid.Divider(), urwid.Text(("title", "All pairs")), self.bar,
                self.figures, urwid.Divider(), button("Cancel", on_cancel)]
        super().__init__(urwid.Filler(urwid.Pile(rows), valign="top"))

    def update(self, jp) -> None:
        for n, (text, plan) in enumerate(zip(self.lines, self.plans, strict=True), 1):
            p, state = jp.pairs[n - 1], jp.states[n - 1]
            head = f"pair {n}: {plan.source.node} → {plan.target.node}  "
            if state == "running" and p is not None:
                text.set_text(("title", head + (p.note if p.note else
                                                f"{p.phase} {100 * p.fraction:5.1f}%  "
                                                f"{human_rate(p.rate)}")))
            else:
                text.set_text(head + state)
        o = jp.overall
        self.bar.set_completion(100 * o.fraction)
        eta = human_duration(o.eta) if o.eta is not None else "?"
        self.figures.set_text(f"{human_size(o.done)} of {human_size(o.total)} of work   "
                              f"{human_rate(o.rate)} now   ETA {eta}")


class CopyJobResultView(View):
    """The job's end: its headline, each pair's verdict and report, the job's report."""

    hints = (("Enter", "main menu"),)
    title = "Disk Copy: result"

    def __init__(self, result, verdicts: list[str], verified: bool, on_close):
        self.keys = {"esc": on_close, "enter": on_close}
        ok = result.status == "ok"
        headline = ("ALL PAIRS COPIED" + (", VERIFIED" if verified else " (NOT VERIFIED)")
                    if ok else "ALL PAIRS COPIED, SOME SOURCE RANGES UNREADABLE"
                    if result.status == "unreadable" else
                    f"{result.status.upper()}: NOT EVERY PAIR WAS COPIED AND VERIFIED")
        body: list = [urwid.Text(("ok" if ok else "warn", f"  {headline}")), urwid.Divider(),
                      urwid.Text(result.message), urwid.Divider()]
        for o, verdict in zip(result.pairs, verdicts, strict=True):
            body.append(urwid.Text([("title", f"pair {o.number}: "),
                                    f"{o.plan.source.node} → {o.plan.target.node}: {verdict}"]))
            if o.result and o.result.report:
                body.append(urwid.Text(f"  report: {o.result.report.text}"))
        if result.report:
            body += [urwid.Divider(), urwid.Text(f"job report: {result.report.text}")]
        body += [urwid.Divider(), button("Main menu", on_close)]
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(body)))
