"""Do two ends lie on the same medium, so that writing one destroys the other?

:func:`overlap_problem` compares a target with what is written onto it (the
source of a copy, an image on a device): the same device by any path or node,
a partition of the other or the disk holding it, the same LUN by another path
(serial, WWN), two loop devices over one backing file, overlapping partitions.
The message names the other side as the caller calls it ("source", "image").
"""

from __future__ import annotations

from toolkit.disks.endpoint import Endpoint


def overlap_problem(other: Endpoint, target: Endpoint, other_name: str = "source") -> str | None:
    """Why writing ``target`` would hit ``other``, or None when they are apart."""
    if other.rdev is not None and other.rdev == target.rdev or other.node == target.node:
        return (f"the target is the {other_name}: {target.path} and {other.path} are the same "
                f"device ({target.node})")
    if not (other.keys & target.keys and _bytes_overlap(other, target)):
        return None
    same = ", ".join(sorted(k.split(":", 1)[0] for k in other.keys & target.keys))
    if target.is_partition and not other.is_partition:
        return (f"the target {target.node} is a partition of the {other_name} {other.label()} "
                f"(same {same})")
    if other.is_partition and not target.is_partition:
        return (f"the target {target.label()} holds the {other_name} partition {other.node} "
                f"(same {same})")
    if not other.is_partition and not target.is_partition:
        return (f"the target {target.label()} is the same disk as the {other_name} "
                f"{other.label()} by another path (same {same})")
    return (f"the target {target.node} (bytes {target.start}-{target.start + target.size}) "
            f"overlaps the {other_name} {other.node} (bytes {other.start}-"
            f"{other.start + other.size}) on the same disk (same {same})")


def _bytes_overlap(a: Endpoint, b: Endpoint) -> bool:
    return a.start < b.start + b.size and b.start < a.start + a.size
