"""Collect the raw facts about block devices, as plain JSON-able data.

This is the only module of the disk inventory that does I/O. It reads sysfs,
the udev database through pyudev (absent on hosts without a udev daemon: then
``blkid -p``, :mod:`toolkit.system.blkid`, fills in filesystem types and
labels), /proc/self/mountinfo and /proc/swaps, and the iSCSI session classes.
What it could not find out, and why, is in the probe's ``warnings`` (a person's
sentences: "blkid is not installed (util-linux): filesystems and labels are not
shown"), which the inventory carries to ``rtk disks`` and the menu.
:mod:`toolkit.disks.inventory` turns the result into
:class:`~toolkit.disks.inventory.Disk` objects without touching the system, so a probe
captured on a real machine (``rtk disks --dump-probe``) can be replayed in tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from toolkit.system import blkid, tools

PROBE_FORMAT = 1
UDEV_DATABASE = "/run/udev/data"  # udevd's database: there only while udevd runs

# Kernel block devices that are never disks a technician works with.
_SKIP = re.compile(r"^(ram|zram|nbd)\d+$")

_DISK_ATTRS = (
    "size",
    "ro",
    "removable",
    "queue/logical_block_size",
    "queue/physical_block_size",
    "queue/rotational",
    "device/model",
    "device/vendor",
    "device/serial",
    "device/wwid",
    "device/transport",
    "wwid",
    "serial",
    "loop/backing_file",
    "dm/name",
)
_PART_ATTRS = ("size", "ro", "partition", "start")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _vpd_serial(path: Path) -> str | None:
    """Unit serial number from SCSI VPD page 0x80 (byte 3 = length, data from 4)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) < 4:
        return None
    return raw[4 : 4 + raw[3]].decode("ascii", "replace").strip(" \x00") or None


def _udev(sys_path: str) -> tuple[dict[str, str], list[str]]:
    """udev properties and /dev symlinks of a device (empty without a udev daemon)."""
    try:
        import pyudev

        dev = pyudev.Devices.from_sys_path(pyudev.Context(), sys_path)
        return dict(dev.properties), sorted(dev.device_links)
    except Exception:  # noqa: BLE001 - no libudev, vanished device: sysfs still answers
        return {}, []


def _blkid(paths: list[str], warnings: list[str]) -> dict[str, dict[str, str]]:
    """Low-level probe (``blkid -p``) of devices, keyed by device path; what a person
    must know about it (blkid missing) appended to ``warnings``.

    One call per device: given several, ``blkid -p`` stops at the first one in
    which it finds nothing (exit 2), and the devices after it go unprobed.
    Output sample (``-o export``)::

        DEVNAME=/dev/loop0p2
        LABEL=Vol1
        TYPE=ntfs
    """
    out: dict[str, dict[str, str]] = {}
    for path in paths:
        try:
            found = blkid.probe(path)
        except tools.ToolNotInstalled as e:  # without udev nor blkid: no filesystems
            warnings.append(f"{e}: filesystems and labels are not shown")
            break
        except tools.ToolError:  # no answer from this device: the next one
            continue
        if found:
            out[path] = found
    return out


def _iscsi_sessions(sys_root: Path) -> dict[str, dict[str, str | None]]:
    sessions = {}
    for sdir in sorted((sys_root / "class/iscsi_session").glob("session*")):
        name = sdir.name
        conn = sys_root / "class/iscsi_connection" / f"connection{name[7:]}:0"
        sessions[name] = {
            "targetname": _read(sdir / "targetname"),
            "address": _read(conn / "persistent_address") or _read(conn / "address"),
            "port": _read(conn / "persistent_port") or _read(conn / "port"),
        }
    return sessions


def probe() -> dict:
    """Gather everything :func:`toolkit.disks.inventory.disks_from_probe` needs."""
    sys_root = Path("/sys")
    udev_db = Path(UDEV_DATABASE).is_dir()
    block: dict[str, dict] = {}
    for entry in sorted((sys_root / "class/block").iterdir()):
        name = entry.name
        if _SKIP.match(name):
            continue
        real = entry.resolve()
        is_part = (real / "partition").exists()
        attrs = {a: _read(real / a) for a in (_PART_ATTRS if is_part else _DISK_ATTRS)}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if not is_part:
            vpd = _vpd_serial(real / "device/vpd_pg80")
            if vpd:
                attrs["vpd_serial"] = vpd
        props, links = _udev(str(real)) if udev_db else ({}, [])
        block[name] = {
            "sys_path": str(real),
            "partition": is_part,
            "parent": real.parent.name if is_part else None,
            "dev": _read(real / "dev"),
            "attrs": attrs,
            "udev": props,
            "devlinks": links,
            "holders": sorted(p.name for p in (real / "holders").glob("*")),
        }
    blkid, warnings = {}, []
    if not udev_db:
        paths = [f"/dev/{n}" for n, d in block.items() if d["attrs"].get("size", "0") != "0"]
        blkid = _blkid(paths, warnings)
    return {
        "format": PROBE_FORMAT,
        "warnings": warnings,
        "udev_database": udev_db,
        "block": block,
        "blkid": blkid,
        "iscsi_sessions": _iscsi_sessions(sys_root),
        "mountinfo": _read(Path("/proc/self/mountinfo")) or "",
        "swaps": _read(Path("/proc/swaps")) or "",
        "by_links": _dev_disk_links(Path("/dev/disk")),
    }


def _dev_disk_links(base: Path) -> dict[str, list[str]]:
    """/dev/disk/by-* symlinks per device name (what udev made, if anything)."""
    out: dict[str, list[str]] = {}
    if not base.is_dir():
        return out
    for kind in sorted(os.listdir(base)):
        for link in sorted((base / kind).glob("*")):
            target = os.path.basename(os.path.realpath(link))
            out.setdefault(target, []).append(f"/dev/disk/{kind}/{link.name}")
    return out
