"""``rtk``: the command line of the Recovery Toolkit.

Exit codes: 0 ok, 1 failed (or interrupted; an external tool failed or is not installed:
one line that names it, its exit status and its last stderr line, or its Debian package),
2 usage error (argparse); ``rtk copy`` and
``rtk verify`` add 3 ok but with unreadable source ranges, 4 verification mismatch,
5 refused (nothing written); see docs/copy.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import toolkit
from toolkit.cli.common import os_error, subcommands
from toolkit.exitcodes import EXIT_FAILED
from toolkit.system.tools import ToolError


class _Version(argparse.Action):
    """``--version``: the package metadata is read only when asked (it is slow to load)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"rtk {toolkit.__version__}")
        parser.exit()


# the modules that define the subcommands, by name: a run imports only its own (the
# others' imports, psutil for `net`, the copy engine for `copy`, cost start-up time)
COMMANDS = {"disks": "disks", "iscsi": "iscsi", "net": "net", "copy": "copy", "verify": "copy",
            "restore": "restore", "unattended": "unattended", "plan": "plan", "fleet": "fleet"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every subcommand, or for ``command``'s module only when it names one."""
    parser = argparse.ArgumentParser(prog="rtk", description="Recovery Toolkit command line")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = subcommands(parser, "command", "rtk")
    # help, --version, or a mistyped command: all of them (argparse lists them)
    names = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in names:
        importlib.import_module(f"toolkit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a full disk or a closed pipe is said below
        return code
    except ToolError as e:  # a tool failed or is missing: one line, never a traceback
        print(f"rtk {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C outside the work (which stops cleanly on its own)
        print(f"\nrtk {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # rtk disks --json | head: the reader is gone, nothing to say
        _drop_stdout()
        return EXIT_FAILED
    except OSError as e:  # e.g. the output on a full disk: one line, never a traceback
        _drop_stdout()
        print(f"rtk {args.command}: {os_error(e)}", file=sys.stderr)
        return EXIT_FAILED


def _drop_stdout() -> None:
    """What is still buffered for stdout cannot be written: discard it (else Python's exit
    tries again and prints "Exception ignored")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
