"""What the menu and ``rtk iscsi`` call: discover, attach, detach, list, rescan."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field

from toolkit.disks import roles
from toolkit.disks.inventory import list_disks
from toolkit.iscsi import adm, sessions
from toolkit.iscsi.adm import Chap
from toolkit.iscsi.errors import (
    ISCSI_ERR_FATAL_LOGIN,
    IscsiAuthError,
    IscsiError,
    IscsiPortalUnreachable,
    IscsiSessionExists,
    IscsiTargetNotFound,
)
from toolkit.iscsi.initiator import ensure_iscsid
from toolkit.iscsi.parse import parse_portal_records
from toolkit.iscsi.portal import DEFAULT_PORT, format_portal, split_portal
from toolkit.iscsi.reservations import reservation_warning
from toolkit.iscsi.sessions import Lun, Session

# node.session.timeo.replacement_timeout (the session's recovery_tmo in sysfs): how long
# the kernel holds I/O while a session reconnects before failing it. Short, so that an
# outage soon reaches the job, which knows what it is doing and waits it out itself
# (toolkit.disks.transport: the screen says so, Ctrl-C works, its own limit applies);
# open-iscsi's default of 120 s holds a copy in the kernel, silent and uninterruptible.
# Long enough that a blip (a link flap, a target's failover) never shows. docs/iscsi.md.
REPLACEMENT_TIMEOUT = 15


@dataclass
class Target:
    iqn: str
    host: str  # the portal to use (the user's address when the advertised one is unreachable)
    port: int
    advertised: list[str] = field(default_factory=list)  # "addr:port" as the target said
    note: str | None = None

    @property
    def portal(self) -> str:
        return format_portal(self.host, self.port)


@dataclass
class DiscoveryResult:
    portal: str
    targets: list[Target]
    notes: list[str] = field(default_factory=list)


def _unreachable(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        if ipaddress.ip_address(address).is_loopback:
            return True
    except ValueError:
        pass
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return False
    except OSError:
        return True


def discover(host: str, port: int = DEFAULT_PORT, chap: Chap | None = None) -> DiscoveryResult:
    """SendTargets discovery on ``host:port``, optionally with discovery CHAP.

    A target that advertises a portal this machine cannot reach (a loopback
    address, NAT) is given the address the user typed instead, with a note.
    """
    ensure_iscsid()
    if chap:
        adm.discoverydb_new(host, port)
        try:
            for name, value, secret in (("discovery.sendtargets.auth.authmethod", "CHAP", False),
                                        ("discovery.sendtargets.auth.username",
                                         chap.username, False),
                                        ("discovery.sendtargets.auth.password",
                                         chap.password, True)):
                adm.discoverydb_update(host, port, name, value, secret=secret)
            text = adm.discoverydb_discover(host, port, secrets=(chap.password,))
        finally:
            adm.discoverydb_delete(host, port)
    else:
        text = adm.discovery_sendtargets(host, port)
    given = format_portal(host, port)
    targets: dict[str, Target] = {}
    for rec in parse_portal_records(text):
        t = targets.setdefault(rec.iqn, Target(rec.iqn, rec.address, rec.port))
        t.advertised.append(rec.portal)
    notes = []
    for t in targets.values():
        if given in t.advertised:
            t.host, t.port = host, port
        elif _unreachable(t.host, t.port):
            why = ("its port is closed here" if t.host == host
                   else "a loopback or NAT address")
            t.note = (f"{t.iqn} advertises {', '.join(t.advertised)}, which cannot be reached "
                      f"from here ({why}): using {given}, the address "
                      "discovery answered on")
            notes.append(t.note)
            t.host, t.port = host, port
    return DiscoveryResult(given, list(targets.values()), notes)


@dataclass
class AttachResult:
    iqn: str
    portal: str
    role: str
    session: Session | None
    luns: list[Lun]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _set_chap(iqn: str, host: str, port: int, chap: Chap | None, mutual: Chap | None) -> None:
    if not chap:
        if mutual:
            raise ValueError("mutual CHAP needs the one-way CHAP user and secret too")
        return
    settings = [("node.session.auth.authmethod", "CHAP", False),
                ("node.session.auth.username", chap.username, False),
                ("node.session.auth.password", chap.password, True)]
    if mutual:
        settings += [("node.session.auth.username_in", mutual.username, False),
                     ("node.session.auth.password_in", mutual.password, True)]
    for name, value, secret in settings:
        adm.node_update(iqn, host, port, name, value, secret=secret)


def find_session(iqn: str, host: str | None = None, port: int | None = None) -> Session | None:
    for s in sessions.list_sessions():
        if s.target == iqn and (host is None or (s.address == host and s.port == port)):
            return s
    return None


def attach(host: str, iqn: str, role: str, *, port: int = DEFAULT_PORT, lun: int | None = None,
           chap: Chap | None = None, mutual: Chap | None = None) -> AttachResult:
    """Log in to ``iqn`` at ``host:port`` and give its LUNs (or only ``lun``) ``role``.

    SOURCE LUNs are made read-only in the kernel; TARGET LUNs are checked for
    SCSI-3 persistent reservations (``warnings``). A failed login leaves no node
    record behind; an existing session counts as attached (a note says so).
    """
    role = role.upper()
    if role not in roles.ROLES:
        raise ValueError(f"role must be SOURCE or TARGET, not {role!r}")
    ensure_iscsid()
    notes: list[str] = []
    existing = find_session(iqn, host, port)
    if existing is None:
        adm.node_new(iqn, host, port)
        try:
            _set_chap(iqn, host, port, chap, mutual)
            adm.node_update(iqn, host, port, "node.startup", "manual")
            adm.node_update(iqn, host, port, "node.session.timeo.replacement_timeout",
                            str(REPLACEMENT_TIMEOUT))
            adm.node_login(iqn, host, port,
                           secrets=[c.password for c in (chap, mutual) if c])
        except IscsiSessionExists:
            notes.append(f"already logged in to {iqn}: treated as attached")
        except IscsiTargetNotFound as e:
            adm.node_delete(iqn, host, port)
            if mutual and e.code == ISCSI_ERR_FATAL_LOGIN:
                err = IscsiAuthError(
                    f"login to {iqn} refused (iscsiadm exit 19)", code=e.code,
                    command=e.command, output=e.output)
                err.hint = ("with mutual CHAP this usually means the target's user or secret "
                            "(--mutual-user, --mutual-secret-file) is wrong; otherwise the "
                            "target is not offered to this initiator")
                raise err from e
            raise
        except (IscsiError, ValueError):
            adm.node_delete(iqn, host, port)
            raise
    else:
        notes.append(f"already logged in to {iqn} (session {existing.sid}): treated as attached")
    session = _scanned_session(iqn, host, port)
    if session is not None:
        set_recovery_timeout(session)
    luns = [x for x in (session.luns if session else []) if x.device]
    if lun is not None:
        chosen = [x for x in luns if x.lun == lun]
        if not chosen:
            raise IscsiTargetNotFound(f"{iqn} has no LUN {lun} with a disk (it has "
                                      f"{', '.join(str(x.lun) for x in luns) or 'none'})")
        others = [x for x in luns if x.lun != lun]
        if others:
            notes.append(f"LUN {', '.join(str(x.lun) for x in others)} of {iqn} attached "
                         "too, with no role (writable)")
        luns = chosen
    found = _disks_by_path()
    warnings = [w for x in luns for w in _apply_role(iqn, x, role, found.get(x.device))]
    return AttachResult(iqn, format_portal(host, port), role, session, luns, notes, warnings)


def set_recovery_timeout(session: Session, seconds: int = REPLACEMENT_TIMEOUT,
                         sys_root: str = "/sys") -> bool:
    """The running session's replacement timeout (sysfs ``recovery_tmo``, which the node
    record sets at login): also for a session that was logged in before. False when it
    cannot be set."""
    try:
        with open(os.path.join(sys_root, "class/iscsi_session", session.name,
                               "recovery_tmo"), "w") as f:
            f.write(str(seconds))
        return True
    except OSError:
        return False


def _scanned_session(iqn: str, host: str, port: int) -> Session | None:
    """The session after a synchronous LUN scan (iscsid's own scan after login runs in
    the background), once udev has made every LUN's device node and links."""
    session = find_session(iqn, host, port) or find_session(iqn)
    if session is None:
        return None
    adm.session_rescan(session.sid)
    sessions.settle()
    now = find_session(iqn, host, port) or find_session(iqn)
    sessions.wait_devices([x.device for x in (now.luns if now else []) if x.device])
    return find_session(iqn, host, port) or find_session(iqn)


