"""Restore: choose the image (USB/local media, URL, iSCSI disk, multicast stream),
inspect it, choose the target, confirm, restore in a worker thread, show the result.

Probing an image (HTTP, qemu-img, loop devices) and planning take seconds: they
run through ``app.background``. The restore runs in a worker thread whose
progress reaches the screen through ``app.call_from_thread``. A multicast stream
(``udpcast://``, read once) is not inspected: the restore checks its first MiB
before writing; its progress screen says what it waits for (the sender), and the
cancel key stops udp-receiver while it waits (:func:`toolkit.restore.multicast.watch`).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat

from toolkit import restore
from toolkit.disks import gate, roles
from toolkit.disks import inventory as disks_mod
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.disks.inventory import Disk
from toolkit.restore import checks, media, multicast, vhdx
from toolkit.restore import plan as restore_plan
from toolkit.restore import source as sourcemod
from toolkit.restore.inspect import Inspection, inspect_image
from tui.controllers.state import before_long_job
from tui.job import Job, JobController
from tui.views.restore import (
    BrowseView,
    InspectView,
    RestoreProgressView,
    RestoreResultView,
    RestoreSourceView,
    RestoreSummaryView,
    UrlView,
    VolumesView,
)
from tui.views.restore_multicast import MulticastForm, held, joined_text, waiting_text
from tui.widgets.confirm import confirmation_word
from tui.widgets.disk_chooser import ChooseDiskView

_NOT_DISKS = ("cdrom", "floppy")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_STOP_WRITING = ("The target is left without a partition table (its first and last MiB "
                 "zeroed): nothing will take a half-written disk for a valid one.")
_STOP_STREAM = ("While the restore waits for the sender nothing has been written: the disk "
                "stays as it is. Once the stream runs, the target is left without a "
                "partition table (its first and last MiB zeroed).")
_STOP_HELD = ("While the restore waits for the sender and receives the stream (held whole "
              "first) nothing has been written: the disk stays as it is. Once writing "
              "began, the target is left without a partition table (its first and last MiB "
              "zeroed).")


class RestoreController(JobController):
    def __init__(self, app, list_disks=disks_mod.list_disks, source_keys=roles.source_keys):
        self.app = app
        self._list_disks = list_disks
        self._source_keys = source_keys
        self.disks: list[Disk] = []
        self.mounted: list[str] = []
        self.root = ""  # the mounted medium being browsed
        self.location = ""
        self.image_disk: str | None = None  # an iSCSI disk used as the image
        self.options = restore.RestoreOptions(grow=False, verify=True)
        self.inspection: Inspection | None = None
        self.plan: restore.RestorePlan | None = None
        self.summary: RestoreSummaryView | None = None  # the confirmation, what was typed
        self.job = Job(app, "Stop the restore?", _STOP_WRITING, "Keep restoring")
        self.url_view: UrlView | None = None

    def _error(self, title: str):
        def show(e: Exception) -> None:
            text = "\n".join(e.problems) if isinstance(e, restore.Refused) else str(e)
            self.app.dialog(title, text, [("OK", self.app.close_dialog)])
        return show

    def _read_disks(self, keep=lambda _d: True) -> list[Disk] | None:
        """The disks ``keep`` keeps (also in ``self.disks``), or None after saying why the
        disks could not be read."""
        try:
            self.disks = [d for d in self._list_disks() if keep(d)]
        except OSError as e:
            self._error("Restore")(e)
            return None
        return self.disks

    # --- source ----------------------------------------------------------------
    def show(self) -> None:
        self.unmount_all()
        self.app.push(RestoreSourceView([
            ("Browse local or USB media", "a file on a disk or USB stick (mounted read-only)",
             self.browse_media),
            ("Type a URL", "http:// or https://, optional SHA-256 and CA file",
             self.type_url),
            ("Pick an iSCSI disk", "an attached LUN, read as a raw image", self.pick_iscsi),
            ("Multicast stream (udpcast)", "from a sender (rtk fleet serve): NIC, port, "
             "SHA-256", self.receive_multicast),
        ]))

    def browse_media(self) -> None:
        if self._read_disks() is not None:
            self.app.push(VolumesView(media.data_volumes(self.disks), self.open_volume))

    def open_volume(self, volume: media.Volume) -> None:
        def done(mnt: str) -> None:
            self.mounted.append(mnt)
            self.root = mnt
            self.app.push(self._browse_view(mnt))
        self.app.background(f"Mounting {volume.path} read-only...",
                            lambda: media.mount_ro(volume.path, volume.fstype, volume.name),
                            done, self._error("Cannot open the medium"))

    def _browse_view(self, path: str) -> BrowseView:
        try:
            entries = media.list_dir(path)
        except media.MediaError as e:
            entries = []
            self._error("Restore")(e)
        return BrowseView(self.root, path, entries, self._open_entry,
                          lambda: self._up(path), self._leave_medium)

    def _open_entry(self, entry: media.Entry) -> None:
        if entry.is_dir:
            self.app.replace(self._browse_view(entry.path))
        else:
            self.image_disk = None
            self.choose_image(entry.path, restore.RestoreOptions())

    def _up(self, path: str) -> None:
        if os.path.normpath(path) != os.path.normpath(self.root):
            self.app.replace(self._browse_view(os.path.dirname(path.rstrip("/"))))

    def _leave_medium(self) -> None:
        self.app.pop()
        self.unmount_all()

    def unmount_all(self) -> None:
        while self.mounted:
            media.unmount(self.mounted.pop())

    def type_url(self) -> None:
        """The URL screen, with the last URL and CA file (never "skip TLS verification")."""
        was_url = sourcemod.is_url(self.location)
        self.url_view = UrlView(self._url_submitted, self.location if was_url else "",
                                (was_url and self.options.ca_file) or "")
        self.app.push(self.url_view)

    def _url_submitted(self, url: str, sha256: str | None, ca_file: str | None,
                       insecure: bool) -> None:
        assert self.url_view is not None
        problem = _url_problem(url, sha256, ca_file, insecure)
        if problem:
            self.url_view.show_error(problem)
            return
        self.url_view.show_error("")
        self.image_disk = None
        self.choose_image(url, restore.RestoreOptions(sha256=sha256, ca_file=ca_file,
                                                      insecure=insecure))

    def pick_iscsi(self) -> None:
        if self._read_disks() is None:
            return
        luns = [d for d in self.disks if d.transport == "iscsi"]
        if not luns:
            self.app.dialog("Restore", "No iSCSI disk is attached: attach the LUN in the "
                            "iSCSI Manager first.", [("OK", self.app.close_dialog)])
            return
        luns.sort(key=lambda d: d.role != roles.SOURCE)
        self.app.push(ChooseDiskView(
            "Restore: choose the iSCSI disk holding the image",
            "The disk is only read, as a raw disk image.", [(d, None) for d in luns],
            self._iscsi_chosen))

    def _iscsi_chosen(self, disk: Disk) -> None:
        self.image_disk = disk.path
        self.choose_image(disk.path, restore.RestoreOptions())

    def receive_multicast(self) -> None:
        """The multicast form, with the last stream's settings."""
        values = {}
        if sourcemod.is_multicast(self.location):
            spec = multicast.parse(self.location)
            values = {"interface": spec.interface or "", "port": str(spec.portbase),
                      "sha256": spec.sha256 or "", "wait": str(spec.start_timeout),
                      "size": str(spec.size or "")}
        self.app.push(MulticastForm(self._multicast_submitted, multicast.interfaces(),
                                    **values))

    def _multicast_submitted(self, form: MulticastForm) -> None:
        location, problem = multicast_location(
            form.interface.edit_text.strip(), form.port.edit_text.strip(),
            form.sha256.edit_text.strip(), form.wait.edit_text.strip(),
            multicast.interfaces(), size=form.size.edit_text.strip())
        if problem:
            form.show_error(problem)
            return
        form.show_error("")
        self.image_disk = None
        self.location, self.options = location, restore.RestoreOptions()
        # nothing is read now (a live stream is read once, by the restore itself)
        self.inspection = Inspection(restore.probe_image(location, self.options))
        self.show_targets()

    # --- inspection ----------------------------------------------------------
    def choose_image(self, location: str, options: restore.RestoreOptions) -> None:
        self.location, self.options = location, options

        def done(ins: Inspection) -> None:
            self.inspection = ins
            self.app.push(InspectView(ins, options, self.show_targets))
        self.app.background(f"Inspecting {location}...", lambda: inspect_image(location, options),
                            done, self._error("Cannot use this image"))

    # --- target --------------------------------------------------------------
    def target_choices(self) -> list[tuple[Disk, str | None]]:
        assert self.inspection is not None
        info = self.inspection.info
        role = self._source_keys()
        # the plan's inputs (the image and the files its container chain reads): the same
        # decision as the write gate's when the restore opens the target
        try:
            inputs, unreadable = restore_plan.image_inputs(self.location, info, self.disks), None
        except restore.Refused as e:
            inputs, unreadable = [], "; ".join(e.problems)
        out = []
        for d in self.disks:
            if d.path == self.image_disk:
                out.append((d, "this disk holds the image"))
                continue
            if unreadable:
                out.append((d, unreadable))
                continue
            # deep: every alias sysfs knows (the image's backing file, a partition...),
            # for devices of this machine; the write gate decides again when it opens it
            # a smaller disk is offered when the image can be fitted to it (its filesystems
            # shrunk): whether its data fits is planned once it is chosen
            size = None if info.size and d.size < info.size and \
                restore_plan.fits_by_shrinking(info) else info.size
            problems, _w = checks.check_target(endpoint_from_disk(d), self.location,
                                               size, info.sector_size, role,
                                               deep=_deep(self.location, d), inputs=inputs)
            out.append((d, problems[0] if problems else None))
        return sorted(out, key=lambda c: (c[1] is not None, c[0].role != roles.TARGET))

    def show_targets(self) -> None:
        if self._read_disks(lambda d: d.transport not in _NOT_DISKS) is None:
            return
        self.app.push(ChooseDiskView(
            "Restore: choose the TARGET disk",
            f"IMAGE: {self.location}. The TARGET is overwritten entirely.",
            self.target_choices(), self.choose_target))

    def choose_target(self, target: Disk) -> None:
        disks, location, options = self.disks, self.location, self.options

        def done(plan: restore.RestorePlan) -> None:
            self.plan = plan

            def summary() -> None:
                self.summary = RestoreSummaryView(plan, self.inspection,
                                                  confirmation_word(target), self.start)
                self.app.push(self.summary)
            busy = [plan.target.disk.path] + [i.path for i in plan.inputs
                                               if i.path.startswith("/dev/")]
            before_long_job(self.app, summary, busy=busy)
        def work() -> restore.RestorePlan:
            return restore.plan_restore(location, target.path, options, disks=disks)
        self.app.background(f"Checking {target.path}...", work, done,
                            self._plan_failed(target))

    def _plan_failed(self, target: Disk):
        """The plan's refusal; when only a VHDX's log replay finds no room for a copy, the
        question whether to replay it in the file itself (never done without asking)."""
        def show(e: Exception) -> None:
            if not isinstance(e, vhdx.NoRoomToReplay) or self.options.vhdx_log == "in-place":
                self._error("Cannot restore")(e)
                return

            def in_place() -> None:
                self.app.close_dialog()
                self.options.vhdx_log = "in-place"
                self.app.background(f"Making {e.location} writable...",
                                    lambda: media.remount_rw_for(e.location),
                                    lambda _mnt: self.choose_target(target),
                                    self._error("Cannot restore"))
            self.app.dialog("Replay the VHDX log in place?", vhdx.question(e),
                            [("Cancel", self.app.close_dialog), ("Replay in place", in_place)])
        return show

    # --- running -------------------------------------------------------------
    def start(self, *, grow: bool, verify: bool) -> None:
        plan = self.plan
        assert plan is not None
        plan.options.grow, plan.options.verify = grow, verify
        # what the technician typed: the write gate opens the target only if it names it
        consent = gate.Consent.menu(self.summary.confirm.edit_text)
        stream = sourcemod.is_multicast(plan.image.location)
        spec = multicast.parse(plan.image.location) if stream else None
        self.job.explanation = (_STOP_HELD if stream and held(plan.image) else
                                _STOP_STREAM if stream else _STOP_WRITING)
        view = RestoreProgressView(
            plan, self.job.confirm_cancel,
            spec and waiting_text(spec.interface, spec.portbase, spec.start_timeout))

        def joined(sender: str) -> None:  # the watch's thread
            text = joined_text(sender, spec.interface, spec.portbase)
            self.app.call_from_thread(lambda: view.waiting(text))

        def run(progress, cancel) -> restore.RestoreResult:
            # a cancel stops udp-receiver while it waits for the sender
            with multicast.watch(cancel, joined) if stream else contextlib.nullcontext():
                return restore.restore(plan, progress=progress, cancel=cancel,
                                       consent=consent)
        # restore() does not raise for a failed restore; anything else is shown
        self.job.start_behind(
            view, "restore", run, self._done,
            lambda e: self.job.failed("Restore failed", f"{type(e).__name__}: {e}"))

    def _done(self, result: restore.RestoreResult) -> None:
        self.unmount_all()
        self.app.replace(RestoreResultView(result, self.app.pop_to_root,
                                           tuple(self.plan.warnings) if self.plan else ()))


