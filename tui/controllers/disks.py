"""The Disks screen's controller: the inventory (with what its probe could not find
out), and one disk in full."""

from __future__ import annotations

from toolkit.disks import inventory as disks
from toolkit.disks.inventory import Disk
from tui.views.disks import DiskDetailView, DisksView


class DisksController:
    def __init__(self, app, list_disks=disks.list_disks):
        self.app = app
        self._list_disks = list_disks

    def _view(self) -> DisksView:
        """The list, with the probe's warnings (blkid missing...) as lines of their own."""
        try:
            found = self._list_disks()
        except OSError as e:
            return DisksView(self, [], f"Could not read the disks: {e}")
        return DisksView(self, found, None, getattr(found, "warnings", []))

    def show(self) -> None:
        self.app.push(self._view())

    def refresh(self) -> None:
        self.app.replace(self._view())

    def show_disk(self, disk: Disk) -> None:
        self.app.push(DiskDetailView(disk))
