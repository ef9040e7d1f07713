"""Disk Copy screens: choose SOURCE, choose TARGET, confirm, progress, result."""

from __future__ import annotations

import urwid

from toolkit.disks.inventory import Disk
from toolkit.units import human_rate, human_size
from tui.views.disks import disk_markup
from tui.widgets.base import ProgressView, ResultView, SelectableLine, View, button


class ChooseDiskView(View):
    """Disks to pick from; those that cannot be picked say why."""

    hints = (("↑↓", "move"), ("Enter", "choose"), ("Esc", "back"))

    def __init__(self, title: str, intro: str, choices: list[tuple[Disk, str | None]],
                 on_choose):
        self.title = title
        rows: list = [urwid.Text(intro), urwid.Divider("─")]
        for disk, reason in choices:
            if reason is None:
                rows.append(SelectableLine(disk_markup(disk), lambda d=disk: on_choose(d)))
            else:
                rows.append(urwid.Text([("dim", f"{disk.path:<13} {human_size(disk.size):>9}  "
                                                f"{disk.model or disk.transport}\n"),
                                        ("warn", f"    cannot be chosen: {reason}")]))
            rows.append(urwid.Divider("─"))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        super().__init__(self.listbox)


def _side(role: str, e) -> list:
    """One column of the summary: everything that tells this disk apart."""
    d = e.disk
    lines = [("title", f"{role}\n"), f"{e.node}\n", f"{human_size(e.size)} ({e.size} B)\n",
             f"{d.vendor or ''} {d.model or d.transport}".strip() + "\n",
             f"serial {d.serial or '-'}\n"]
    if d.wwn:
        lines.append(f"WWN {d.wwn}\n")
    if d.iscsi:
        lines.append(f"{d.iscsi.target}\nLUN {d.iscsi.lun} @ {d.iscsi.portal}\n")
    if d.backing_file:
        lines.append(f"file {d.backing_file}\n")
    for link in d.by_path[:1]:
        lines.append(("dim", link.removeprefix("/dev/disk/by-path/") + "\n"))
    for p in d.partitions:
        label = f' "{p.label}"' if p.label else ""
        lines.append(f"  {p.name} {human_size(p.size)} {p.fstype or '?'}{label}\n")
    if not d.partitions:
        lines.append(f"  {d.fstype or 'no partitions'}" + (f' "{d.label}"' if d.label else "")
                     + "\n")
    return lines


class CopySummaryView(View):
    title = "Disk Copy: confirm"
    hints = (("↑↓", "options"), ("Space", "toggle"), ("Enter", "start"), ("Esc", "back"))

    def __init__(self, plan, expected: str, resume_done: int | None, on_start):
        self.expected = expected
        self.on_start = on_start
        self.verify = urwid.CheckBox("Verify: read the target back and compare (recommended)",
                                     state=True)
        group: list = []
        self.blake3 = urwid.RadioButton(group, "BLAKE3 (fast)", state=True)
        self.sha256 = urwid.RadioButton(group, "SHA-256")
        self.skip_zeros = urwid.CheckBox("Skip writing zero chunks (only for a target that "
                                         "reads back zeros: a fresh thin LUN)")
        self.resume = None
        self.confirm = urwid.Edit(f"Type {expected} to confirm: ")
        self.error = urwid.Text("")
        confirm_row = urwid.AttrMap(self.confirm, "body", "focus")
        rows: list = [
            urwid.Columns([urwid.Text(_side("SOURCE (read only)", plan.source)),
                           urwid.Text(_side("TARGET (overwritten)", plan.target))],
                          dividechars=2),
            urwid.Divider("─"),
            urwid.Text(("warn", f"Everything on {plan.target.node} will be overwritten with "
                                f"the content of {plan.source.node}.")),
        ]
        rows += [urwid.Text(("warn", w)) for w in plan.warnings]
        if resume_done is not None:
            rgroup: list = []
            self.resume = urwid.RadioButton(
                rgroup, f"Resume the interrupted copy of this pair ({human_size(resume_done)} "
                        f"of {human_size(plan.source.size)} done)", state=True)
            urwid.RadioButton(rgroup, "Start over")
            rows.append(self.resume)
            rows.append(rgroup[1])
        rows += [self.verify, urwid.Columns([(20, self.blake3), (16, self.sha256)]),
                 self.skip_zeros, urwid.Divider(), confirm_row,
                 self.error,
                 button("Start the copy", self._start)]
        self.walker = urwid.SimpleFocusListWalker(rows)
        self.listbox = urwid.ListBox(self.walker)
        self.listbox.focus_position = rows.index(confirm_row)  # options are above
        super().__init__(self.listbox)

    def _start(self, *_args) -> None:
        typed = self.confirm.edit_text.strip()
        if typed != self.expected:
            self.error.set_text(("warn", f"Type exactly {self.expected} (you typed "
                                         f"{typed or 'nothing'})."))
            return
        self.on_start(verify=self.verify.state,
                      algorithm="sha256" if self.sha256.state else "blake3",
                      skip_zeros=self.skip_zeros.state,
                      resume=self.resume is None or self.resume.state)

    def keypress(self, size, key):
        if key == "enter" and self.listbox.focus.base_widget is self.confirm:
            self._start()
            return None
        if key == "tab":
            key = "down"
        return super().keypress(size, key)


class CopyProgressView(ProgressView):
    title = "Disk Copy: running"
    phases = {"copy": "Copying", "trim": "Re-reading failed areas",
              "scrape": "Narrowing down unreadable sectors", "verify": "Verifying"}

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


_HEADLINES = {
    "ok": ("ok", "VERIFIED IDENTICAL"),
    "unreadable": ("warn", "COMPLETED WITH UNREADABLE RANGES"),
    "mismatch": ("warn", "VERIFY MISMATCH: THE TARGET DIFFERS"),
    "failed": ("warn", "FAILED"),
    "cancelled": ("warn", "CANCELLED"),
}


class CopyResultView(ResultView):
    title = "Disk Copy: result"

    def __init__(self, result, on_close):
        attr, headline = _HEADLINES.get(result.status, ("warn", result.status.upper()))
        if result.status == "ok" and not (result.verify and result.verify.match):
            headline = "COPIED (NOT VERIFIED)"
        rows = [urwid.Text(result.message)]
        if result.unreadable:
            rows.append(urwid.Text(f"{len(result.unreadable)} unreadable range(s), "
                                   f"{result.unreadable_bytes} bytes:"))
            rows += [urwid.Text(f"  bytes {pos}-{pos + size - 1}")
                     for pos, size in result.unreadable[:10]]
        if result.verify and result.verify.first_difference:
            fd = result.verify.first_difference
            rows.append(urwid.Text(f"first difference: bytes {fd.get('start')}-{fd.get('end')}"))
        if result.verify and result.verify.source_hash:
            rows.append(urwid.Text(f"{result.algorithm}: {result.verify.source_hash}"))
        if result.mapfile:
            rows.append(urwid.Text(f"mapfile: {result.mapfile}"))
        if result.report:
            rows.append(urwid.Text(f"report: {result.report.text}"))
        super().__init__(attr, headline, rows, on_close)