def _disks_by_path() -> dict:
    """The disk inventory by /dev path, for serials and WWNs (empty if it cannot be read)."""
    try:
        return {d.path: d for d in list_disks()}
    except Exception:  # noqa: BLE001 - the inventory only adds identity
        return {}


def _apply_role(iqn: str, lun: Lun, role: str, disk=None) -> list[str]:
    assert lun.device
    parts = sessions.partitions_of(lun.device)
    roles.set_role(lun.key(iqn), role, iqn=iqn, lun=lun.lun, device=lun.device,
                   wwn=(disk.wwn if disk else None) or lun.wwid,
                   serial=disk.serial if disk else None,
                   by_id=disk.by_id if disk else None,
                   by_path=sorted(set(lun.by_path) | set(disk.by_path if disk else [])),
                   partitions=parts)
    lun.role = role
    if role == roles.SOURCE:
        roles.set_read_only([lun.device, *parts])
        return []
    warning = reservation_warning(lun.device)
    return [warning] if warning else []


def reapply_read_only() -> None:
    """Set SOURCE LUNs read-only again (after a rescan or a reconnect re-creates them)."""
    for s in sessions.list_sessions():
        for x in s.luns:
            if x.device and roles.role_of(x.key(s.target)) == roles.SOURCE:
                parts = sessions.partitions_of(x.device)
                roles.set_role(x.key(s.target), roles.SOURCE, device=x.device,
                               by_path=x.by_path, partitions=parts)
                roles.set_read_only([x.device, *parts])


