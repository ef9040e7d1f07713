"""This machine's iSCSI initiator name, and the iscsid daemon.

The live system writes a fresh name at every boot (rtk-initiator-name.service),
so two servers booted from the same stick never share one. A technician sets
a fixed name when the storage's access list (ACL) expects it.
"""

from __future__ import annotations

import contextlib
import os

from toolkit.atomic import write_atomic
from toolkit.iscsi import adm
from toolkit.iscsi.errors import IscsidNotRunning, IscsiError, IscsiToolMissing
from toolkit.iscsi.parse import parse_initiator_name, valid_iscsi_name
from toolkit.system import systemctl, tools

INITIATOR_FILE = "/etc/iscsi/initiatorname.iscsi"


def initiator_file() -> str:
    return os.environ.get("RTK_INITIATOR_FILE", INITIATOR_FILE)


def read_initiator_name() -> str | None:
    try:
        with open(initiator_file()) as f:
            return parse_initiator_name(f.read())
    except OSError:
        return None


def generate_initiator_name() -> str:
    """A fresh name from ``iscsi-iname`` (open-iscsi's prefix)."""
    try:
        proc = tools.run(["iscsi-iname", "-p", "iqn.2005-03.org.open-iscsi"], timeout=30)
    except tools.ToolNotInstalled as e:
        raise IscsiToolMissing(str(e), command=e.command) from e
    except tools.ToolError as e:
        raise IscsiError(str(e), code=None, command=e.command, output=e.stderr) from e
    name = proc.stdout.strip()
    if not valid_iscsi_name(name):
        raise IscsiError(f"iscsi-iname failed: it printed {name!r}, not an iSCSI name")
    return name


def _write(name: str) -> None:
    path = initiator_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, f"InitiatorName={name}\n")


def set_initiator_name(name: str) -> str:
    """Write ``name`` (validated) and restart iscsid so it takes effect.

    Refused while sessions are logged in: the storage saw the old name, and
    iscsid would log them in again under the new one after a reconnect.
    """
    if not valid_iscsi_name(name):
        raise ValueError(f"{name!r} is not an iSCSI name: use iqn.YYYY-MM.reversed.domain"
                         "[:identifier] (e.g. iqn.1991-05.com.microsoft:server1) or eui.HEX16")
    if adm.session_list().strip():
        raise IscsiError("cannot change the initiator name while targets are attached: "
                         "detach them first (rtk iscsi detach IQN)", )
    _write(name)
    restart_iscsid()
    return name


def iscsid_running() -> bool:
    """iscsid runs, or its socket is listening (systemd starts it on the first request)."""
    if any(systemctl.is_active(unit) for unit in ("iscsid.service", "iscsid.socket")):
        return True
    try:
        return tools.run(["pidof", "iscsid"], check=False, timeout=10).returncode == 0
    except tools.ToolError:
        return False


def restart_iscsid() -> None:
    # a failure (logged by tools.run; no systemd in a container) shows in iscsid_running
    with contextlib.suppress(tools.ToolError):
        systemctl.restart("iscsid.service", check=False)
    if not iscsid_running():
        raise IscsidNotRunning("iscsid did not start after writing the initiator name")


def ensure_iscsid() -> str:
    """Make sure open-iscsi is installed, an initiator name exists and iscsid runs;
    returns the name."""
    try:
        tools.require(adm.ISCSIADM)
    except tools.ToolNotInstalled as e:
        raise IscsiToolMissing(str(e)) from e
    name = read_initiator_name()
    if not name:
        name = generate_initiator_name()
        _write(name)
    if not iscsid_running():
        with contextlib.suppress(tools.ToolError):  # as above: iscsid_running says
            tools.run(["modprobe", "iscsi_tcp"], check=False, timeout=60)
        with contextlib.suppress(tools.ToolError):
            systemctl.start("iscsid.socket", "iscsid.service", check=False)
        if not iscsid_running():
            raise IscsidNotRunning("iscsid is not running and could not be started")
    return name
