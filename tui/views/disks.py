"""The Disks screen: every block device, then one disk in detail."""

from __future__ import annotations

import urwid

from toolkit.disks.inventory import Disk
from toolkit.units import human_size
from tui.widgets.base import SelectableLine, View
from tui.widgets.disk_summary import disk_markup, transport_name


class DisksView(View):
    title = "Disks"
    hints = (("↑↓", "move"), ("Enter", "details"), ("F5", "refresh"), ("Esc", "back"))

    def __init__(self, controller, disks: list[Disk], error: str | None = None,
                 warnings: list[str] = ()):
        self.controller = controller
        self.keys = {"f5": controller.refresh, "ctrl r": controller.refresh}
        rows: list = []
        if error:
            rows.append(urwid.Text(("warn", error)))
        rows += [urwid.Text(("warn", f"! {w}")) for w in warnings]  # what the list lacks
        if not disks:
            rows.append(urwid.Text("No disks found."))
        for d in disks:
            rows.append(SelectableLine(disk_markup(d), lambda d=d: controller.show_disk(d)))
            rows.append(urwid.Divider("─"))
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(rows)))


def _field(name: str, value) -> urwid.Text:
    return urwid.Text([("dim", f"{name:>15}: "), str(value)])


def _table_rows(d: Disk) -> list:
    """The partition table as read from the disk: number, byte offset, size, type,
    label, and each volume's CSV ID (how the cluster and the backup appliance name it)."""
    c = d.cluster
    if c is None or c.scheme is None:
        return []
    rows: list = [urwid.Divider(), urwid.Text(("title", f"  Partition table read from the "
                                                        f"disk ({c.scheme.upper()})"))]
    if c.damage:
        rows.append(urwid.Text(("warn", f"    {c.damage}")))
    for p in c.partitions:
        rows.append(urwid.Text(f"    {p.line(csv_id=False)}"))
        if p.csv_id and p.is_volume:
            rows.append(urwid.Text(f"       CSV ID {p.csv_id}"))
    return rows


class DiskDetailView(View):
    hints = (("↑↓", "scroll"), ("Esc", "back"))

    def __init__(self, d: Disk):
        self.title = f"Disk {d.path}"
        rows = [
            _field("device", d.path),
            _field("size", f"{human_size(d.size)} ({d.size} bytes)"),
            _field("sectors", f"logical {d.logical_sector_size}, physical "
                              f"{d.physical_sector_size}"),
            _field("transport", transport_name(d)),
            _field("role", d.role or "-"),
            _field("model", f"{d.vendor or ''} {d.model or '-'}".strip()),
            _field("serial", d.serial or "-"),
            _field("WWN", d.wwn or "-"),
        ]
        if d.iscsi:
            rows += [_field("iSCSI target", d.iscsi.target), _field("LUN", d.iscsi.lun),
                     _field("portal", d.iscsi.portal), _field("session", d.iscsi.session)]
        if d.backing_file:
            rows.append(_field("backing file", d.backing_file))
        rows.append(_field("flags", ", ".join(f for f, on in (
            ("read-only", d.read_only), ("removable", d.removable),
            ("rotational", d.rotational)) if on) or "-"))
        rows.append(_field("partition table", d.partition_table or "none"))
        if d.cluster is not None:
            rows.append(_field("disk identity", d.cluster.line()))
        for link in d.by_path:
            rows.append(_field("by-path", link.removeprefix("/dev/disk/by-path/")))
        for link in d.by_id:
            rows.append(_field("by-id", link.removeprefix("/dev/disk/by-id/")))
        rows.append(urwid.Divider())
        rows.append(urwid.Text(("title", "  Partitions")))
        if not d.partitions:
            rows.append(urwid.Text("    none" + (f" (whole-disk {d.fstype} \"{d.label or ''}\")"
                                                 if d.fstype else "")))
        for p in d.partitions:
            use = ", ".join([*p.mountpoints, *(["swap"] if p.swap else []), *p.holders])
            rows.append(urwid.Text(
                f"    {p.number:>2} {p.name:<12} {human_size(p.size):>9}  {p.fstype or '-':<8}"
                f" {p.label or p.partlabel or '':<16} {use}"))
        rows += _table_rows(d)
        rows.append(urwid.Divider())
        if d.in_use:
            rows += [urwid.Text(("warn", f"  IN USE: {r}")) for r in d.in_use]
        else:
            rows.append(urwid.Text(("ok", "  Not in use.")))
        super().__init__(urwid.ListBox(urwid.SimpleFocusListWalker(rows)))
