"""``rtk unattended``: run the plan of the kernel command line (docs/unattended.md).

    rtk unattended [--cmdline TEXT] [--dry-run] [--medium DIR] [--boot]

Reads ``/proc/cmdline`` (or ``--cmdline``) and its ``rtk.plan=`` file, then runs
:func:`toolkit.unattended.run`. Exit codes: 0 ok (or a dry run whose checks all
passed), 5 stopped before writing anything, 4 checksum or verification mismatch,
1 failed (possibly after writing), 2 the command line or plan is invalid, 6 no
``rtk.mode=`` (nothing to do: the menu). The done action runs here after success
(reboot, poweroff); "menu", "shell" and "stay" are printed as ``action: ...`` on
the last line. ``--boot`` (rtk-unattended.service) also writes to tty1, the serial
consoles and /var/log/rtk/unattended.log, then hands the consoles over
(:mod:`toolkit.unattended.boot`).
"""

from __future__ import annotations

import argparse
import sys

from toolkit.exitcodes import EXIT_NO_MODE, EXIT_USAGE
from toolkit.system.paths import LIVE_MEDIUM


def cmd_unattended(args: argparse.Namespace) -> int:
    from toolkit import unattended
    from toolkit.system import machine
    from toolkit.unattended import boot, cmdline, plan

    ttys = ["tty1"]
    try:
        cl = cmdline.Cmdline(args.cmdline) if args.cmdline is not None else cmdline.Cmdline()
    except OSError as e:
        print(f"rtk: cannot read the kernel command line: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.boot:
        ttys = boot.console_ttys(cl)
    console = unattended.Console(boot.open_streams(ttys) if args.boot else None)

    def finish(action: str, code: int) -> int:
        print(f"action: {action}", flush=True)
        if args.boot:
            boot.hand_over(action, console.last_banner, ttys)
        return code

    try:
        p = plan.read_plan(cl, medium=args.medium)
    except OSError as e:
        console.banner("RTK UNATTENDED: CANNOT READ THE PLAN", [str(e), "Nothing was written."])
        return finish("stay", EXIT_USAGE)
    except ValueError as e:  # CmdlineError, PlanError: the message names the parameter
        console.banner("RTK UNATTENDED: INVALID PARAMETERS", [str(e), "Nothing was written.",
                       "This machine stays here. Nothing reboots until someone acts."])
        return finish("stay", EXIT_USAGE)
    if p.mode is None:
        console.say("no rtk.mode= on the command line: nothing to do unattended")
        return finish("menu", EXIT_NO_MODE)
    outcome = unattended.run(p, dry_run=args.dry_run, medium=args.medium, console=console,
                             power=None if args.no_power else machine.power)
    return finish(outcome.action, outcome.exit_code)


def register(sub) -> None:
    """Add ``unattended`` to ``rtk``'s subcommands."""
    p = sub.add_parser("unattended", help="run the unattended restore or copy that the kernel "
                                          "command line (rtk.mode=...) asks for",
                       description="Read rtk.* parameters (and the rtk.plan= file), check "
                                   "everything, write, report, then the rtk.done= action.")
    p.add_argument("--cmdline", metavar="TEXT",
                   help="use TEXT instead of /proc/cmdline (tests, trying a PXE entry)")
    p.add_argument("--dry-run", action="store_true",
                   help="every step up to, not including, the first write to a disk")
    p.add_argument("--no-power", action="store_true",
                   help="do not reboot or power off after success (only print the action)")
    p.add_argument("--medium", default=LIVE_MEDIUM, metavar="DIR",
                   help=f"where rtk.image= and rtk.plan= paths are read (default {LIVE_MEDIUM})")
    p.add_argument("--boot", action="store_true",
                   help="as the boot service runs it: also write to tty1, the serial consoles "
                        "and /var/log/rtk/unattended.log, then hand the consoles over")
    p.set_defaults(func=cmd_unattended)
