"""Cluster disk identity: what names a disk (and its volumes) the way Windows, Failover
Cluster Manager and the backup appliance do, read from the disk itself.

A Windows cluster disk is known by its partition table's identity (the "Disk ID" of
diskpart and of the cluster's Physical Disk resource: the GPT disk GUID, or the MBR
disk signature), and a Cluster Shared Volume by that identity and the byte offset of
its partition: ``CSV ID: 41a4e9d6-472e-4777-ad08-953687110317:135266304``, the form
"ID : PARTITIONOFFSET, the offset in decimal" of MS-CMRP 3.1.4.3.7.17
(CLUSCTL_CLUSTER_GET_SHARED_VOLUME_ID, example ``c12fde64-...-11f13ea99a31:65536``).
An MBR disk's CSV ID here is its signature as diskpart's ``uniqueid disk`` gives it
(a DWORD in hex, 8 digits), a colon and the offset: ``5F1B2C36:1048576`` (Windows keys
an MBR cluster disk by that DWORD, the Physical Disk resource's DiskSignature).

:func:`of_disk` reads it for the inventory (``Disk.cluster``; nothing when the disk
cannot be read: offline, no medium, a path down); :func:`read_identity` for any
device or image. :class:`ClusterIdentity` has a one-line text form (:meth:`line`,
:meth:`volumes_line`) and a JSON form (:meth:`to_dict`, :func:`from_dict`).
:func:`compare` is the plain statement before a copy (:func:`comparison` with its
verdict, for reports; made by :mod:`toolkit.disks.cluster_compare`). A partition that
holds no volume a person names (reserved, EFI, recovery, metadata, LDM) has no CSV ID.
:func:`note_twins` notes on the inventory's disks that share a disk GUID without being
one LUN that they are not one disk (a clone, a snapshot).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from toolkit.disks import ptable
from toolkit.units import human_size

if TYPE_CHECKING:
    from toolkit.disks.inventory import Disk

READ_TIMEOUT = 5.0  # seconds: a disk that does not answer by then is shown without identity
# SCSI device states in which a read would wait or fail (drivers/scsi/scsi_sysfs.c)
_NO_IO_STATES = frozenset({"blocked", "transport-offline", "offline", "created-blocked",
                           "quiesce", "cancel", "deleted"})
_NOT_READ = frozenset({"cdrom", "floppy"})
# partitions that are no volume a person names (shown in the table, not in summaries) and
# have no CSV ID: a dynamic disk's LDM partition holds volumes of its own, no cluster's
_NOT_VOLUMES = frozenset({"Microsoft reserved", "EFI System", "Windows Recovery",
                          "Cluster metadata", "Windows LDM metadata", "BIOS boot",
                          "Linux swap", "Extended", "Extended (LBA)", "Linux extended",
                          "GPT protective", "Windows LDM (dynamic disk)", "Windows LDM data"})
SAME, DIFFERENT, TARGET_BLANK, SOURCE_BLANK, UNKNOWN = (
    "same", "different", "target-blank", "source-blank", "unknown")


@dataclass
class ClusterPartition:
    """One partition as the cluster sees it. ``type``: GPT type GUID or MBR type byte;
    ``guid``, ``name``: GPT only; ``fstype``, ``label``: what is on it (NTFS label)."""

    number: int
    offset: int  # bytes
    size: int  # bytes
    type: str
    type_name: str | None
    csv_id: str | None  # "<disk id>:<offset>"
    guid: str | None = None
    name: str | None = None
    fstype: str | None = None
    label: str | None = None

    @property
    def is_volume(self) -> bool:
        return self.type_name not in _NOT_VOLUMES

    def line(self, csv_id: bool = True) -> str:
        """``2 at byte 135266304, 49.9 GB, Microsoft basic data, ntfs "Vol1", CSV ID ...``
        (without the CSV ID when not ``csv_id``)."""
        bits = [f"{self.number} at byte {self.offset}", human_size(self.size),
                self.type_name or f"type {self.type}"]
        if self.fstype or self.label:
            bits.append(" ".join(filter(None, [self.fstype, f'"{self.label}"' if self.label
                                               else None])))
        if csv_id and self.csv_id and self.is_volume:
            bits.append(f"CSV ID {self.csv_id}")
        return ", ".join(bits)


@dataclass
class ClusterIdentity:
    """``scheme``: "gpt", "mbr", or None (the disk holds no partition table);
    ``disk_id``: the GPT disk GUID or the MBR signature; ``damage``: what is wrong with
    the table and what was read instead."""

    scheme: str | None
    disk_id: str | None
    sector_size: int
    partitions: list[ClusterPartition] = field(default_factory=list)
    damage: str | None = None
    note: str | None = None  # another disk of the inventory has the same ID (note_twins)

    @property
    def kind(self) -> str:
        """How the identity is called: "disk GUID", "MBR disk signature"."""
        return "disk GUID" if self.scheme == "gpt" else "MBR disk signature"

    def volumes(self, offset: int | None = None) -> list[ClusterPartition]:
        """The partitions that hold volumes (not the reserved, EFI, recovery ones);
        the one at byte ``offset`` only, when given."""
        if offset is not None:
            return [p for p in self.partitions if p.offset == offset]
        return [p for p in self.partitions if p.is_volume]

    def name(self) -> str:
        """``disk GUID 41a4e9d6-...``, ``MBR disk signature 5F1B2C36``, ``no partition
        table``, ``damaged GPT``."""
        if self.scheme is None:
            return "no partition table"
        if self.disk_id is None:
            return "damaged GPT"
        return f"{self.kind} {self.disk_id}"

    def heading(self) -> str:
        """``GPT disk GUID 41a4...``, ``MBR disk signature 5F1B2C36``, ``GPT, damaged``,
        ``no partition table``."""
        if self.scheme == "gpt":
            return f"GPT {self.name()}" if self.disk_id else "GPT, damaged"
        return self.name()

    def line(self) -> str:
        """One line: the heading, what is damaged and the note, if anything."""
        if self.damage and self.disk_id is None:
            return self.damage
        return (self.heading() + (f" ({self.damage})" if self.damage else "")
                + (f"; {self.note}" if self.note else ""))

    def volumes_line(self, offset: int | None = None) -> str:
        """The volumes with their CSV IDs: ``"Vol1" CSV ID 41a4...:135266304``."""
        vols = self.volumes(offset)
        return "; ".join(_volume_text(p) for p in vols) if vols else "no volumes"

    def to_dict(self) -> dict:
        return asdict(self)


def from_dict(d: dict | ClusterIdentity | None) -> ClusterIdentity | None:
    """The identity back from its JSON form (a report's); an identity as it is."""
    if d is None or isinstance(d, ClusterIdentity):
        return d
    parts = [ClusterPartition(**p) for p in d.get("partitions") or []]
    return ClusterIdentity(scheme=d.get("scheme"), disk_id=d.get("disk_id"),
                           sector_size=d.get("sector_size") or 512, partitions=parts,
                           damage=d.get("damage"), note=d.get("note"))


def _volume_text(p: ClusterPartition) -> str:
    name = f'"{p.label}"' if p.label else f"partition {p.number}"
    return f"{name} CSV ID {p.csv_id}" if p.csv_id else name


def from_table(table: ptable.Table | None, sector_size: int = 512,
               labels: dict[int, tuple[str | None, str | None]] | None = None
               ) -> ClusterIdentity:
    """The identity of a disk whose table is ``table`` (None: it holds none);
    ``labels``: byte offset -> (fstype, label) of what is on its partitions."""
    if table is None:
        return ClusterIdentity(None, None, sector_size)
    labels = labels or {}
    parts = [ClusterPartition(
        number=e.number, offset=e.offset, size=e.size, type=e.type, type_name=e.type_name,
        csv_id=f"{table.disk_id}:{e.offset}" if table.disk_id and e.type_name not in
        _NOT_VOLUMES else None, guid=e.guid,
        name=e.name, fstype=labels.get(e.offset, (None, None))[0],
        label=labels.get(e.offset, (None, None))[1]) for e in table.entries]
    return ClusterIdentity(table.scheme, table.disk_id, table.sector_size, parts, table.damage)


def read_identity(path: str, *, sector_size: int | None = None,
                  labels: dict[int, tuple[str | None, str | None]] | None = None
                  ) -> ClusterIdentity:
    """The identity of the device or image file at ``path``, read (never written) from
    it; ``labels`` as for :func:`from_table`. Raises OSError when it cannot be read."""
    table = ptable.read_table(path, sector_size)
    return from_table(table, sector_size or (table.sector_size if table else 512), labels)


# --- the inventory's --------------------------------------------------------------------

def _sysfs(name: str, attr: str) -> str | None:
    try:
        with open(f"/sys/block/{name}/{attr}") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _readable(disk: Disk) -> bool:
    """Whether a read of ``disk`` can be tried: not a CD or floppy, not a SCSI device that
    would queue it (an iSCSI session in recovery) or fail it, not a loop device that
    detaches when it is closed (autoclear: mounted from a file)."""
    if disk.transport in _NOT_READ:
        return False
    if _sysfs(disk.name, "device/state") in _NO_IO_STATES:
        return False
    return not (disk.transport == "loop" and _sysfs(disk.name, "loop/autoclear") == "1")


def _labels(disk: Disk, table: ptable.Table) -> dict[int, tuple[str | None, str | None]]:
    """What the inventory knows is on each partition of ``table`` (by byte offset); for
    a partition the kernel does not list, what ``blkid -p --offset`` finds there."""
    from toolkit.system import blkid, tools

    known = {p.start: (p.fstype, p.label) for p in disk.partitions}
    out = {}
    for e in table.entries:
        if e.offset in known:
            out[e.offset] = known[e.offset]
        elif e.type_name not in _NOT_VOLUMES and e.size:
            try:
                tags = blkid.probe(disk.path, offset=e.offset, size=e.size,
                                   timeout=READ_TIMEOUT)
            except (tools.ToolError, OSError):
                tags = {}
            if tags.get("TYPE") or tags.get("LABEL"):
                out[e.offset] = (tags.get("TYPE"), tags.get("LABEL"))
    return out


def _read_disk(disk: Disk) -> ClusterIdentity | None:
    try:
        table = ptable.read_table(disk.path)
        if table is None:
            return from_table(None, disk.logical_sector_size)
        return from_table(table, disk.logical_sector_size, _labels(disk, table))
    except Exception:  # noqa: BLE001 - a disk that cannot be read has no identity, and
        return None  # the listing it is part of (a thread's traceback on screen) goes on


def of_disk(disk: Disk, timeout: float = READ_TIMEOUT) -> ClusterIdentity | None:
    """The identity of an inventory disk, read from it; None when it cannot be read
    (offline, no medium, a path down, no answer within ``timeout`` seconds), never an
    error. The read runs in a thread of its own: a device that hangs is left to it."""
    if not _readable(disk) or not os.path.exists(disk.path):
        return None
    box: list[ClusterIdentity | None] = []
    t = threading.Thread(target=lambda: box.append(_read_disk(disk)), daemon=True,
                         name=f"rtk-ptable-{disk.name}")
    t.start()
    t.join(timeout)
    return box[0] if box else None


def _one_lun(a: Disk, b: Disk) -> bool:
    """Whether two disks of the inventory are one LUN seen twice (two paths to it, or a
    multipath device over them): the same WWN or serial, or one holds the other."""
    return any(x and x == y for x, y in ((a.wwn, b.wwn), (a.serial, b.serial))) \
        or a.name in b.holders or b.name in a.holders


def note_twins(disks: list[Disk]) -> None:
    """Note on each disk whose disk GUID (or non-zero MBR signature) another disk of
    ``disks`` has too, not a path to the same LUN, that the two are not one disk (a LUN
    cloned from it, a snapshot): same CSV IDs, told apart only by serial or LUN."""
    def key(d: Disk):
        c = d.cluster
        return (c.scheme, c.disk_id.lower()) if c is not None and c.disk_id and \
            c.disk_id != "00000000" else None
    for d in disks:
        twins = [o.path for o in disks if o is not d and key(d) and key(o) == key(d)
                 and not _one_lun(d, o)]
        if twins:
            d.cluster.note = (f"another disk ({', '.join(twins)}) has the same "
                              f"{d.cluster.kind} (a clone or a snapshot of it): tell them "
                              "apart by serial/LUN")


# --- before a copy -------------------------------------------------------------------------

def comparison(source, target, *, source_offset: int | None = None,
               target_offset: int | None = None):
    """What the copy of ``source`` onto ``target`` does to cluster disks, in words: a
    :class:`toolkit.disks.cluster_compare.Comparison` (``verdict``, ``text``).
    ``source``, ``target``: :class:`ClusterIdentity`, its JSON form, or None (could not
    be read); ``*_offset``: the byte offset of an end that is a partition."""
    from toolkit.disks import cluster_compare

    return cluster_compare.comparison(source, target, source_offset=source_offset,
                                      target_offset=target_offset)


def compare(source, target, **offsets) -> str:
    """The plain statement before a copy (:func:`comparison`'s text)."""
    return comparison(source, target, **offsets).text


# --- reports -------------------------------------------------------------------------------

def report_rows(identity) -> list[tuple[str, str]]:
    """Rows of a text report for one end's identity (its JSON form, as the reports hold
    it in ``source.cluster``, ``target.cluster``): the disk's identity, then each volume
    with its CSV ID. None (not read): one row saying so."""
    c = from_dict(identity)
    if c is None:
        return [("cluster disk", "not read (the disk could not be read)")]
    rows = [("cluster disk", c.line())]
    rows += [(f"partition {p.number}", p.line()) for p in c.partitions]
    return rows


def report_comparison(source: dict | None, target: dict | None) -> dict | None:
    """A report's ``cluster``: the :func:`comparison` of both ends' identities as they
    were when the job started (``{"verdict", "text"}``); None without a target."""
    if not target:
        return None
    return comparison(source.get("cluster") if source else None,
                      target.get("cluster"),
                      source_offset=_offset(source), target_offset=_offset(target)).to_dict()


def _offset(end: dict | None) -> int | None:
    """The byte offset of an end that is a partition (its identity record's)."""
    part = (end or {}).get("partition")
    return part.get("start") if part else None
