"""LVM's tools, wrapped once: the volume groups on given physical volumes activated and
deactivated, their logical volumes listed. Only the devices named are looked at
(``--devices``, LVM 2.03.12 and later): the live system's other disks stay untouched."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence

from toolkit.system import tools


def _devices(pvs: Sequence[str]) -> list[str]:
    return [a for pv in pvs for a in ("--devices", pv)]


def _report(tool: str, kind: str, pvs: Sequence[str], fields: str) -> list[dict]:
    """The rows of ``tool``'s (lvs, vgs) JSON report of ``kind`` ("lv", "vg") on ``pvs``."""
    p = tools.run([tool, *_devices(pvs), "--reportformat", "json", "--units", "b",
                   "-o", fields], timeout=120)
    return json.loads(p.stdout or "{}").get("report", [{}])[0].get(kind, [])


def logical_volumes(pvs: Sequence[str]) -> list[dict]:
    """``{"path", "vg", "lv", "active", "dm_uuid", "origin"}`` of each logical volume on
    ``pvs`` (``dm_uuid``: the device-mapper UUID LVM gives it when active, or None;
    ``origin``: the volume a snapshot is of, or None)."""
    rows = _report("lvs", "lv", pvs,
                   "lv_path,vg_name,lv_name,lv_active,vg_uuid,lv_uuid,origin")
    return [{"path": r.get("lv_path"), "vg": r.get("vg_name"), "lv": r.get("lv_name"),
             "active": r.get("lv_active") == "active",
             "dm_uuid": dm_uuid(r.get("vg_uuid"), r.get("lv_uuid")),
             "origin": r.get("origin") or None}
            for r in rows if r.get("lv_path")]


def snapshots(lvs: list[dict]) -> dict[str, list[str]]:
    """``{"vg/origin": ["vg/snapshot", ...]}`` of the rows of :func:`logical_volumes`."""
    found: dict[str, list[str]] = {}
    for v in lvs:
        if v.get("origin"):
            found.setdefault(f"{v['vg']}/{v['origin']}", []).append(f"{v['vg']}/{v['lv']}")
    return found


def dm_uuid(vg_uuid: str | None, lv_uuid: str | None) -> str | None:
    """``LVM-`` and both UUIDs without their dashes: the device-mapper UUID of an active
    logical volume (udev's ``/dev/disk/by-id/dm-uuid-...`` link)."""
    if not vg_uuid or not lv_uuid:
        return None
    return "LVM-" + vg_uuid.replace("-", "") + lv_uuid.replace("-", "")


def aliases(vg: str, lv: str, uuid: str | None = None) -> tuple[str, ...]:
    """The names an fstab (or a kernel command line) may give ``vg/lv`` besides
    ``/dev/VG/LV``: ``/dev/mapper/``, and udev's ``/dev/disk/by-id/dm-name-`` and
    ``dm-uuid-`` links."""
    name = dm_name(vg, lv)
    return (f"/dev/mapper/{name}", f"/dev/disk/by-id/dm-name-{name}",
            *((f"/dev/disk/by-id/dm-uuid-{uuid}",) if uuid else ()))


def missing_pvs(pvs: Sequence[str]) -> dict[str, int]:
    """``{vg: count}`` of the volume groups on ``pvs`` that need physical volumes which are
    not among ``pvs`` (the others are not looked at, so they count as missing)."""
    counts = {r.get("vg_name"): int(r.get("vg_missing_pv_count") or 0)
              for r in _report("vgs", "vg", pvs, "vg_name,vg_missing_pv_count")}
    return {vg: n for vg, n in counts.items() if vg and n}


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name LVM gives ``vg/lv`` (a dash in either doubled)."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def active_dm_names(sys_root: str = "/") -> dict[str, str]:
    """``{name: "/dev/dm-N"}`` of every device-mapper device the kernel has (from sysfs:
    the kernel's own list, whatever /dev/mapper holds)."""
    names = {}
    for f in glob.glob(f"{sys_root.rstrip('/')}/sys/block/dm-*/dm/name"):
        try:
            with open(f) as fh:
                names[fh.read().strip()] = "/dev/" + f.split("/")[-3]
        except OSError:
            continue
    return names


def underlying(dm_dev: str, sys_root: str = "/") -> list[str]:
    """The devices a device-mapper device (``/dev/dm-N``) is made of (sysfs ``slaves``:
    the partitions or disks holding an active logical volume), as ``/dev/NAME``."""
    d = f"{sys_root.rstrip('/')}/sys/block/{dm_dev.removeprefix('/dev/')}/slaves"
    try:
        return [f"/dev/{n}" for n in sorted(os.listdir(d))]
    except OSError:
        return []


def activate(pvs: Sequence[str], vgs: Sequence[str]) -> None:
    """``vgchange -ay`` of the volume groups ``vgs`` on ``pvs`` (on failure some of their
    logical volumes may be active all the same: deactivate them)."""
    tools.run(["vgchange", "-ay", *_devices(pvs), *vgs], timeout=300)


def deactivate(pvs: Sequence[str], vgs: Sequence[str]) -> None:
    """``vgchange -an`` of ``vgs`` (their logical volumes unmounted first; a snapshot's
    takes a minute under emulation, hence the long limit)."""
    tools.run(["vgchange", "-an", *_devices(pvs), *vgs], timeout=600)
