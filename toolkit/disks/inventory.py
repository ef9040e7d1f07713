"""The disk inventory: every block device with its identity, transport and use.

:func:`list_disks` probes the running system (:mod:`toolkit.disks.probe`);
:func:`disks_from_probe` is the pure part that tests feed with probes captured
on real machines. Nothing here writes to a disk.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from toolkit.disks.mounts import parse_mountinfo, parse_swaps
from toolkit.disks.sysfs import wwn_of

if TYPE_CHECKING:
    from toolkit.disks.cluster import ClusterIdentity

# live-boot mounts the medium it booted from here (older releases: /lib/live/...).
LIVE_MEDIUM_MOUNTS = ("/run/live/medium", "/lib/live/mount/medium")


@dataclass
class IscsiLocation:
    target: str
    portal: str  # "address:port"
    lun: int
    session: str


@dataclass
class Partition:
    name: str
    path: str
    number: int
    start: int  # bytes
    size: int  # bytes
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    partlabel: str | None = None
    mountpoints: list[str] = field(default_factory=list)
    swap: bool = False
    holders: list[str] = field(default_factory=list)


@dataclass
class Disk:
    name: str
    path: str
    size: int  # bytes
    logical_sector_size: int
    physical_sector_size: int
    transport: str  # sata, sas, nvme, usb, iscsi, virtio, fc, scsi, loop, dm, md, cdrom, floppy
    model: str | None = None
    vendor: str | None = None
    serial: str | None = None
    wwn: str | None = None
    read_only: bool = False
    removable: bool = False
    rotational: bool = False
    partition_table: str | None = None  # gpt, dos
    fstype: str | None = None  # a filesystem on the whole disk (no partition table)
    label: str | None = None
    by_id: list[str] = field(default_factory=list)
    by_path: list[str] = field(default_factory=list)
    iscsi: IscsiLocation | None = None
    backing_file: str | None = None  # loop devices
    partitions: list[Partition] = field(default_factory=list)
    mountpoints: list[str] = field(default_factory=list)
    swap: bool = False
    holders: list[str] = field(default_factory=list)
    boot_medium: bool = False
    role: str | None = None  # SOURCE or TARGET, for disks the iSCSI Manager attached
    # the partition table read from the disk: GPT disk GUID or MBR signature, CSV IDs
    # (toolkit.disks.cluster); None when not read (a replayed probe) or unreadable
    cluster: ClusterIdentity | None = None

    @property
    def in_use(self) -> list[str]:
        """Why writing to this disk would hurt something, most serious first."""
        reasons = []
        if self.boot_medium:
            reasons.append("boot medium of this live system")
        reasons += [f"mounted at {m}" for m in self.mountpoints]
        if self.swap:
            reasons.append("in use as swap")
        if self.holders:
            reasons.append("held by " + ", ".join(self.holders))
        for p in self.partitions:
            reasons += [f"{p.name} mounted at {m}" for m in p.mountpoints]
            if p.swap:
                reasons.append(f"{p.name} in use as swap")
            if p.holders:
                reasons.append(f"{p.name} held by " + ", ".join(p.holders))
        return reasons

    @property
    def identity(self) -> str | None:
        """The stable identity a person or a script confirms a write with."""
        return self.serial or self.wwn

    def to_dict(self) -> dict:
        d = asdict(self)
        d["in_use"] = self.in_use
        return d


class Inventory(list):
    """The disks (a list of :class:`Disk`) and ``warnings``: what the probe could not
    find out, as sentences for a person ("blkid is not installed (util-linux):
    filesystems and labels are not shown"), shown by ``rtk disks`` and the menu."""

    def __init__(self, disks=(), warnings: list[str] | None = None):
        super().__init__(disks)
        self.warnings: list[str] = list(warnings or [])


def list_disks() -> Inventory:
    """The disks of this machine, with the roles the iSCSI Manager gave them and the
    cluster identity read from each (two or three reads per disk; none from a disk that
    cannot be read)."""
    from toolkit.disks import cluster, roles
    from toolkit.disks.probe import probe

    found = disks_from_probe(probe())
    for d in found:
        d.role = roles.role_of(d)
        d.cluster = cluster.of_disk(d)
    cluster.note_twins(found)  # two LUNs of one disk GUID: said on both
    return found


def find_disk(disks: list[Disk], path: str) -> Disk | None:
    """The disk whose node is ``path`` (or a /dev/disk/by-* link to it)."""
    name = os.path.basename(os.path.realpath(path)) if os.path.exists(path) else None
    for d in disks:
        if path == d.path or path in d.by_id or path in d.by_path or d.name == name:
            return d
    return None


# --- pure part ---------------------------------------------------------------

_SCSI_ADDR = re.compile(r"/(\d+):(\d+):(\d+):(\d+)/block/")


def _transport(name: str, entry: dict) -> str:
    sp = entry["sys_path"]
    udev_bus = entry["udev"].get("ID_BUS")
    if name.startswith("loop"):
        return "loop"
    if name.startswith("dm-"):
        return "dm"
    if name.startswith("md"):
        return "md"
    if name.startswith("sr"):
        return "cdrom"
    if name.startswith("fd"):
        return "floppy"
    if "/session" in sp:
        return "iscsi"
    if "/usb" in sp or udev_bus == "usb":
        return "usb"
    if "/nvme" in sp:
        return "nvme"
    if "/rport-" in sp:
        return "fc"
    if "/ata" in sp or udev_bus == "ata":
        return "sata"
    if "/end_device-" in sp or "/port-" in sp:
        return "sas"
    if "/virtio" in sp:
        return "virtio"
    if "/mmc" in sp:
        return "mmc"
    return "scsi" if _SCSI_ADDR.search(sp) else "other"


def _first(*values: str | None) -> str | None:
    for v in values:
        if v and v.strip():
            return v.strip()
    return None


def _udev_decode(value: str | None) -> str | None:
    r"""udev's *_ENC values escape unsafe bytes as \xHH ("Cluster\x20Vol1")."""
    if value is None:
        return None
    raw = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                 value.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "replace")


