"""One function per iscsiadm operation, run through :func:`run`.

Nothing here parses (that is :mod:`toolkit.iscsi.parse`). iscsiadm runs through
:func:`toolkit.system.tools.run`; every command line is logged to ``iscsi.log``
in the log directory with CHAP secrets masked, and a failure (the ToolError's
exit status) raises the typed error of :mod:`toolkit.iscsi.errors`.

iscsiadm only takes CHAP secrets as ``-v VALUE`` on its command line, so they
are visible in ``ps`` for the few milliseconds an update runs; nothing of
ours writes them anywhere.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from toolkit.iscsi.errors import ISCSI_ERR, ISCSI_ERR_TRANS_TIMEOUT, IscsiToolMissing, error_for
from toolkit.iscsi.portal import DEFAULT_PORT, format_portal
from toolkit.jobs import report
from toolkit.system import tools
from toolkit.system.tools import MASK, redact

ISCSIADM = "iscsiadm"
SECRET_SETTINGS = ("password", "password_in")  # suffixes of node/discovery CHAP settings


@dataclass(frozen=True)
class Chap:
    """CHAP credentials. The secret never shows in repr, logs or JSON."""

    username: str
    password: str = field(repr=False)

    def to_dict(self) -> dict:
        return {"username": self.username, "password": MASK}


def mask_args(args: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """``args`` with the value of every ``-v`` after a ``-n ...password`` (and every
    known secret anywhere) replaced by ``********``."""
    secrets = [s for s in secrets if s]
    out: list[str] = []
    secret_name = False
    for i, a in enumerate(args):
        prev = args[i - 1] if i else ""
        if prev in ("-n", "--name"):
            secret_name = a.rsplit(".", 1)[-1] in SECRET_SETTINGS
        if prev in ("-v", "--value") and secret_name:
            out.append(MASK)
            continue
        out.append(redact(a, secrets))
    return out


def _log(line: str) -> None:
    try:
        os.makedirs(report.log_dir(), exist_ok=True)
        with open(os.path.join(report.log_dir(), "iscsi.log"), "a") as f:
            f.write(f"{report.iso_time(time.time())} {line}\n")
    except OSError:
        pass  # a read-only log directory must not stop an attach


def run(args: Sequence[str], what: str, *, secrets: Iterable[str] = (), timeout: float = 180,
        ok: Iterable[int] = ()) -> subprocess.CompletedProcess:
    """Run ``iscsiadm ARGS``; raise the typed error unless it exits 0 (or in ``ok``)."""
    secrets = tuple(s for s in secrets if s)
    cmd = [ISCSIADM, *args]
    masked = mask_args(cmd, secrets)
    shown = shlex.join(masked)
    try:
        proc = tools.run(cmd, ok=(0, *ok), timeout=timeout, secrets=secrets, shown=masked)
    except tools.ToolNotInstalled as e:
        _log(f"$ {shown}\n  {e}")
        raise IscsiToolMissing(str(e), command=shown) from e
    except tools.ToolError as e:  # stdout and stderr masked by tools.run
        if e.timed_out:
            _log(f"$ {shown}\n  {e}")
            raise error_for(ISCSI_ERR_TRANS_TIMEOUT, what, command=shown, output=str(e)) from e
        output = e.stdout + e.stderr
        _log(f"$ {shown}\n  exit {e.status}" +
             "".join(f"\n  | {ln}" for ln in output.splitlines()[:40]))
        raise error_for(e.status if e.status is not None else ISCSI_ERR, what, command=shown,
                        output=output) from e
    output = redact(proc.stdout + proc.stderr, secrets)
    _log(f"$ {shown}\n  exit {proc.returncode}" +
         "".join(f"\n  | {ln}" for ln in output.splitlines()[:40]))
    return proc


# --- discovery ---------------------------------------------------------------

def discovery_sendtargets(host: str, port: int) -> str:
    """SendTargets discovery without storing records (``-o nonpersistent``)."""
    return run(["-m", "discovery", "-t", "sendtargets", "-p", format_portal(host, port),
                "-o", "nonpersistent"], f"discovery on {format_portal(host, port)}").stdout


def discoverydb_new(host: str, port: int) -> None:
    run(["-m", "discoverydb", "-t", "sendtargets", "-p", format_portal(host, port), "-o", "new"],
        "creating the discovery record")


def discoverydb_update(host: str, port: int, name: str, value: str, *,
                       secret: bool = False) -> None:
    run(["-m", "discoverydb", "-t", "sendtargets", "-p", format_portal(host, port), "-o", "update",
         "-n", name, "-v", value], f"setting {name} on the discovery record",
        secrets=(value,) if secret else ())


def discoverydb_discover(host: str, port: int, secrets: Iterable[str] = ()) -> str:
    """Discovery through the stored discovery record (needed for discovery CHAP)."""
    return run(["-m", "discoverydb", "-t", "sendtargets", "-p", format_portal(host, port),
                "--discover", "-o", "nonpersistent"], f"discovery on {format_portal(host, port)}",
               secrets=secrets).stdout


def discoverydb_delete(host: str, port: int) -> None:
    run(["-m", "discoverydb", "-t", "sendtargets", "-p", format_portal(host, port), "-o", "delete"],
        "deleting the discovery record", ok=(21,))


# --- nodes -------------------------------------------------------------------

def node_new(iqn: str, host: str, port: int) -> None:
    run(["-m", "node", "-o", "new", "-T", iqn, "-p", format_portal(host, port)],
        f"creating the node record for {iqn} at {format_portal(host, port)}")


def node_update(iqn: str, host: str, port: int, name: str, value: str, *,
                secret: bool = False) -> None:
    run(["-m", "node", "-T", iqn, "-p", format_portal(host, port), "-o", "update",
         "-n", name, "-v", value], f"setting {name} on {iqn}",
        secrets=(value,) if secret else ())


def node_login(iqn: str, host: str, port: int, secrets: Iterable[str] = ()) -> str:
    return run(["-m", "node", "-T", iqn, "-p", format_portal(host, port), "--login"],
               f"login to {iqn} at {format_portal(host, port)}", secrets=secrets).stdout


def node_logout(iqn: str, host: str | None = None, port: int | None = None) -> str:
    args = ["-m", "node", "-T", iqn]
    if host:
        args += ["-p", format_portal(host, port or DEFAULT_PORT)]
    return run([*args, "--logout"], f"logout from {iqn}", ok=(21,)).stdout


def node_delete(iqn: str, host: str | None = None, port: int | None = None) -> None:
    args = ["-m", "node", "-T", iqn]
    if host:
        args += ["-p", format_portal(host, port or DEFAULT_PORT)]
    run([*args, "-o", "delete"], f"deleting the node record of {iqn}", ok=(21,))


def node_list() -> str:
    """``iscsiadm -m node`` (exit 21, no records, is an empty list)."""
    return run(["-m", "node"], "listing node records", ok=(21,)).stdout


# --- sessions ----------------------------------------------------------------

def session_list(print_level: int | None = None) -> str:
    """``iscsiadm -m session [-P N]`` (exit 21, no sessions, is an empty list)."""
    args = ["-m", "session"] + (["-P", str(print_level)] if print_level is not None else [])
    return run(args, "listing sessions", ok=(21,)).stdout


def session_rescan(sid: int | None = None) -> None:
    args = ["-m", "session"] + (["-r", str(sid)] if sid is not None else [])
    run([*args, "--rescan"], "rescanning sessions", ok=(21,))
