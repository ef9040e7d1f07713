"""LVM's tools, wrapped once: the volume groups on given physical volumes activated and
deactivated, their logical volumes listed. Only the devices named are looked at
(``--devices``, LVM 2.03.12 and later): the live system's other disks stay untouched."""

from __future__ import annotations

import json
from collections.abc import Sequence

from toolkit.system import tools


def _devices(pvs: Sequence[str]) -> list[str]:
    return [a for pv in pvs for a in ("--devices", pv)]


def logical_volumes(pvs: Sequence[str]) -> list[dict]:
    """``{"path", "vg", "lv", "active"}`` of each logical volume on ``pvs``."""
    p = tools.run(["lvs", *_devices(pvs), "--reportformat", "json", "--units", "b",
                   "-o", "lv_path,vg_name,lv_name,lv_active"], timeout=120)
    rows = json.loads(p.stdout or "{}").get("report", [{}])[0].get("lv", [])
    return [{"path": r.get("lv_path"), "vg": r.get("vg_name"), "lv": r.get("lv_name"),
             "active": r.get("lv_active") == "active"} for r in rows if r.get("lv_path")]


def activate(pvs: Sequence[str], vgs: Sequence[str]) -> None:
    """``vgchange -ay`` of the volume groups ``vgs`` on ``pvs``."""
    tools.run(["vgchange", "-ay", *_devices(pvs), *vgs], timeout=120)


def deactivate(pvs: Sequence[str], vgs: Sequence[str]) -> None:
    """``vgchange -an`` of ``vgs`` (their logical volumes unmounted first)."""
    tools.run(["vgchange", "-an", *_devices(pvs), *vgs], timeout=120)
