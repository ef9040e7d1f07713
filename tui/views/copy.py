"""Disk Copy screens: choose SOURCE, choose TARGET, confirm, progress, result."""

from __future__ import annotations

import urwid

from toolkit.copy.binding import shown
from toolkit.units import human_rate, human_size
from tui.widgets.base import ProgressView, ResultView, button
from tui.widgets.confirm import ConfirmOverwriteView
from tui.widgets.disk_summary import disk_column


def mapfile_rows(plan, state) -> tuple[list, urwid.RadioButton | None]:
    """What to do with the pair's mapfile (``state``), as rows, and the radio button that
    is on when the mapfile is resumed (None: nothing to ask)."""
    rows: list = []
    if state is not None and state.exists and state.problem:
        rows.append(urwid.Text(("warn", _problem(state))))
        return rows, None
    if state is None or not state.exists:
        return rows, None
    group: list = []
    if state.finished:
        rows.append(urwid.Text(f"This pair was already copied on "
                               f"{_date(state, 'finished')}, {state.verified()}."))
        resume = urwid.RadioButton(group, "Verify again: nothing is left to copy",
                                   state=True)
    else:
        resume = urwid.RadioButton(
            group, f"Resume the interrupted copy of this pair "
                   f"({human_size(state.done())} of {human_size(plan.source.size)} "
                   f"done, started {_date(state, 'started')})", state=True)
    urwid.RadioButton(group, "Start over: copy everything again")
    return rows + group, resume


def domain_rows(recognised) -> tuple[list, urwid.RadioButton | None]:
    """Used blocks only or every block, one row (``recognised``: what the sources hold
    that a tool maps, in words; None or []: nothing to choose, every block is copied, and
    no row is shown); the radio button of "used blocks only", preselected."""
    if not recognised:
        return [], None
    group: list = []
    used = urwid.RadioButton(group, "Used blocks only (recommended: " + ", ".join(recognised)
                             + ")", state=True)
    every = urwid.RadioButton(group, "Every block")
    return [urwid.Columns([used, (15, every)], dividechars=1)], used


START = "Start the copy"


class CopySummaryView(ConfirmOverwriteView):
    """The confirmation, and what to do with the pair's mapfile (``state``,
    :class:`toolkit.copy.binding.MapState`) when there is one: an interrupted copy of
    this pair (resume or start over), a finished one (verify again or start over), or one
    that cannot be resumed (another pair's, the source changed, a plain ddrescue one),
    said, and only started over. ``recognised``: :func:`domain_rows`; ``cluster``: what
    the copy does to cluster disks, in words; ``on_add``: "Add another pair" (a job of
    several pairs, each target confirmed later)."""

    title = "Disk Copy: confirm"

    def __init__(self, plan, expected: str, state, on_start, *, recognised=None,
                 cluster: str | None = None, on_add=None):
        self.verify = urwid.CheckBox("Verify: read the target back and compare (recommended)",
                                     state=True)
        group: list = []
        self.blake3 = urwid.RadioButton(group, "BLAKE3 (fast)", state=True)
        self.sha256 = urwid.RadioButton(group, "SHA-256")
        self.skip_zeros = urwid.CheckBox("Skip writing zero chunks (only for a target that "
                                         "reads back zeros: a fresh thin LUN)")
        domain, self.used_blocks = domain_rows(recognised)
        rows, self.resume = mapfile_rows(plan, state)
        # the domain first: what is above the confirmation keeps its place for the keys
        options: list = [*([urwid.Text(("title", cluster))] if cluster else []), *domain,
                         *rows, self.verify,
                         urwid.Columns([(20, self.blake3), (16, self.sha256)]),
                         self.skip_zeros]
        super().__init__(
            disk_column("SOURCE (read only)", plan.source), plan.target,
            f"the content of {plan.source.node}", plan.warnings, options, expected,
            START, lambda: on_start(
                verify=self.verify.state, algorithm="sha256" if self.sha256.state else "blake3",
                skip_zeros=self.skip_zeros.state,
                resume=self.resume is not None and self.resume.state,
                **({"used_blocks": self.used_blocks.state} if self.used_blocks else {})))
        if on_add is not None:  # beside the start button: the keys to it stay as they were
            label = "Add another pair (confirm each target later)"
            self.listbox.body[-1] = urwid.Columns(
                [(len(START) + 4, self.listbox.body[-1]), (len(label) + 4, button(label, on_add))],
                dividechars=2)


def _date(state, key: str) -> str:
    return shown(state.meta.get(key))


def _problem(state) -> str:
    """Why the mapfile there cannot be resumed, and that starting discards it."""
    if state.foreign:
        why = (f"The mapfile {state.path} has no rtk identity lines (a plain GNU ddrescue "
               "mapfile, or one of an older rtk): its origin is unknown.")
    elif state.problem.startswith("the mapfile"):
        why = "T" + state.problem[1:] + "."
    else:
        why = f"The mapfile of this pair cannot be resumed: {state.problem}."
    return f"{why} Starting the copy discards the mapfile and copies everything again."


class CopyProgressView(ProgressView):
    title = "Disk Copy: running"
    phases = {"copy": "Copying", "trim": "Re-reading failed areas",
              "scrape": "Narrowing down unreadable sectors", "verify": "Verifying",
              "discard": "Freeing the free blocks on the target (they read back zeros)"}

    def __init__(self, plan, on_cancel):
        self.errors = urwid.Text("")
        super().__init__(f"{plan.source.label()}\n  → {plan.target.label()}", on_cancel,
                         (self.errors,))

    def update(self, p) -> None:
        super().update(p)
        self.errors.set_text(("warn", f"read errors: {p.read_errors}, unreadable "
                                      f"{human_size(p.unreadable_bytes)}; average "
                                      f"{human_rate(p.average_rate)}")
                             if p.read_errors else
                             f"read errors: none; average {human_rate(p.average_rate)}")


class CopyResultView(ResultView):
    title, unverified = "Disk Copy: result", "COPIED (NOT VERIFIED)"
    headlines = {"ok": "VERIFIED IDENTICAL", "unreadable": "COMPLETED WITH UNREADABLE RANGES",
                 "mismatch": "VERIFY MISMATCH: THE TARGET DIFFERS"}

    def __init__(self, result, on_close):
        rows = []
        d = result.domain
        of = (f"USED BLOCKS: {human_size(d['bytes'])} of {human_size(result.size)}"
              if d else "")
        if of:  # only the domain was copied and compared, not the whole source
            self.headlines = {**self.headlines, "ok": f"VERIFIED IDENTICAL ({of})"}
            self.unverified = f"COPIED ({of}, NOT VERIFIED)"
        if result.unreadable:
            rows.append(urwid.Text(f"{len(result.unreadable)} unreadable range(s), "
                                   f"{result.unreadable_bytes} bytes:"))
            rows += [urwid.Text(f"  bytes {pos}-{pos + size - 1}")
                     for pos, size in result.unreadable[:10]]
        if result.verify and result.verify.first_difference:
            fd = result.verify.first_difference
            rows.append(urwid.Text(f"first difference: bytes {fd.get('start')}-{fd.get('end')}"))
        if result.verify and result.verify.source_hash:
            rows.append(urwid.Text(f"{result.algorithm}"
                                   f"{' of the used-blocks domain' if d else ''}: "
                                   f"{result.verify.source_hash}"))
        if result.mapfile:
            rows.append(urwid.Text(f"mapfile: {result.mapfile}"))
        if result.report:
            rows.append(urwid.Text(f"report: {result.report.text}"))
        super().__init__(result, bool(result.verify and result.verify.match), rows, on_close)
