"""Before a long job: where its resume point (the mapfile) and its report will be kept.

:func:`before_long_job` is the one call Disk Copy and Restore make before they start:
when the state directory survives a reboot (an RTK-DATA partition, or a disk chosen
earlier) it calls ``then()`` at once; otherwise it says that a reboot or a power cut
loses the resume point and the report, and offers to keep them on a disk the
technician picks (:func:`toolkit.system.state.use_volume`), to start anyway, or to go
back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from toolkit.disks import inventory as disks_mod
from toolkit.system import state
from tui.widgets.volume_chooser import ChooseVolumeView


class StatePrompt:
    def __init__(self, app, list_disks: Callable = disks_mod.list_disks,
                 location: Callable[[], state.StateLocation] | None = None):
        self.app = app
        self.list_disks = list_disks
        self.location = location or state.location  # looked up now: replaceable in tests

    def _where(self) -> state.StateLocation | None:
        try:
            return self.location()
        except OSError:
            return None

    def before_long_job(self, then: Callable[[], None], busy: Iterable[str] = ()) -> None:
        """``then()`` now if the state survives a reboot; otherwise ask first. ``busy``:
        the job's disks (paths), never offered to hold the state."""
        loc = self._where()
        if loc is not None and loc.persistent and loc.writable:
            then()
            return
        busy = tuple(busy)
        why = loc.message if loc else "Where the mapfiles and reports go is not known."
        self.app.dialog(
            "Resume point in RAM",
            f"{why}\n\nKeep them on a disk instead (a USB stick, a partition that is not "
            "part of this job)? After a reboot, choose the same disk here again, or give "
            "it the label RTK-DATA so that it is used at every boot.",
            [("Back", self.app.close_dialog),
             ("Choose a disk", lambda: (self.app.close_dialog(), self.choose(then, busy))),
             ("Start anyway", lambda: (self.app.close_dialog(), then()))])

    def choose(self, then: Callable[[], None], busy: Iterable[str] = ()) -> None:
        """The filesystems that could hold the state; the one chosen is mounted and used."""
        busy = tuple(busy)

        def show(choices) -> None:
            self.app.push(ChooseVolumeView(
                "Keep mapfiles and reports on",
                "Mounted read-write at /run/rtk/data; the state goes in its rtk/ directory "
                "(made if missing). Nothing else on it is touched.", choices,
                lambda v: self.use(v, then)))

        self.app.background("Looking for filesystems...",
                            lambda: state.volumes(self.list_disks(), busy), show,
                            lambda e: self.app.dialog("Keep the state on a disk",
                                                      f"Could not read the disks: {e}",
                                                      [("OK", self.app.close_dialog)]))

    def use(self, v: state.Volume, then: Callable[[], None]) -> None:
        def done(loc: state.StateLocation) -> None:
            self.app.pop()  # the chooser
            self.app.dialog("State on a disk", f"{loc.message}",
                            [("OK", lambda: (self.app.close_dialog(), then()))])

        self.app.background(f"Mounting {v.path} read-write...", lambda: state.use_volume(v),
                            done, lambda e: self.app.dialog(
                                "Keep the state on a disk", f"Cannot use {v.path}: {e}",
                                [("OK", self.app.close_dialog)]))


def before_long_job(app, then: Callable[[], None], busy: Iterable[str] = (),
                    list_disks: Callable | None = None) -> None:
    """See the module's text: ``then()`` now, or after the technician has answered."""
    prompt = StatePrompt(app, **({"list_disks": list_disks} if list_disks else {}))
    prompt.before_long_job(then, busy)
