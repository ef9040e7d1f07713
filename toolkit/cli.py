"""``rtk``: the command line of the Recovery Toolkit.

Exit codes: 0 ok, 1 failed (or interrupted), 2 usage error (argparse); ``rtk copy`` and
``rtk verify`` add 3 ok but with unreadable source ranges, 4 verification mismatch,
5 refused (nothing written); see docs/copy.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import toolkit
from toolkit import disks as disks_mod
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
        from toolkit.probe import probe

        json.dump(probe(), sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    found = disks_mod.list_disks()
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


class _Version(argparse.Action):
    """``--version``: the package metadata is read only when asked (it is slow to load)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"rtk {toolkit.__version__}")
        parser.exit()


# the modules that define the subcommands, by name: a run imports only its own (the
# others' imports, psutil for `net`, the copy engine for `copy`, cost start-up time)
COMMANDS = {"iscsi": "cli_iscsi", "net": "cli_net", "copy": "cli_copy", "verify": "cli_copy",
            "restore": "cli_restore", "unattended": "cli_unattended"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every subcommand, or for ``command``'s module only when it names one."""
    parser = argparse.ArgumentParser(prog="rtk", description="Recovery Toolkit command line")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("disks", help="list block devices with identity, transport and use")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dump-probe", action="store_true",
                   help="print the raw probe (sysfs, udev, mounts) as JSON, for bug reports "
                        "and test fixtures")
    p.set_defaults(func=cmd_disks)
    if command == "disks":
        names = []
    elif command in COMMANDS:
        names = [COMMANDS[command]]
    else:  # help, --version, or a mistyped command (argparse lists them all)
        names = list(dict.fromkeys(COMMANDS.values()))
    for name in names:
        importlib.import_module(f"toolkit.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
