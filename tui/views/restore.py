"""Restore screens: source, browse media, URL, inspection, confirm, progress, result.

Views only build widgets; :mod:`tui.controllers.restore` does the work. The
target choice is the shared :class:`~tui.widgets.disk_chooser.ChooseDiskView`, the
confirmation the shared :class:`~tui.widgets.confirm.ConfirmOverwriteView`; the
multicast form is in :mod:`tui.views.restore_multicast`.
"""

from __future__ import annotations

import urwid

from toolkit.restore import linux_report, windows_drivers
from toolkit.restore.source import is_multicast
from toolkit.units import human_rate, human_size
from tui.views.restore_multicast import held, stream_note
from tui.widgets.base import ProgressView, ResultView, SelectableLine, View, button
from tui.widgets.confirm import ConfirmOverwriteView


class RestoreSourceView(View):
    title = "Restore: where is the image?"
    hints = (("↑↓", "move"), ("Enter", "choose"), ("Esc", "back"))

    def __init__(self, entries):
        """``entries``: (label, description, callback)."""
        rows: list = [urwid.Text("The image is recognised by its content: raw (plain, gzip, "
                                 "xz, zstd), qcow2, VHD, VHDX or VMDK."), urwid.Divider("─")]
        for label, description, callback in entries:
            rows.append(SelectableLine([f" {label:<28}", ("dim", description)], callback))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = 2
        super().__init__(self.listbox)


class VolumesView(View):
    title = "Restore: choose the medium"
    hints = (("↑↓", "move"), ("Enter", "open read-only"), ("Esc", "back"))

    def __init__(self, volumes, on_choose):
        rows: list = [urwid.Text("Filesystems not in use (it is mounted read-only):"),
                      urwid.Divider("─")]
        for v in volumes:
            label = f' "{v.label}"' if v.label else ""
            model = v.disk.model or v.disk.transport
            rows.append(SelectableLine(
                [f"{v.path:<16} {human_size(v.size):>9}  {v.fstype:<6}{label}\n",
                 ("dim", f"    on {v.disk.path} {model}")], lambda v=v: on_choose(v)))
        if not volumes:
            rows.append(urwid.Text(("warn", "No filesystem to open: plug in the USB medium, "
                                            "then come back here.")))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        if volumes:
            self.listbox.focus_position = 2
        super().__init__(self.listbox)


class BrowseView(View):
    title = "Restore: choose the image file"
    hints = (("↑↓", "move"), ("Enter", "open / choose"), ("Backspace", "up"),
             ("Esc", "back"))

    def __init__(self, root: str, path: str, entries, on_open, on_up, on_back):
        self.keys = {"backspace": on_up, "esc": on_back}
        shown = "/" + path.removeprefix(root).lstrip("/")
        rows: list = [urwid.Text(f"{shown}   ({root}, read-only)"), urwid.Divider("─")]
        if path != root:
            rows.append(SelectableLine(" ../", on_up))
        for e in entries:
            if e.is_dir:
                rows.append(SelectableLine(f" {e.name}/", lambda e=e: on_open(e)))
            else:
                rows.append(SelectableLine(f" {e.name:<56} {human_size(e.size or 0):>10}",
                                           lambda e=e: on_open(e)))
        if not entries:
            rows.append(urwid.Text(("dim", " (empty)")))
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        if len(rows) > 2 and rows[2].selectable():
            self.listbox.focus_position = 2
        super().__init__(self.listbox)


TLS_NOT_VERIFIED = "TLS NOT VERIFIED"


