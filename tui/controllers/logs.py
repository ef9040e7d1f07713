"""The Logs screen's controller: the toolkit's reports and logs, the journal, the kernel;
and the logs bundle (``s``): saved beside the state (an RTK-DATA partition), on a
filesystem the technician picks (mounted for it, unmounted after), or sent to a URL."""

from __future__ import annotations

import contextlib
import os

from toolkit.disks import inventory as disks_mod
from toolkit.jobs.report import safe_url
from toolkit.system import bundle, logs, mount, paths, state, tools
from toolkit.units import human_size
from tui.views.logs import BundleUrlForm, LogListView, LogTextView
from tui.widgets.volume_chooser import ChooseVolumeView

BUNDLE_DIR = "rtk-bundles"  # on a filesystem the technician picks


class LogsController:
    def __init__(self, app, log_dir: str = paths.LOG_DIR, list_disks=disks_mod.list_disks):
        self.app = app
        self.log_dir = log_dir
        self.list_disks = list_disks
        self.last_url = ""
        self.last_bundle: bundle.Bundle | None = None

    def show(self) -> None:
        self.app.push(LogListView(self, logs.sources(self.log_dir)))

    def open(self, source: logs.LogSource) -> None:
        view = LogTextView(source.title, logs.read(source))
        self.app.push(view)

    # --- the logs bundle -----------------------------------------------------
    def _beside_state(self) -> tuple[str, str] | None:
        """(directory, what) for a bundle next to the state, when that is on a disk."""
        try:
            loc = state.location(self.log_dir)
        except OSError:
            return None
        if not (loc.persistent and loc.writable):
            return None
        directory = os.path.join(os.path.dirname(loc.real), "bundles")
        return directory, f"{loc.device} ({loc.fstype}), {directory}"

    def save_bundle(self) -> None:
        """Where to: beside the state, a filesystem to mount, or a URL."""
        def show(choices) -> None:
            extra = []
            beside = self._beside_state()
            if beside:
                directory, what = beside
                extra.append(([("title", "Beside the state"), f"  on {what}"],
                              lambda: self._save_in(directory, what)))
            extra.append(([("title", "Send to a URL"), "  HTTP POST to a server"],
                          self.ask_url))
            self.app.push(ChooseVolumeView(
                "Save a logs bundle",
                "A .tar.gz with the reports, mapfiles and logs, this boot's journal, the "
                "kernel messages, the disk probe and the iSCSI sessions. CHAP secrets are "
                "masked. A filesystem chosen below is mounted for it and unmounted after.",
                choices, self._save_on, tuple(extra)))

        self.app.background("Looking for filesystems...",
                            lambda: state.volumes(self.list_disks()), show,
                            lambda e: self._failed(f"Could not read the disks: {e}"))

    def _build_kw(self) -> dict:
        return {"state": self.log_dir}

    def _saved(self, b: bundle.Bundle, where: str) -> None:
        self.last_bundle = b
        missing = b.missing()
        notes = "".join(f"\n  not collected: {e.name}: {e.note}" for e in missing[:4])
        self.app.pop_to(LogListView)
        self.app.dialog("Logs bundle saved",
                        f"{b.name} ({human_size(b.size)}) {where}.{notes}",
                        [("OK", self.app.close_dialog)])

    def _failed(self, message: str) -> None:
        self.app.dialog("Logs bundle", message, [("OK", self.app.close_dialog)])

    def _save_in(self, directory: str, what: str) -> None:
        self.app.background("Making the logs bundle...",
                            lambda: bundle.save_to(directory, **self._build_kw()),
                            lambda b: self._saved(b, f"saved in {directory}"),
                            lambda e: self._failed(f"Cannot save the bundle in {directory}: "
                                                   f"{e}"))

    def _save_on(self, v: state.Volume) -> None:
        mnt = os.path.join(paths.run_dir(), "bundle-mnt", v.name)

        def work() -> bundle.Bundle:
            try:
                state.mount_volume(v, mnt)
            except tools.ToolError as e:
                raise state.StateError(f"cannot mount {v.path} read-write: {e}") from e
            try:
                return bundle.save_to(os.path.join(mnt, BUNDLE_DIR), **self._build_kw())
            finally:
                try:
                    mount.umount(mnt)
                except tools.ToolError:
                    with contextlib.suppress(tools.ToolError):
                        mount.umount(mnt, lazy=True)
                with contextlib.suppress(OSError):
                    os.rmdir(mnt)

        self.app.background(f"Making the logs bundle on {v.path}...", work,
                            lambda b: self._saved(b, f"saved on {v.path} in /{BUNDLE_DIR}/; "
                                                     f"{v.path} is unmounted again"),
                            lambda e: self._failed(f"Cannot save the bundle on {v.path}: {e}"))

    def ask_url(self) -> None:
        self.app.push(BundleUrlForm(self.send, self.last_url))

    def send(self, form: BundleUrlForm) -> None:
        url = form.url.edit_text.strip()
        if not url.startswith(("http://", "https://")):
            form.show_error("The URL must start with http:// or https://.")
            return
        self.last_url = url

        def work():
            with bundle.temporary(**self._build_kw()) as b:
                return b, bundle.post(b, url)

        def done(result) -> None:
            b, posted = result
            if posted.ok:
                self._saved(b, f"sent to {posted.url} (HTTP {posted.status})")
            else:
                form.show_error(f"Not sent to {posted.url}: {posted.error}")

        self.app.background(f"Sending the logs bundle to {safe_url(url)}...", work, done,
                            lambda e: form.show_error(f"Cannot make the bundle: {e}"))