def _url_problem(url: str, sha256: str | None, ca_file: str | None, insecure: bool) -> str | None:
    """What is wrong with the URL screen's fields (the CA file is read: it must exist, be
    readable and hold a PEM certificate), or None."""
    if not sourcemod.is_url(url):
        return "The URL starts with http:// or https://."
    if sha256 and not _HEX.match(sha256):
        return "The SHA-256 is 64 hexadecimal digits (or leave it empty)."
    if ca_file and insecure:
        return "Give a CA file or skip TLS verification, not both."
    if ca_file and not url.startswith("https://"):
        return "A CA file is for an https:// URL (this one has no TLS)."
    problem = ca_file and sourcemod.check_ca_file(ca_file)
    return f"{problem[0].upper()}{problem[1:]}." if problem else None


_DIGITS5 = re.compile(r"[0-9]{1,5}")  # not str.isdigit(): "²" is a digit to it, not to int()


def multicast_location(interface: str, port: str, sha256: str, wait: str,
                       nics: list[str], size: str = "") -> tuple[str, str | None]:
    """``(udpcast:// location, None)`` from the multicast form's fields, or ``("", what
    is wrong)``; ``nics``: the interfaces of this machine; ``size``: the image's size in
    bytes, or empty."""
    if interface and interface not in nics:
        return "", (f"No NIC named {interface} here (the NICs: {', '.join(nics) or 'none'}); "
                    "leave it empty for udp-receiver's default.")
    if not _DIGITS5.fullmatch(port) or int(port) % 2 or not 1024 <= int(port) <= 65534:
        return "", ("The port base is even, from 1024 to 65534: the sender's --portbase "
                    "(udpcast uses it and the next port).")
    if not _HEX.match(sha256):
        return "", ("The SHA-256 is 64 hexadecimal digits (sha256sum IMAGE, or what rtk fleet "
                    "serve prints).")
    if not _DIGITS5.fullmatch(wait) or not 1 <= int(wait) <= 86400:
        return "", "Wait for the sender: seconds, 1 to 86400."
    if size and not (re.fullmatch(r"[0-9]{1,19}", size) and 0 < int(size) < 1 << 62):
        return "", ("The image size is its size in bytes (the size= rtk fleet serve "
                    "prints), or leave it empty.")
    location = multicast.location(int(port), interface=interface or None, sha256=sha256,
                                  start_timeout=int(wait), size=int(size) if size else None)
    try:
        multicast.parse(location)
    except ValueError as e:
        return "", f"{e}."
    return location, None


def _deep(location: str, disk: Disk) -> bool:
    """Whether the write gate's deep checks can follow the aliases of ``disk`` and of the
    image at ``location`` (devices and files of this machine; a disk described by hand,
    or a file that is not there, has none)."""
    try:
        if not stat.S_ISBLK(os.stat(disk.path).st_mode):
            return False
        return (sourcemod.is_url(location) or sourcemod.is_multicast(location)
                or os.path.exists(location))
    except OSError:
        return False