def _fs_info(entry: dict, blkid: dict) -> dict[str, str | None]:
    u = entry["udev"]
    b = blkid.get(f"/dev/{entry['name']}", {})
    # ID_FS_LABEL has spaces turned into "_": the exact label is ID_FS_LABEL_ENC.
    label = _udev_decode(u.get("ID_FS_LABEL_ENC")) or u.get("ID_FS_LABEL")
    return {
        "fstype": _first(u.get("ID_FS_TYPE"), b.get("TYPE")),
        "label": _first(label, b.get("LABEL")),
        "uuid": _first(u.get("ID_FS_UUID"), b.get("UUID")),
        "partlabel": _first(_udev_decode(u.get("ID_PART_ENTRY_NAME")), b.get("PART_ENTRY_NAME")),
        "pttype": _first(u.get("ID_PART_TABLE_TYPE"), b.get("PTTYPE")),
    }


@dataclass
class _Facts:
    """What a probe says about every device, indexed for building the inventory."""

    block: dict[str, dict]
    blkid: dict
    by_links: dict
    mounts_by_dev: dict[str, list[str]]
    swaps: set[str]
    medium_devs: set[str]  # devices mounted where live-boot mounts its medium
    sessions: dict

    @classmethod
    def of(cls, probe: dict) -> _Facts:
        mounts = parse_mountinfo(probe.get("mountinfo", ""))
        by_dev: dict[str, list[str]] = {}
        for m in mounts:
            by_dev.setdefault(m.devno, []).append(m.mountpoint)
        return cls(block={n: {**e, "name": n} for n, e in probe["block"].items()},
                   blkid=probe.get("blkid", {}), by_links=probe.get("by_links", {}),
                   mounts_by_dev=by_dev,
                   swaps={os.path.basename(s) for s in parse_swaps(probe.get("swaps", ""))},
                   medium_devs={m.devno for m in mounts if m.mountpoint in LIVE_MEDIUM_MOUNTS},
                   sessions=probe.get("iscsi_sessions", {}))

    def links(self, entry: dict) -> list[str]:
        return sorted(set(entry.get("devlinks", [])) | set(self.by_links.get(entry["name"], [])))

    def mountpoints(self, entry: dict) -> list[str]:
        return self.mounts_by_dev.get(entry.get("dev") or "", [])


def disks_from_probe(probe: dict) -> Inventory:
    """Build the inventory from a probe (see :func:`toolkit.disks.probe.probe`)."""
    facts = _Facts.of(probe)
    whole = (_disk(e, facts) for e in facts.block.values() if not e["partition"])
    disks = [d for d in whole if d is not None]
    by_name = {d.name: d for d in disks}
    for e in facts.block.values():
        parent = by_name.get(e.get("parent") or "")
        if e["partition"] and parent is not None:
            parent.partitions.append(_partition(e, facts))
            if e.get("dev") in facts.medium_devs:
                parent.boot_medium = True
    # A loop device whose backing file lives on the boot medium is part of it
    # (live-boot's squashfs), and so is one mounted from a medium partition.
    medium_mounts = [mp for d in disks if d.boot_medium for mp in _all_mountpoints(d)]
    for d in disks:
        d.partitions.sort(key=lambda p: p.number)
        if d.backing_file and any(d.backing_file.startswith(mp + "/") for mp in medium_mounts):
            d.boot_medium = True
    return Inventory(sorted(disks, key=_sort_key), probe.get("warnings", []))


