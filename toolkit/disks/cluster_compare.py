"""What a copy does to cluster disks, said before it starts (:func:`comparison`, by
way of :func:`toolkit.disks.cluster.comparison`): from both ends' identities as the
inventory read them, and the byte offset of an end that is a partition.

"The copy puts it back" (:data:`~toolkit.disks.cluster.SAME`) only for a whole disk
onto a whole disk with the same disk GUID (or a non-zero MBR disk signature) AND the
same partitions (numbers, offsets, sizes, types) holding the same volumes. A disk of
the same GUID with other partitions or other volumes (a clone of a template, a
snapshot that lived on, another cluster's LUN) is said as such; an MBR signature of
00000000 (Windows never wrote one) names no disk. A partition end is said with what is
overwritten at which byte. The target's own volumes (filesystem, label) are always
named: they are what is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.disks.cluster import (
    DIFFERENT,
    SAME,
    SOURCE_BLANK,
    TARGET_BLANK,
    UNKNOWN,
    ClusterIdentity,
    ClusterPartition,
    from_dict,
)
from toolkit.units import human_size

NO_SIGNATURE = "00000000"  # an MBR disk signature Windows never wrote


@dataclass(frozen=True)
class Comparison:
    """``verdict``: SAME, DIFFERENT, TARGET_BLANK (the target holds no partition
    table), SOURCE_BLANK, UNKNOWN (an end could not be read, or its table is too damaged
    to name it); ``text``: the statement."""

    verdict: str
    text: str

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "text": self.text}


def _fs(p: ClusterPartition) -> str:
    """``ntfs "Vol1"``, ``ext4``, ``"Vol1"``, ``no filesystem that was read``."""
    text = " ".join(filter(None, [p.fstype, f'"{p.label}"' if p.label else None]))
    return text or "no filesystem that was read"


def _at(c: ClusterIdentity, offset: int) -> ClusterPartition | None:
    return next((p for p in c.partitions if p.offset == offset), None)


def _end(c: ClusterIdentity, offset: int | None) -> str:
    """``disk GUID X``, or ``partition 2 of disk GUID X`` for an end that is a partition."""
    p = _at(c, offset) if offset is not None else None
    return (f"partition {p.number} of " if p else "") + c.name()


def _who(c: ClusterIdentity, offset: int | None) -> str:
    """``disk GUID X (Vol2, CSV ID X:135266304)``: each volume by its label (or its
    filesystem) and CSV ID."""
    inner = "; ".join(", ".join(filter(None, [p.label or p.fstype, f"CSV ID {p.csv_id}"
                                              if p.csv_id else None]))
                      for p in c.volumes(offset))
    return _end(c, offset) + (f" ({inner})" if inner else "")


def _names(c: ClusterIdentity, offset: int | None) -> str:
    """`` (Vol1)``: the labels of the end's volumes, or nothing."""
    labels = [p.label for p in c.volumes(offset) if p.label]
    return f" ({', '.join(labels)})" if labels else ""


def _volumes(c: ClusterIdentity) -> str:
    """The disk's volumes, what a copy over it loses: ``ntfs "Vol2" at byte 135266304``."""
    vols = c.volumes()
    return "; ".join(f"{_fs(p)} at byte {p.offset}" for p in vols) if vols else "no volumes"


def _layout(p: ClusterPartition) -> tuple:
    return p.number, p.offset, p.size, p.type.lower()


def _part(p: ClusterPartition) -> str:
    return (f"{p.number} at byte {p.offset} ({human_size(p.size)}, "
            f"{p.type_name or 'type ' + p.type})")


def _layout_differs(s: ClusterIdentity, t: ClusterIdentity) -> str | None:
    """How the two disks' partitions differ (``the source's 1 at byte ... (...); the
    target's 1 at byte ... (...)``); None when they are the same."""
    theirs, ours = {_layout(p) for p in t.partitions}, {_layout(p) for p in s.partitions}
    only_s = [_part(p) for p in s.partitions if _layout(p) not in theirs]
    only_t = [_part(p) for p in t.partitions if _layout(p) not in ours]
    if not only_s and not only_t:
        return None
    return "; ".join(filter(None, [
        "the source's " + ", ".join(only_s) if only_s else "the source has no other",
        "the target's " + ", ".join(only_t) if only_t else "the target has no other"]))


def _volumes_differ(s: ClusterIdentity, t: ClusterIdentity) -> str | None:
    """The target's volumes that hold another filesystem or label than the source's at
    the same offset (``ntfs "Vol2" at byte N where the source has ntfs "Vol1"``); a
    target volume nothing could be read from is no difference (it may be the damage the
    copy repairs). None when there is none."""
    out = []
    for p in t.volumes():
        q = _at(s, p.offset)
        if (p.fstype or p.label) and (q is None or (q.fstype, q.label) != (p.fstype, p.label)):
            out.append(f"{_fs(p)} at byte {p.offset} where the source has "
                       + (_fs(q) if q else "none"))
    return "; ".join(out) or None