class UrlView(View):
    title = "Restore: image from a URL"
    hints = (("Tab/↑↓", "fields"), ("Space", "toggle"), ("Enter", "inspect"), ("Esc", "back"))

    def __init__(self, on_submit, url: str = "", ca_file: str = ""):
        """``on_submit(url, sha256, ca_file, insecure)``: None for the empty fields."""
        self.on_submit = on_submit
        self.url = urwid.Edit("URL (http/https): ", url)
        self.sha256 = urwid.Edit("SHA-256 (optional): ")
        self.ca_file = urwid.Edit("CA file (optional): ", ca_file)
        self.insecure = urwid.CheckBox("Skip TLS verification (insecure)", state=False,
                                       on_state_change=lambda _c, s: self._tls_changed(s))
        self.tls_warning = urwid.Text("")
        self.error = urwid.Text("")
        rows = [urwid.AttrMap(self.url, "body", "focus"),
                urwid.AttrMap(self.sha256, "body", "focus"),
                urwid.Text(("dim", "  without one, IMAGE.sha256 beside the image is used if "
                                   "the server has it")),
                urwid.AttrMap(self.ca_file, "body", "focus"),
                urwid.Text(("dim", "  PEM: the CA that signed the server's certificate "
                                   "(default: the system's CAs)")),
                self.insecure, self.tls_warning, urwid.Divider(), self.error,
                button("Inspect the image", self._submit)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        super().__init__(self.listbox)

    def _tls_changed(self, skip: bool) -> None:
        self.tls_warning.set_text(("warn", TLS_NOT_VERIFIED + ": anyone on the path can send "
                                           "another image. Only on a network you trust, "
                                           "preferably with a SHA-256.") if skip else "")

    def show_error(self, text: str) -> None:
        self.error.set_text(("warn", text))

    def _submit(self) -> None:
        self.on_submit(self.url.edit_text.strip(), self.sha256.edit_text.strip() or None,
                       self.ca_file.edit_text.strip() or None, self.insecure.state)

    def keypress(self, size, key):
        if key == "enter" and self.listbox.focus.base_widget in (self.url, self.sha256,
                                                                 self.ca_file):
            self._submit()
            return None
        if key == "tab":
            key = "down"
        return super().keypress(size, key)


def tls_markup(location: str, options):
    """How the image's server was authenticated (None for a file or a disk)."""
    if location.startswith("http://"):
        return ("dim", "plain HTTP (no TLS)")
    if not location.startswith("https://"):
        return None
    if options.insecure:
        return ("warn", f"{TLS_NOT_VERIFIED}: the server's certificate was not checked")
    if options.ca_file:
        return f"TLS verified with the CA file {options.ca_file}"
    return "TLS verified with the system's CAs"


def _partition_lines(parts: list[dict]) -> list:
    out = []
    for p in parts:
        bits = [f"  {p['number']:>2}  {human_size(p['size']):>9}"]
        if p.get("fstype"):
            bits.append(p["fstype"])
        if p.get("label"):
            bits.append(f'"{p["label"]}"')
        elif p.get("name"):
            bits.append(f"({p['name']})")
        if p.get("os"):
            bits.append(p["os"])
        out.append("  ".join(bits) + "\n")
    return out


class InspectView(View):
    title = "Restore: the image"
    hints = (("Enter", "choose the target disk"), ("Esc", "back"))

    def __init__(self, inspection, options, on_continue):
        self.on_continue = on_continue
        info = inspection.info
        size = f"{human_size(info.size)} ({info.size} bytes)" if info.size else \
            "not known before writing"
        lines: list = [("title", "Image\n"), f"  {info.location}\n"]
        tls = tls_markup(info.location, options)
        if tls:
            lines += ["  ", tls, "\n"]
        lines += [f"  format        {info.kind}\n", f"  disk size     {size}\n"]
        if info.file_size and info.file_size != info.size:
            lines.append(f"  file size     {human_size(info.file_size)}\n")
        lines.append(f"  sector size   {info.sector_size or 'unknown (no GPT)'}\n")
        lines.append(f"  partition table  {_TABLES.get(info.table, info.table or 'none found')}\n")
        rows: list = [urwid.Text(lines)]
        if inspection.partitions:
            rows.append(urwid.Text([("title", "Partitions\n"),
                                    *_partition_lines(inspection.partitions)]))
        systems = inspection.systems
        rows.append(urwid.Text([("title", "Detected OS\n"),
                                *([f"  {s['name']} (partition {s['partition']})\n"
                                   for s in systems] or ["  none found\n"])]))
        rows += [urwid.Text(("dim", n)) for n in inspection.notes]
        rows += [urwid.Divider(), button("Choose the target disk", on_continue)]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(rows))
        self.listbox.focus_position = len(rows) - 1
        super().__init__(self.listbox)


_TABLES = {"gpt": "GPT", "dos": "MBR (dos)"}


def _image_side(plan, inspection) -> list:
    img = plan.image
    lines = [("title", "IMAGE (read)\n"), f"{img.location}\n"]
    tls = tls_markup(img.location, plan.options)
    if tls:
        lines += [tls, "\n"]
    if is_multicast(img.location):  # read once: nothing is known before it arrives
        lines += ["multicast stream, read once\n",
                  "held whole first, checked, then written\n" if held(img) else
                  "written as it arrives (not held first)\n",
                  "raw; size and table: from its first MiB, before writing\n"]
    else:
        lines += [f"{img.kind}\n", (f"{human_size(img.size)} ({img.size} B)\n" if img.size
                                    else "size unknown\n"),
                  f"table {_TABLES.get(img.table, img.table or 'none')}\n"]
    sha = img.expected_sha256
    lines.append(f"sha256 {sha[:16]}... ({img.sha256_from})\n" if sha else "sha256: none\n")
    for s in inspection.systems if inspection else []:
        lines.append(f"  {s['name']}\n")
    return lines