def _disk(e: dict, facts: _Facts) -> Disk | None:
    """The whole disk of one probe entry; None for an empty loop device or CD tray."""
    name, a, u = e["name"], e["attrs"], e["udev"]
    size = int(a.get("size", "0")) * 512  # sysfs counts 512-byte units, always
    if size == 0:
        return None
    fs = _fs_info(e, facts.blkid)
    all_links = facts.links(e)
    disk = Disk(
        name=name,
        path=f"/dev/{name}",
        size=size,
        logical_sector_size=int(a.get("queue/logical_block_size", "512")),
        physical_sector_size=int(a.get("queue/physical_block_size", "512")),
        transport=_transport(name, e),
        model=_first(a.get("device/model"), u.get("ID_MODEL", "").replace("_", " ")),
        vendor=_vendor(a.get("device/vendor"), u.get("ID_VENDOR")),
        serial=_first(u.get("ID_SCSI_SERIAL"), u.get("ID_SERIAL_SHORT"), a.get("vpd_serial"),
                      a.get("device/serial"), a.get("serial")),
        wwn=_first(u.get("ID_WWN_WITH_EXTENSION"), u.get("ID_WWN"), wwn_of(a.get("wwid")),
                   wwn_of(a.get("device/wwid"))),
        read_only=a.get("ro") == "1",
        removable=a.get("removable") == "1",
        rotational=a.get("queue/rotational") == "1",
        partition_table=fs["pttype"],
        fstype=fs["fstype"],
        label=fs["label"],
        by_id=[x for x in all_links if x.startswith("/dev/disk/by-id/")],
        by_path=[x for x in all_links if x.startswith("/dev/disk/by-path/")],
        backing_file=a.get("loop/backing_file"),
        mountpoints=facts.mountpoints(e),
        swap=name in facts.swaps,
        holders=e["holders"],
        boot_medium=(e.get("dev") in facts.medium_devs),
    )
    if disk.transport == "iscsi":
        disk.iscsi = _iscsi_location(e["sys_path"], facts.sessions)
    return disk


def _iscsi_location(sys_path: str, sessions: dict) -> IscsiLocation | None:
    """Target, portal and LUN of an iSCSI disk, from its sysfs path and the sessions."""
    # (imported here: the iSCSI package loads its manager, which `rtk restore` never needs)
    from toolkit.iscsi.portal import format_portal

    m = _SCSI_ADDR.search(sys_path)
    session = re.search(r"/(session\d+)/", sys_path)
    if not (m and session):
        return None
    s = sessions.get(session.group(1), {})
    return IscsiLocation(target=s.get("targetname") or "?",
                         portal=format_portal(s.get("address"), s.get("port")),
                         lun=int(m.group(4)), session=session.group(1))


def _partition(e: dict, facts: _Facts) -> Partition:
    a = e["attrs"]
    fs = _fs_info(e, facts.blkid)
    return Partition(
        name=e["name"],
        path=f"/dev/{e['name']}",
        number=int(a.get("partition", "0")),
        start=int(a.get("start", "0")) * 512,
        size=int(a.get("size", "0")) * 512,
        fstype=fs["fstype"],
        label=fs["label"],
        uuid=fs["uuid"],
        partlabel=fs["partlabel"],
        mountpoints=facts.mountpoints(e),
        swap=e["name"] in facts.swaps,
        holders=e["holders"],
    )


def _all_mountpoints(d: Disk) -> list[str]:
    return d.mountpoints + [m for p in d.partitions for m in p.mountpoints]


def _sort_key(d: Disk) -> tuple:
    order = {"loop": 3, "cdrom": 2, "floppy": 2, "dm": 1, "md": 1}
    num = re.findall(r"\d+", d.name)
    return (order.get(d.transport, 0), re.sub(r"\d+", "", d.name), [int(n) for n in num])


def _vendor(sysfs_vendor: str | None, udev_vendor: str | None) -> str | None:
    """SCSI/ATA vendor strings are names; virtio and NVMe give a PCI id (0x1af4): skip it."""
    v = _first(sysfs_vendor, udev_vendor)
    return None if v is None or re.fullmatch(r"0x[0-9a-fA-F]{4}", v) else v
