"""``rtk disks``: every block device with its identity, transport and use.

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
        for p in d.partitions:
            label = f' "{p.label}"' if p.label else ""
            print(f"    {p.path:<16} {human_size(p.size):>9}  {p.fstype or '-'}{label}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("disks", help="list block devices with identity, transport and use")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dump-probe", action="store_true",
                   help="print the raw probe (sysfs, udev, mounts) as JSON, for bug reports "
                        "and test fixtures")
    p.set_defaults(func=cmd_disks)
