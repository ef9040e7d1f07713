"""``rtk disks``: every block device with its identity, transport and use.

Under each disk: its partition table as read from the disk (the GPT disk GUID or the
MBR disk signature, :mod:`toolkit.disks.cluster`) and each partition with its number,
byte offset, type and CSV ID; ``--json`` has it as each disk's ``cluster``.

What the probe could not find out (blkid missing on a system without udev) is said
on stderr as ``warning: ...`` lines, before the list; ``--json`` prints the same
list of disks on stdout as ever, the warnings are on stderr there too (and in
``--dump-probe``'s ``warnings``).
"""

from __future__ import annotations

import argparse
import json
import sys

from toolkit.disks import inventory as disks_mod
from toolkit.units import human_size


def _disk_line(d: disks_mod.Disk) -> str:
    ident = d.serial or d.wwn or "-"
    where = d.transport
    if d.iscsi:
        where = f"iscsi {d.iscsi.target} LUN {d.iscsi.lun} @ {d.iscsi.portal}"
    use = "; ".join(d.in_use) or "free"
    model = d.model or "-"
    return f"{d.path:<14} {human_size(d.size):>9}  {model:<18} {ident:<22} {where}  [{use}]"


def cmd_disks(args: argparse.Namespace) -> int:
    if args.dump_probe:
        from toolkit.disks.probe import probe

        json.dump(probe(), sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    found = disks_mod.list_disks()
    for w in found.warnings:  # stderr: --json's stdout stays the list of disks
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        json.dump([d.to_dict() for d in found], sys.stdout, indent=1)
        print()
        return 0
    for d in found:
        print(_disk_line(d))
        for line in _partition_lines(d):
            print("    " + line)
    return 0


def _partition_lines(d: disks_mod.Disk) -> list[str]:
    """The disk's identity from its partition table (``GPT disk GUID ...``), then its
    partitions: the kernel's (node, size, filesystem, label) beside the table's
    (number, byte offset, type, CSV ID), matched by offset; a partition of the table
    that the kernel does not list has no node ("-")."""
    c = d.cluster
    table = {p.offset: p for p in c.partitions} if c else {}
    lines = [c.line()] if c is not None and c.scheme is not None else []
    for p in d.partitions:
        label = f' "{p.label}"' if p.label else ""
        line = f"{p.path:<16} {human_size(p.size):>9}  {(p.fstype or '-') + label:<16}"
        t = table.pop(p.start, None)
        lines.append((line + (f"  {_table_text(t)}" if t else "")).rstrip())
    for t in table.values():
        label = f' "{t.label}"' if t.label else ""
        lines.append(f"{'-':<16} {human_size(t.size):>9}  {(t.fstype or '-') + label:<16}"
                     f"  {_table_text(t)}")
    return lines


def _table_text(t) -> str:
    """``partition 2 at byte 135266304, Microsoft basic data, CSV ID 41a4...:135266304``"""
    bits = [f"partition {t.number} at byte {t.offset}", t.type_name or f"type {t.type}"]
    if t.csv_id and t.is_volume:
        bits.append(f"CSV ID {t.csv_id}")
    return ", ".join(bits)


def register(sub) -> None:
    p = sub.add_parser("disks", help="list block devices with identity, transport and use")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dump-probe", action="store_true",
                   help="print the raw probe (sysfs, udev, mounts) as JSON, for bug reports "
                        "and test fixtures")
    p.set_defaults(func=cmd_disks)