def _partition_ends(s: ClusterIdentity, t: ClusterIdentity, s_off: int | None,
                    t_off: int | None) -> Comparison:
    """A copy with an end that is a partition: what is overwritten, at which byte."""
    src = (f"partition {p.number} of {s.name()} ({_fs(p)})" if s_off is not None and
           (p := _at(s, s_off)) else f"the whole of {s.name()} (its partition table and "
           "every partition)")
    if t_off is None:
        return Comparison(DIFFERENT, f"you are about to replace the partition table of "
                          f"{t.name()} and every volume on it ({_volumes(t)}) with a copy of "
                          f"{src} alone: the target will hold that filesystem at byte 0 and "
                          "no partition table")
    p = _at(t, t_off)
    dst = (f"partition {p.number} of {t.name()} at byte {t_off} ({_fs(p)}"
           + (f", CSV ID {p.csv_id}" if p.csv_id else "") + ")" if p
           else f"byte {t_off} of {t.name()}")
    return Comparison(DIFFERENT, f"you are about to overwrite {dst} with a copy of {src}; "
                      "the target's partition table stays as it is")


def _same_id(s: ClusterIdentity, t: ClusterIdentity) -> Comparison:
    """Two whole disks of the same disk GUID (or signature): the same disk, or a clone."""
    what = f"the target has the same {t.kind} ({t.disk_id})"
    if layout := _layout_differs(s, t):
        return Comparison(DIFFERENT, f"{what}, but its partitions differ ({layout}): it is "
                          f"another disk (a clone or a snapshot of it, or another cluster's). "
                          f"You are about to overwrite its {_volumes(t)} with a copy of "
                          f"{s.name()}{_names(s, None)}")
    if vols := _volumes_differ(s, t):
        return Comparison(DIFFERENT, f"{what} and partitions, but other volumes ({vols}): it "
                          "is another disk (a clone or a snapshot of it, or another "
                          f"cluster's). You are about to overwrite its {_volumes(t)} with a "
                          f"copy of {s.name()}{_names(s, None)}")
    inner = ", ".join([t.name(), *[p.label for p in t.volumes() if p.label]])
    unread = [p for p in t.volumes() if not (p.fstype or p.label)]
    return Comparison(SAME, f"this LUN held this cluster disk ({inner}): the copy puts it "
                      "back" + ("" if not unread else " (on the target now, " + ", ".join(
                          f"partition {p.number} at byte {p.offset}" for p in unread)
                          + (" hold" if len(unread) > 1 else " holds")
                          + " no filesystem that could be read)"))


def comparison(source, target, *, source_offset: int | None = None,
               target_offset: int | None = None) -> Comparison:
    """What the copy of ``source`` onto ``target`` does to cluster disks, in words.
    ``source``, ``target``: :class:`ClusterIdentity`, its JSON form, or None (could not
    be read); ``*_offset``: the byte offset of an end that is a partition."""
    s, t = from_dict(source), from_dict(target)
    if t is None:
        return Comparison(UNKNOWN, "the target's partition table could not be read")
    if s is None:
        return Comparison(UNKNOWN, "the source's partition table could not be read")
    if t.scheme is None:
        return Comparison(TARGET_BLANK, "the target holds no partition table"
                          + ("" if s.scheme is None else
                             f": the copy brings {_who(s, source_offset)}"))
    if s.scheme is None:
        return Comparison(SOURCE_BLANK, "the source holds no partition table: the copy "
                          f"replaces {_who(t, target_offset)} on the target")
    if s.disk_id is None or t.disk_id is None:
        which = "target" if t.disk_id is None else "source"
        return Comparison(UNKNOWN, f"the {which}'s GPT is damaged: its disk GUID is unknown "
                          f"({(t if which == 'target' else s).damage})")
    if source_offset is not None or target_offset is not None:
        return _partition_ends(s, t, source_offset, target_offset)
    different = f"you are about to overwrite {_who(t, None)} with a copy of {s.name()}" \
        + _names(s, None)
    if (s.scheme, s.disk_id.lower()) != (t.scheme, t.disk_id.lower()):
        return Comparison(DIFFERENT, different)
    if s.scheme == "mbr" and s.disk_id == NO_SIGNATURE:
        return Comparison(DIFFERENT, "neither disk has an MBR disk signature (00000000 on "
                          f"both: Windows never wrote one), so nothing says they are the "
                          f"same: {different}")
    return _same_id(s, t)
