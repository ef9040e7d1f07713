"""iscsiadm exit codes as named constants, and the exception tree they map to.

The codes are open-iscsi's ``enum iscsi_err`` (include/iscsi_err.h); the ones
the toolkit meets were checked in the live system against a real target (see
tests/fixtures/iscsi/ and docs/iscsi.md). Every exception carries an
actionable message, the iscsiadm exit code, and the command line with CHAP
secrets masked.
"""

from __future__ import annotations

from toolkit.exitcodes import EXIT_AUTH, EXIT_FAILED, EXIT_ISCSID, EXIT_NOT_FOUND, EXIT_UNREACHABLE

# enum iscsi_err (open-iscsi)
ISCSI_SUCCESS = 0
ISCSI_ERR = 1  # generic
ISCSI_ERR_SESS_NOT_FOUND = 2
ISCSI_ERR_NOMEM = 3
ISCSI_ERR_TRANS = 4  # connection (transport) failure: refused, no route
ISCSI_ERR_LOGIN = 5  # generic login failure
ISCSI_ERR_IDBM = 6  # node/discovery database error
ISCSI_ERR_INVAL = 7
ISCSI_ERR_TRANS_TIMEOUT = 8  # connection timed out
ISCSI_ERR_INTERNAL = 9
ISCSI_ERR_LOGOUT = 10
ISCSI_ERR_PDU_TIMEOUT = 11
ISCSI_ERR_TRANS_NOT_FOUND = 12  # iscsi_tcp not loaded
ISCSI_ERR_ACCESS = 13  # not root
ISCSI_ERR_TRANS_CAPS = 14
ISCSI_ERR_SESS_EXISTS = 15
ISCSI_ERR_INVALID_MGMT_REQ = 16
ISCSI_ERR_ISNS_UNAVAILABLE = 17
ISCSI_ERR_ISCSID_COMM_ERR = 18
ISCSI_ERR_FATAL_LOGIN = 19  # e.g. target not found at login, not authorized
ISCSI_ERR_ISCSID_NOTCONN = 20  # iscsid is not running
ISCSI_ERR_NO_OBJS_FOUND = 21  # no matching record / session
ISCSI_ERR_SYSFS_LOOKUP = 22
ISCSI_ERR_HOST_NOT_FOUND = 23
ISCSI_ERR_LOGIN_AUTH_FAILED = 24
ISCSI_ERR_ISNS_QUERY = 25
ISCSI_ERR_ISNS_REG_FAILED = 26
ISCSI_ERR_OP_NOT_SUPP = 27
ISCSI_ERR_BUSY = 28
ISCSI_ERR_AGAIN = 29
ISCSI_ERR_UNKNOWN_DISCOVERY_TYPE = 30
ISCSI_ERR_CHILD_TERMINATED = 31
ISCSI_ERR_SESSION_NOT_CONNECTED = 32



class IscsiError(Exception):
    """An iSCSI operation failed. ``code`` is iscsiadm's exit code (None if not from it)."""

    exit_code = EXIT_FAILED
    hint = "see the iSCSI log in /var/log/rtk/iscsi.log"

    def __init__(self, message: str, *, code: int | None = None, command: str = "",
                 output: str = ""):
        self.message = message
        self.code = code
        self.command = command  # secrets already masked
        self.output = output  # secrets already masked
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": str(self),
                "iscsiadm_exit": self.code, "command": self.command,
                "output": self.output.strip()}


class IscsiAuthError(IscsiError):
    exit_code = EXIT_AUTH
    hint = ("the target refused the CHAP credentials: check the user name and secret "
            "(and, for mutual CHAP, the target's user and secret) configured on the storage")


class IscsiPortalUnreachable(IscsiError):
    exit_code = EXIT_UNREACHABLE
    hint = ("no iSCSI service answered at that address and port: check the address, the "
            "port (3260 by default), the network link and address (Network menu) and any "
            "firewall between here and the storage")


class IscsiTargetNotFound(IscsiError):
    exit_code = EXIT_NOT_FOUND
    hint = ("the portal does not offer that target (or LUN), or refuses this initiator: "
            "run discover on the portal and check the target's access list (ACL) for "
            "this initiator name (rtk iscsi initiator)")


class IscsiSessionExists(IscsiError):
    hint = "already logged in to this target: it is attached"


class IscsidNotRunning(IscsiError):
    exit_code = EXIT_ISCSID
    hint = ("the iSCSI daemon iscsid (or the iscsi_tcp kernel driver) is not available: "
            "run 'systemctl restart iscsid' and 'modprobe iscsi_tcp', then try again")


class IscsiToolMissing(IscsidNotRunning):
    """open-iscsi's iscsiadm or iscsi-iname is not installed (the message says which,
    and the package: from :class:`toolkit.system.tools.ToolNotInstalled`)."""

    hint = ""


_BY_CODE: dict[int, type[IscsiError]] = {
    ISCSI_ERR_LOGIN_AUTH_FAILED: IscsiAuthError,
    ISCSI_ERR_TRANS: IscsiPortalUnreachable,
    ISCSI_ERR_TRANS_TIMEOUT: IscsiPortalUnreachable,
    ISCSI_ERR_PDU_TIMEOUT: IscsiPortalUnreachable,
    ISCSI_ERR_NO_OBJS_FOUND: IscsiTargetNotFound,
    ISCSI_ERR_FATAL_LOGIN: IscsiTargetNotFound,
    ISCSI_ERR_SESS_EXISTS: IscsiSessionExists,
    ISCSI_ERR_ISCSID_NOTCONN: IscsidNotRunning,
    ISCSI_ERR_ISCSID_COMM_ERR: IscsidNotRunning,
    ISCSI_ERR_TRANS_NOT_FOUND: IscsidNotRunning,
}


def error_for(code: int, what: str, *, command: str = "", output: str = "") -> IscsiError:
    """The exception for iscsiadm's exit ``code`` while doing ``what``."""
    cls = _BY_CODE.get(code, IscsiError)
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    last = next((ln for ln in lines if "reported error" in ln), lines[-1] if lines else "")
    detail = f" ({last})" if last else ""
    return cls(f"{what} failed, iscsiadm exit {code}{detail}", code=code, command=command,
               output=output)
