"""Every exit code of ``rtk``, and the one map from a job's status to its exit code.

A job (copy, verify, restore, unattended run) ends with a status word; its exit code
is :func:`for_status` of that word, so the CLI, the reports and the unattended
report server can never disagree. The iSCSI commands add their own codes (10-13),
named here too so that no two commands give one number two meanings (one exception,
outside ``rtk``: the state service's ``status`` query follows LSB's 3, "not running").
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # failed, interrupted or cancelled
EXIT_USAGE = 2  # argparse's usage error, or a bad kernel command line
EXIT_UNREADABLE = 3  # done, but some source ranges were unreadable (zeros written there)
EXIT_MISMATCH = 4  # verification found a difference
EXIT_REFUSED = 5  # refused before anything was written or changed
EXIT_NO_MODE = 6  # `rtk unattended`: no rtk.mode= on the command line
EXIT_INTERRUPTED = 130  # killed by SIGINT (Ctrl-C), as a shell reports it: 128 + 2
# `python -m toolkit.system.state status` only (not an `rtk` command): the state is in
# RAM, lost at reboot; LSB's "program is not running" of a status query
EXIT_STATE_IN_RAM = 3
# `rtk iscsi`
EXIT_AUTH = 10  # CHAP authentication failed
EXIT_UNREACHABLE = 11  # portal unreachable
EXIT_NOT_FOUND = 12  # no such target or LUN
EXIT_ISCSID = 13  # iscsid or the iSCSI tools not available: iscsid not running, no
#                  iscsi_tcp in the kernel, or iscsiadm/iscsi-iname not installed

_BY_STATUS = {
    "ok": EXIT_OK,
    "dry-run": EXIT_OK,
    "unreadable": EXIT_UNREADABLE,
    "mismatch": EXIT_MISMATCH,
    "refused": EXIT_REFUSED,
}


def for_status(status: str) -> int:
    """The exit code of a job that ended with ``status`` ("failed", "cancelled" and
    any word not listed: :data:`EXIT_FAILED`)."""
    return _BY_STATUS.get(status, EXIT_FAILED)


class StatusExit:
    """Mixin of a job's result that has a ``status``: its :attr:`exit_code`."""

    status: str

    @property
    def exit_code(self) -> int:
        return for_status(self.status)
