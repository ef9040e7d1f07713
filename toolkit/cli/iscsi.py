"""``rtk iscsi``: the command line of the iSCSI Manager.

    rtk iscsi discover PORTAL [--port N] [CHAP options]
    rtk iscsi attach PORTAL IQN --role source|target [--lun N] [--port N]
                     [CHAP options] [mutual CHAP options]
    rtk iscsi detach IQN [--portal PORTAL]
    rtk iscsi list
    rtk iscsi rescan [IQN]
    rtk iscsi initiator [--set IQN | --generate]

Every subcommand takes ``--json``. CHAP secrets are read from a file
(``--chap-secret-file``) or an environment variable (``--chap-secret-env``);
``--chap-secret`` exists, but ``ps`` shows it to every user of the machine.
Exit codes (docs/iscsi.md): 0 ok, 1 failed, 2 usage, 10 CHAP authentication
failed, 11 portal unreachable, 12 target or LUN not found, 13 iscsid or the iSCSI
tools not available (iscsid not running, iscsiadm not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from toolkit import iscsi
from toolkit.cli.common import subcommands
from toolkit.disks import roles
from toolkit.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from toolkit.iscsi.errors import IscsiError
from toolkit.jobs.report import to_jsonable


class UsageError(Exception):
    pass


def _secret(args: argparse.Namespace, prefix: str) -> str | None:
    value, path, env = (getattr(args, f"{prefix}_secret{s}") for s in ("", "_file", "_env"))
    if sum(x is not None for x in (value, path, env)) > 1:
        raise UsageError(f"give only one of --{prefix}-secret, --{prefix}-secret-file, "
                         f"--{prefix}-secret-env")
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read(65536)
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None
        try:
            return data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise UsageError(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                             f"position {e.start})") from None
    if env is not None:
        if env not in os.environ:
            raise UsageError(f"the environment variable {env} is not set")
        return os.environ[env]
    return value


def _chap(args: argparse.Namespace, prefix: str) -> iscsi.Chap | None:
    user, secret = getattr(args, f"{prefix}_user"), _secret(args, prefix)
    if user is None and secret is None:
        return None
    if not user or not secret:
        raise UsageError(f"--{prefix}-user needs a secret (--{prefix}-secret-file or "
                         f"--{prefix}-secret-env), and a secret needs --{prefix}-user")
    return iscsi.Chap(user, secret)


def _out(args: argparse.Namespace, data, lines: list[str]) -> None:
    if args.json:
        json.dump(to_jsonable(data), sys.stdout, indent=1)
        print()
    else:
        for line in lines:
            print(line)


def _lun_line(lun) -> str:
    dev = lun.device or "-"
    by_path = f"  {lun.by_path[0]}" if lun.by_path else ""
    return f"    LUN {lun.lun:<3} {dev:<10} {lun.role or 'no role':<8}{by_path}"


def cmd_discover(args: argparse.Namespace) -> int:
    host, port = iscsi.split_portal(args.portal, args.port)
    res = iscsi.discover(host, port, chap=_chap(args, "chap"))
    lines = [f"{t.iqn}  portal {t.portal}" for t in res.targets]
    lines += [f"note: {n}" for n in res.notes] or []
    if not res.targets:
        lines.append(f"{res.portal} offers no targets to this initiator")
    _out(args, res, lines)
    return EXIT_OK


def cmd_attach(args: argparse.Namespace) -> int:
    host, port = iscsi.split_portal(args.portal, args.port)
    res = iscsi.attach(host, args.iqn, args.role, port=port, lun=args.lun,
                       chap=_chap(args, "chap"), mutual=_chap(args, "mutual"))
    lines = [f"attached {res.iqn} at {res.portal} as {res.role}"]
    lines += [_lun_line(x) for x in res.luns]
    lines += [f"note: {n}" for n in res.notes] + [f"warning: {w}" for w in res.warnings]
    _out(args, res, lines)
    return EXIT_OK


def cmd_detach(args: argparse.Namespace) -> int:
    host, port = iscsi.split_portal(args.portal) if args.portal else (None, None)
    res = iscsi.detach(args.iqn, host, port)
    lines = [f"detached {res.iqn}" + (f" ({', '.join(res.devices)} gone)" if res.devices
                                      else "")]
    _out(args, res, lines + [f"note: {n}" for n in res.notes])
    return EXIT_OK


def _sessions_out(args: argparse.Namespace, found) -> int:
    lines = []
    for s in found:
        lines.append(f"[{s.sid}] {s.target}  portal {s.portal}  {s.state or '?'}")
        lines += [_lun_line(x) for x in s.luns if x.device]
    _out(args, found, lines or ["no iSCSI sessions"])
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    return _sessions_out(args, iscsi.list_sessions())


def cmd_rescan(args: argparse.Namespace) -> int:
    return _sessions_out(args, iscsi.rescan(args.iqn))


def cmd_initiator(args: argparse.Namespace) -> int:
    if args.set is not None and args.generate:
        raise UsageError("give either --set IQN or --generate")
    if args.set == "":
        raise UsageError("--set needs the initiator name (iqn.YYYY-MM.domain:name)")
    if args.set or args.generate:
        name = iscsi.set_initiator_name(args.set or iscsi.generate_initiator_name())
    else:
        name = iscsi.read_initiator_name()
    _out(args, {"initiator_name": name}, [name or "no initiator name"])
    return EXIT_OK if name else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    try:
        return args.iscsi_func(args)
    except UsageError as e:
        print(f"rtk iscsi: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"rtk iscsi: {e}", file=sys.stderr)
        return EXIT_USAGE
    except IscsiError as e:
        if getattr(args, "json", False):
            json.dump(e.to_dict(), sys.stdout, indent=1)
            print()
        print(f"rtk iscsi: {e}", file=sys.stderr)
        return e.exit_code


def _chap_options(p: argparse.ArgumentParser, prefix: str, what: str) -> None:
    g = p.add_argument_group(what)
    g.add_argument(f"--{prefix}-user", metavar="USER")
    g.add_argument(f"--{prefix}-secret-file", metavar="PATH",
                   help="read the secret from this file (first line)")
    g.add_argument(f"--{prefix}-secret-env", metavar="VAR",
                   help="read the secret from this environment variable")
    g.add_argument(f"--{prefix}-secret", metavar="SECRET",
                   help="the secret itself (visible to every user in ps: prefer the above)")


def register(sub) -> None:
    """Add ``iscsi`` to ``rtk``'s subcommands."""
    top = sub.add_parser("iscsi", help="attach iSCSI LUNs as SOURCE or TARGET",
                         description="iSCSI Manager (docs/iscsi.md)")
    isub = subcommands(top, "iscsi_command", "rtk iscsi", func=run, iscsi_func="missing")

    def add(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = isub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(iscsi_func=func)
        return p

    p = add("discover", cmd_discover, "list the targets a portal offers (SendTargets)")
    p.add_argument("portal", metavar="PORTAL", help="address or address:port")
    p.add_argument("--port", type=int, default=None, help="port (default 3260)")
    _chap_options(p, "chap", "discovery CHAP")

    p = add("attach", cmd_attach, "log in to a target and give its LUNs a role")
    p.add_argument("portal", metavar="PORTAL", help="address or address:port")
    p.add_argument("iqn", metavar="IQN")
    p.add_argument("--role", required=True, type=str.upper, choices=roles.ROLES,
                   help="SOURCE (backup snapshot: made read-only) or TARGET (to write to)")
    p.add_argument("--lun", type=int, default=None, help="only this LUN gets the role")
    p.add_argument("--port", type=int, default=None, help="port (default 3260)")
    _chap_options(p, "chap", "CHAP (the target authenticates this initiator)")
    _chap_options(p, "mutual", "mutual CHAP (this initiator authenticates the target)")

    p = add("detach", cmd_detach, "log out of a target and delete its node record")
    p.add_argument("iqn", metavar="IQN")
    p.add_argument("--portal", default=None, help="only the session at this address:port")

    add("list", cmd_list, "sessions, their LUNs, block devices and roles")
    p = add("rescan", cmd_rescan, "rescan sessions for new or resized LUNs")
    p.add_argument("iqn", metavar="IQN", nargs="?")

    p = add("initiator", cmd_initiator, "show or change this machine's initiator name")
    p.add_argument("--set", metavar="IQN", help="use this name (restarts iscsid)")
    p.add_argument("--generate", action="store_true", help="make a fresh name")
