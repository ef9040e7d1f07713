"""One record of what names a disk (or a partition of it), for reports, the menu and
unattended runs: :func:`identity_of` builds it, :meth:`DiskIdentity.to_dict` is what the
JSON reports hold, :meth:`DiskIdentity.label` the one line of a message; :func:`wwn_key`
is the one form two WWNs are compared in (a consent, a selector, the disk found).

Everything a person checks before a write, nothing else: kernel name and path, model,
vendor, serial, WWN, transport, the by-id and by-path names, the iSCSI target, portal
and LUN, a loop device's backing file, size and sector size, and what is on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from toolkit.disks.inventory import Disk, Partition
from toolkit.units import human_size


@dataclass(frozen=True)
class DiskIdentity:
    """``path``: as given (a by-id link, say); ``node``: /dev/NAME of the disk or partition.
    ``iscsi``: ``{"target", "portal", "lun"}``; ``partition`` (of a partition only):
    ``{"disk", "number", "start"}``; ``partitions``: the disk's, with filesystem and label;
    ``cluster``: the disk's partition table as read from it when the inventory was taken
    (:meth:`toolkit.disks.cluster.ClusterIdentity.to_dict`: disk GUID or MBR signature,
    CSV IDs), None when it could not be read."""

    name: str
    path: str
    node: str
    kind: str  # "disk" or "partition"
    size: int
    logical_sector_size: int
    model: str | None = None
    vendor: str | None = None
    serial: str | None = None
    wwn: str | None = None
    transport: str = "other"
    by_id: list[str] = field(default_factory=list)
    by_path: list[str] = field(default_factory=list)
    iscsi: dict | None = None
    backing_file: str | None = None
    fstype: str | None = None  # a filesystem on the whole disk (no partition table)
    fs_label: str | None = None
    partitions: list[dict] = field(default_factory=list)
    partition: dict | None = None
    cluster: dict | None = None

    @property
    def identity(self) -> str | None:
        """The stable identity a person or a script confirms a write with."""
        return self.serial or self.wwn

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """One line for messages: ``/dev/sdb (ST4000NM, serial Z1Z2, 4.0 TB)``."""
        bits = [self.model or self.transport]
        if self.identity:
            bits.append(f"serial {self.identity}")
        elif self.backing_file:
            bits.append(f"file {self.backing_file}")
        bits.append(human_size(self.size))
        return f"{self.node} ({', '.join(bits)})"

    def summary(self) -> str:
        """The kernel name and what tells it apart: ``sdb (iscsi, 33.6 MB, serial X, wwn Y,
        IQN LUN 1)`` (lists of disks in unattended messages)."""
        ids = [f"serial {self.serial}" if self.serial else "",
               f"wwn {self.wwn}" if self.wwn else "",
               f"{self.iscsi['target']} LUN {self.iscsi['lun']}" if self.iscsi else ""]
        return (f"{self.name} ("
                f"{', '.join([self.transport, human_size(self.size), *filter(None, ids)])})")


def identity_of(disk: Disk, partition: Partition | None = None, *, path: str | None = None,
                size: int | None = None, sector_size: int | None = None) -> DiskIdentity:
    """The identity of ``disk`` (or of its ``partition``); ``size`` and ``sector_size``
    default to the inventory's (a resolved device passes its ioctls' figures)."""
    node = partition.path if partition else disk.path
    if size is None:
        size = partition.size if partition else disk.size
    return DiskIdentity(
        name=partition.name if partition else disk.name, path=path or node, node=node,
        kind="partition" if partition else "disk", size=size,
        logical_sector_size=sector_size or disk.logical_sector_size,
        model=disk.model, vendor=disk.vendor, serial=disk.serial, wwn=disk.wwn,
        transport=disk.transport, by_id=list(disk.by_id), by_path=list(disk.by_path),
        iscsi={"target": disk.iscsi.target, "portal": disk.iscsi.portal,
               "lun": disk.iscsi.lun} if disk.iscsi else None,
        backing_file=disk.backing_file, fstype=disk.fstype, fs_label=disk.label,
        partitions=[{"number": p.number, "name": p.name, "size": p.size, "fstype": p.fstype,
                     "label": p.label} for p in disk.partitions],
        partition={"disk": disk.path, "number": partition.number, "start": partition.start}
        if partition else None,
        cluster=disk.cluster.to_dict() if disk.cluster is not None else None,
    )


def wwn_key(text: str | None) -> str:
    """A WWN as it is compared: lower case, without ``0x``, ``naa.``, ``eui.`` or
    ``wwn-0x`` (``0x5000C500A1B2C3D4``, ``naa.5000c500a1b2c3d4``: the same disk)."""
    t = (text or "").strip().lower()
    for prefix in ("0x", "naa.", "eui.", "wwn-0x"):
        t = t.removeprefix(prefix)
    return t