class RestoreSummaryView(ConfirmOverwriteView):
    title = "Restore: confirm"

    def __init__(self, plan, inspection, expected: str, on_start):
        self.grow = urwid.CheckBox("Grow the last partition and its filesystem to the end of "
                                   "the disk", state=plan.options.grow)
        self.verify = urwid.CheckBox("Verify: read the target back and compare (recommended)",
                                     state=plan.options.verify)
        super().__init__(
            _image_side(plan, inspection), plan.target, "the image",
            [*plan.warnings, *stream_note(plan.image)],
            [self.grow, self.verify], expected, "Start the restore",
            lambda: on_start(grow=self.grow.state, verify=self.verify.state))


_PHASES = {"download": "Downloading", "unpack": "Unpacking", "checksum": "Checking the SHA-256",
           "replay": "Copying the VHDX to replay its log",
           "receive": "Receiving the stream (nothing is written yet)",
           "shrink": "Shrinking the filesystems on an overlay (nothing is written yet)",
           "write": "Writing", "verify": "Verifying", "finish": "Fitting and inspecting the disk"}


class RestoreProgressView(ProgressView):
    title = "Restore: running"
    phases = _PHASES

    def __init__(self, plan, on_cancel, waiting: str | None = None):
        """``waiting``: what is waited for before the first progress (a multicast
        sender), shown until then."""
        self.is_url = plan.image.is_url
        self.is_stream = is_multicast(plan.image.location) and not held(plan.image)
        self.rates = urwid.Text("")
        self.seen: dict[str, float] = {}  # average rate of each phase so far
        self.started = False  # a progress event came: no more waiting
        super().__init__(f"{plan.image.location}\n  → {plan.target.label()}", on_cancel,
                         (self.rates,))
        if waiting:
            self.phase.set_text(("warn", waiting))

    def waiting(self, text: str) -> None:
        """What is waited for now (the sender joined...), until the first progress."""
        if not self.started:
            self.phase.set_text(("warn", text))

    def update(self, p) -> None:
        self.started = True
        super().update(p)
        if not p.total and p.done > 1:  # a stream of a length not known: no bar, no ETA
            self.bar.set_completion(0)
            self.figures.set_text(f"{human_size(p.done)} so far   {human_rate(p.rate)} now")
        self.seen[p.phase] = p.average_rate
        write = ("receive and write" if self.is_stream else
                 "download and write" if self.is_url else "write")
        names = {"checksum": "SHA-256 check", "download": "download", "write": write,
                 "receive": "receive",
                 "verify": "verify", "unpack": "unpack"}
        self.rates.set_text("   ".join(f"{names[k]} {human_rate(v)}"
                                       for k, v in self.seen.items() if k in names) + " average")


class RestoreResultView(ResultView):
    title, unverified = "Restore: result", "RESTORED (NOT VERIFIED)"
    headlines = {"ok": "RESTORED AND VERIFIED", "refused": "REFUSED: NOTHING WAS WRITTEN",
                 "mismatch": "MISMATCH: CHECKSUM OR VERIFICATION FAILED"}

    def __init__(self, result, on_close, said: tuple[str, ...] = ()):
        """``said``: the plan's warnings, on the confirm screen before writing; the others
        (found while it ran: a repair, a driver step that failed) are shown here."""
        rows: list = []
        rows += [urwid.Text(("warn", f"warning: {w}")) for w in result.warnings
                 if w not in said]
        if result.wiped:
            rows.append(urwid.Text(("warn", "The target has no partition table now.")))
        if result.input_sha256:
            match = {True: " (matches)", False: " (MISMATCH)"}.get(result.sha256_match, "")
            rows.append(urwid.Text(f"image sha256 {result.input_sha256}{match}"))
        rows += [urwid.Text(f"fitted to the smaller disk: {step}")
                 for step in (result.shrink or {}).get("done", [])]
        rows += [urwid.Text(f"fit: {step}") for step in result.fit]
        contents = result.contents or {}
        systems = contents.get("systems") or []
        rows.append(urwid.Text("detected OS:" + ("".join(
            f"\n  {s['name']} (partition {s['partition']})" for s in systems) or " none found")))
        if result.boot:
            rows.append(urwid.Text(f"boot ({result.boot.mode}): {result.boot.message}"))
        rows += [urwid.Text(f"windows drivers: {line}")
                 for line in windows_drivers.summary(result.windows_drivers)]
        rows += [urwid.Text(f"linux initramfs: {line}")
                 for line in linux_report.summary(result.linux_initramfs)]
        if result.report:
            rows.append(urwid.Text(f"report: {result.report.text}"))
        super().__init__(result, bool(result.verify and result.verify.get("match")), rows,
                         on_close)
