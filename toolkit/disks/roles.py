"""Roles of attached disks: SOURCE (a backup snapshot, never written) or TARGET.

A small registry persisted as JSON in ``$RTK_RUN_DIR/roles.json`` (default
``/run/rtk``: it lasts as long as this boot, like the sessions it describes).
An entry is keyed by its stable identity, ``IQN:LUN`` for an iSCSI LUN (or
the serial/WWN of any other disk), and records the disk's serial, WWN,
device node and by-path names, so that :func:`role_of` recognises the disk by
any of them and :func:`source_keys` gives the check of a write target
(:func:`toolkit.disks.eligibility.writable_problems` ``source_role``) every name of
every SOURCE disk.

SOURCE disks are also set read-only in the kernel (:func:`set_read_only`, the
``blockdev --setro`` ioctl) on the whole disk and its partitions, so even a
shell command cannot write to them.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
from collections.abc import Iterable
from typing import Any

from toolkit.atomic import write_atomic

SOURCE = "SOURCE"
TARGET = "TARGET"
ROLES = (SOURCE, TARGET)
BLKROSET = 0x125D
BLKROGET = 0x125E


def registry_path() -> str:
    return os.path.join(os.environ.get("RTK_RUN_DIR", "/run/rtk"), "roles.json")


def _load() -> dict[str, dict]:
    try:
        with open(registry_path()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(data: dict[str, dict]) -> None:
    path = registry_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def _names(entry: dict) -> set[str]:
    """Every name an entry's disk goes by."""
    names = {entry.get("key"), entry.get("serial"), entry.get("wwn"), entry.get("device")}
    dev = entry.get("device")
    if dev:
        names.add(os.path.basename(dev))
    names.update(entry.get("by_path") or [])
    names.update(entry.get("by_id") or [])
    names.update(entry.get("partitions") or [])
    return {n for n in names if n}


def _identity(disk: Any) -> dict:
    """The identity fields of a Disk (toolkit.disks), a Lun-like dict, or a string key."""
    if isinstance(disk, str):
        return {"key": disk}
    if isinstance(disk, dict):
        return dict(disk)
    ident: dict = {"serial": getattr(disk, "serial", None), "wwn": getattr(disk, "wwn", None),
                   "device": getattr(disk, "path", None),
                   "by_path": list(getattr(disk, "by_path", []) or []),
                   "by_id": list(getattr(disk, "by_id", []) or [])}
    iscsi = getattr(disk, "iscsi", None)
    if iscsi:
        ident.update(key=f"{iscsi.target}:{iscsi.lun}", iqn=iscsi.target, lun=iscsi.lun)
    else:
        ident["key"] = ident["serial"] or ident["wwn"] or ident["device"]
    return ident


def _find(data: dict[str, dict], ident: dict) -> str | None:
    if ident.get("key") in data:
        return ident["key"]
    wanted = _names(ident)
    for key, entry in data.items():
        if wanted & _names(entry):
            return key
    return None


def set_role(disk: Any, role: str, **identity: Any) -> dict:
    """Record ``role`` for ``disk`` (a Disk, an identity dict or a key string;
    ``identity`` adds or overrides fields: iqn, lun, serial, wwn, device, by_path).
    Returns the stored entry."""
    role = role.upper()
    if role not in ROLES:
        raise ValueError(f"role must be SOURCE or TARGET, not {role!r}")
    ident = {**_identity(disk), **{k: v for k, v in identity.items() if v is not None}}
    if not ident.get("key"):
        raise ValueError("a disk needs a key (IQN:LUN, serial, WWN or device) to get a role")
    data = _load()
    old = _find(data, ident)
    entry = {**(data.pop(old) if old else {}), **ident, "role": role}
    data[entry["key"]] = entry
    _save(data)
    return entry


def role_of(disk: Any) -> str | None:
    """SOURCE, TARGET or None, for a Disk, an identity dict, or any one of its names."""
    ident = _identity(disk)
    data = _load()
    key = _find(data, ident)
    if key is None and isinstance(disk, str):
        key = next((k for k, e in data.items() if disk in _names(e)), None)
    return data[key]["role"] if key else None


def entries() -> dict[str, dict]:
    return _load()


def source_keys() -> frozenset[str]:
    """Every name (IQN:LUN, serial, WWN, /dev node, kernel name, by-path, by-id,
    partitions) of every SOURCE disk: ``writable_problems(target, source_keys())``."""
    out: set[str] = set()
    for entry in _load().values():
        if entry.get("role") == SOURCE:
            out |= _names(entry)
    return frozenset(out)


def forget(disk: Any) -> bool:
    """Drop the entry of ``disk`` (Disk, dict, key or any name); True if there was one."""
    data = _load()
    key = _find(data, _identity(disk))
    if key is None and isinstance(disk, str):
        key = next((k for k, e in data.items() if disk in _names(e)), None)
    if key is None:
        return False
    del data[key]
    _save(data)
    return True


def forget_where(predicate) -> list[str]:
    """Drop every entry for which ``predicate(entry)`` is true; returns their keys."""
    data = _load()
    gone = [k for k, e in data.items() if predicate(e)]
    for k in gone:
        del data[k]
    if gone:
        _save(data)
    return gone


# --- the kernel's read-only flag ---------------------------------------------

def set_read_only(devices: Iterable[str], read_only: bool = True) -> None:
    """BLKROSET on each device (``blockdev --setro``): the kernel refuses writes with EPERM."""
    for dev in devices:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1 if read_only else 0))
        finally:
            os.close(fd)


def is_read_only(device: str) -> bool:
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, BLKROGET, b"\0" * 4))[0] != 0
    finally:
        os.close(fd)
