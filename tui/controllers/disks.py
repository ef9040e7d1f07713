"""The Disks screen's controller: the inventory, and one disk in full."""

from __future__ import annotations

from toolkit.disks import inventory as disks
from toolkit.disks.inventory import Disk
from tui.views.disks import DiskDetailView, DisksView


class DisksController:
    def __init__(self, app, list_disks=disks.list_disks):
        self.app = app
        self._list_disks = list_disks

    def _load(self) -> tuple[list[Disk], str | None]:
        try:
            return self._list_disks(), None
        except OSError as e:
            return [], f"Could not read the disks: {e}"

    def show(self) -> None:
        found, error = self._load()
        self.app.push(DisksView(self, found, error))

    def refresh(self) -> None:
        found, error = self._load()
        self.app.replace(DisksView(self, found, error))

    def show_disk(self, disk: Disk) -> None:
        self.app.push(DiskDetailView(disk))
