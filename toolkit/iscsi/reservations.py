"""SCSI-3 persistent reservations: does a cluster node still hold this disk?

A SAN LUN taken from a failed cluster (Windows failover cluster, Pacemaker)
often still carries the nodes' registration keys and a reservation. Writing
to it may then fail half-way, or worse, a surviving node may still be using
it. ``sg_persist`` (sg3-utils) reads both.
"""

from __future__ import annotations

from toolkit.iscsi.parse import Reservation, parse_pr_keys, parse_pr_reservation
from toolkit.system import tools


def _sg_persist(device: str, what: str) -> str | None:
    try:
        proc = tools.run(["sg_persist", "--in", what, device], check=False, timeout=30)
    except tools.ToolError:  # not installed (logged), or no answer
        return None
    return proc.stdout if proc.returncode == 0 else None


def read_reservation(device: str) -> Reservation | None:
    """The registered keys and the reservation of ``device``; None when the device
    does not answer PERSISTENT RESERVE IN (not supported, or sg_persist missing)."""
    keys = _sg_persist(device, "--read-keys")
    if keys is None:
        return None
    holder, rtype = parse_pr_reservation(_sg_persist(device, "--read-reservation") or "")
    return Reservation(keys=parse_pr_keys(keys), holder=holder, type=rtype)


def reservation_warning(device: str, res: Reservation | None = None) -> str | None:
    """A warning for a TARGET disk that a cluster node still holds, else None."""
    res = read_reservation(device) if res is None else res
    if res is None or not res.held:
        return None
    held = (f"reserved by key {res.holder} ({res.type})" if res.holder
            else "no reservation held")
    return (f"{device} carries SCSI-3 persistent reservation keys "
            f"({', '.join(res.keys) or 'none'}), {held}: a cluster node may still use this "
            "disk. Make sure every cluster node is down or has released it before writing "
            "(sg_persist --out --clear or the storage's management).")
