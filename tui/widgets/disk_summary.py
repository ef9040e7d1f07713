"""How a disk is shown: its entry in a list of disks (:func:`disk_markup`, the Disks screen
and the disk chooser) and its column on a confirmation screen (:func:`disk_column`, Disk
Copy and Restore): everything that tells it apart from the others."""

from __future__ import annotations

from toolkit.disks import cluster
from toolkit.disks.inventory import Disk
from toolkit.units import human_size

MAX_CSV_LINES = 3  # volumes shown with their CSV ID in a list entry; "+N more" after


def transport_name(d: Disk) -> str:
    """SATA, NVME, iSCSI, virtio...: as the technician calls it."""
    return "iSCSI" if d.transport == "iscsi" else d.transport.upper() if len(d.transport) <= 4 \
        else d.transport


def _partition_summary(d: Disk) -> str:
    parts = []
    for p in d.partitions:
        label = f' "{p.label}"' if p.label else ""
        parts.append(f"{p.name} {human_size(p.size)} {p.fstype or '?'}{label}")
    if not parts and d.fstype:
        label = f' "{d.label}"' if d.label else ""
        parts.append(f"whole disk {d.fstype}{label}")
    return "  ".join(parts) if parts else "no partitions"


def cluster_lines(c, indent: str = "    ", heading: bool = False) -> list:
    """The cluster identity ``c`` (:class:`~toolkit.disks.cluster.ClusterIdentity` or
    its JSON form) as lines: a CSV ID per volume (``CSV ID 41a4...:135266304 "Vol1"``),
    or the disk GUID / MBR signature alone (first in any case with ``heading``); what is
    damaged in the table, as a warning."""
    c = cluster.from_dict(c)
    if c is None or c.scheme is None:
        return []
    vols = [p for p in c.volumes() if p.csv_id]
    lines: list = [f"{indent}{c.heading()}\n"] if heading and vols else []
    lines += [f"{indent}CSV ID {p.csv_id}" + (f' "{p.label}"' if p.label else "") + "\n"
              for p in vols[:MAX_CSV_LINES]]
    if len(vols) > MAX_CSV_LINES:
        lines.append(f"{indent}(+{len(vols) - MAX_CSV_LINES} more volumes)\n")
    if not vols:
        lines.append(f"{indent}{c.heading()}\n")
    if c.damage:
        lines.append(("warn", f"{indent}{c.damage}\n"))
    return lines


def disk_markup(d: Disk) -> list:
    """The few lines a disk gets in a list."""
    ident = d.serial or d.wwn or "no serial"
    role = [(d.role.lower(), f"{d.role:<7}")] if d.role else []
    lines = [("title", f"{d.path:<13}"), f" {human_size(d.size):>9}  ", ("transport",
             f"{transport_name(d):<6}"), " ", *role,
             f"{(d.model or '-')[:20 - len(role) * 8]:<{20 - len(role) * 8}} {ident[:24]}\n"]
    if d.iscsi:
        lines.append(f"    {d.iscsi.target}  LUN {d.iscsi.lun}  portal {d.iscsi.portal}\n")
    elif d.backing_file:
        lines.append(f"    file {d.backing_file}\n")
    lines.append(("dim", f"    {_partition_summary(d)}\n"))
    lines += cluster_lines(d.cluster)
    if d.in_use:
        lines.append(("warn", "    IN USE: " + "; ".join(d.in_use)))
    else:
        lines.append(("ok", "    not in use"))
    return lines


def disk_column(role: str, e) -> list:
    """One column of a confirmation screen for the end ``e`` (an endpoint: its
    :meth:`~toolkit.disks.endpoint.Endpoint.record`, the identity record the reports
    hold) headed ``role``: everything that tells this disk apart."""
    r = e.record()
    lines = [("title", f"{role}\n"), f"{r.node}\n", f"{human_size(r.size)} ({r.size} B)\n",
             f"{r.vendor or ''} {r.model or r.transport}".strip() + "\n",
             f"serial {r.serial or '-'}\n"]
    if r.wwn:
        lines.append(f"WWN {r.wwn}\n")
    if r.iscsi:
        lines.append(f"{r.iscsi['target']}\nLUN {r.iscsi['lun']} @ {r.iscsi['portal']}\n")
    if r.backing_file:
        lines.append(f"file {r.backing_file}\n")
    for link in r.by_path[:1]:
        lines.append(("dim", link.removeprefix("/dev/disk/by-path/") + "\n"))
    for p in r.partitions:
        label = f' "{p["label"]}"' if p["label"] else ""
        lines.append(f"  {p['name']} {human_size(p['size'])} {p['fstype'] or '?'}{label}\n")
    if not r.partitions:
        lines.append(f"  {r.fstype or 'no partitions'}" + (f' "{r.fs_label}"' if r.fs_label
                                                           else "") + "\n")
    lines += cluster_lines(r.cluster, indent="", heading=True)
    return lines