@dataclass
class DetachResult:
    iqn: str
    sessions: list[int]
    devices: list[str]
    notes: list[str] = field(default_factory=list)


def detach(iqn: str, host: str | None = None, port: int | None = None) -> DetachResult:
    """Log out of ``iqn`` (every session, or the one at ``host:port``), delete its node
    records and forget the roles of its LUNs."""
    found = [s for s in sessions.list_sessions()
             if s.target == iqn and (host is None or (s.address == host and s.port == port))]
    records = [r for r in parse_portal_records(adm.node_list()) if r.iqn == iqn]
    if not found and not records:
        raise IscsiTargetNotFound(f"{iqn} is neither attached nor known here "
                                  "(rtk iscsi list shows what is attached)")
    notes = []
    if found:
        adm.node_logout(iqn, host, port)
    else:
        notes.append(f"{iqn} had no session; removed its node record")
    adm.node_delete(iqn, host, port)
    sessions.settle()
    roles.forget_where(lambda e: e.get("iqn") == iqn)
    left = find_session(iqn, host, port)
    if left:
        raise IscsiError(f"{iqn} is still logged in (session {left.sid}) after logout")
    return DetachResult(iqn, [s.sid for s in found],
                        [x.device for s in found for x in s.luns if x.device], notes)


def list_sessions() -> list[Session]:
    """Every session with its LUNs, their block devices and roles (after udev settles)."""
    sessions.settle()
    out = sessions.list_sessions()
    for s in out:
        for x in s.luns:
            x.role = roles.role_of(x.key(s.target))
    return out


def rescan(iqn: str | None = None) -> list[Session]:
    """Rescan every session (or those of ``iqn``) for new or resized LUNs."""
    sids = [s.sid for s in sessions.list_sessions() if iqn is None or s.target == iqn]
    if iqn and not sids:
        raise IscsiTargetNotFound(f"{iqn} is not attached")
    if iqn:
        for sid in sids:
            adm.session_rescan(sid)
    else:
        adm.session_rescan()
    sessions.settle()
    reapply_read_only()
    return list_sessions()


__all__ = ["Chap", "IscsiPortalUnreachable", "attach", "detach", "discover", "list_sessions",
           "rescan", "split_portal"]
