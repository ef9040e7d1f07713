"""Refusals before anything is written, and the image's expected SHA-256.

:func:`check_target` asks the disks layer whether the target may be written at
all (:func:`toolkit.disks.eligibility.writable_problems`: the boot medium, mounted,
swap, held, read-only or an iSCSI disk attached as SOURCE, :func:`toolkit.disks.roles.source_keys`)
and, for an image read from a block device, whether the target overlaps it
(:func:`toolkit.disks.overlap.overlap_problem`); then what is restore's own: the
image is larger than the target (both sizes), the logical sector sizes differ.
The image's sector size comes from its GPT header (at byte 512 or 4096); an image
without GPT is taken to have 512-byte sectors, with a warning on a 4096-byte
target.

:func:`expected_sha256` takes ``--sha256 HEX``, else a ``IMAGE.sha256`` file
(or URL) beside the image (``HEX`` or ``HEX  NAME`` lines, as sha256sum writes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from toolkit.disks.eligibility import writable_problems
from toolkit.disks.endpoint import Endpoint
from toolkit.disks.overlap import overlap_problem
from toolkit.restore import source as sourcemod
from toolkit.units import human_size

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def check_target(target: Endpoint, location: str, image_size: int | None,
                 image_sector: int | None, source_role: Iterable[str] = frozenset(), *,
                 image_device: Endpoint | None = None) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for restoring the image at ``location`` onto ``target``.

    ``image_device``: the image's own device when it is read from one (an iSCSI LUN, a
    disk given as the image), which the target must not overlap.
    """
    overlap = overlap_problem(image_device, target, "image") if image_device else None
    problems = [overlap] if overlap else []
    problems += writable_problems(target, source_role)
    if image_size is not None and target.size < image_size:
        problems.append(f"the target is smaller than the image: target {target.node} has "
                        f"{target.size} bytes ({human_size(target.size)}), image {location} "
                        f"has {image_size} bytes ({human_size(image_size)})")
    if image_sector and image_sector != target.sector_size:
        problems.append(f"the logical sector sizes differ: the image was made on a disk with "
                        f"{image_sector}-byte sectors (its GPT header says so), the target "
                        f"{target.node} has {target.sector_size}-byte sectors: partition "
                        "offsets and filesystems would be wrong on it")
    warnings = []
    if image_sector is None and target.sector_size != 512:
        warnings.append(f"the image's logical sector size is unknown (no GPT header), taken "
                        f"as 512 bytes; the target {target.node} has {target.sector_size}-byte "
                        "sectors")
    if image_size is None:
        warnings.append("the image's size is not known before writing (a compressed stream "
                        "without a GPT): a too large image fails while writing, and the "
                        "target is then left without a partition table")
    return problems, warnings


def parse_sha256(text: str, name: str | None = None) -> str | None:
    """The hash from sha256sum output (the line naming ``name``, else the first)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    found = [parts for parts in lines if parts and _HEX.match(parts[0])]
    if name:
        for parts in found:
            if len(parts) > 1 and parts[-1].lstrip("*").rsplit("/", 1)[-1] == name:
                return parts[0].lower()
    return found[0][0].lower() if found else None


def expected_sha256(location: str, given: str | None, **source_kw) -> tuple[str | None, str]:
    """``(hex or None, where it came from)``; a malformed ``given`` raises ValueError."""
    if given:
        if not _HEX.match(given.strip()):
            raise ValueError(f"--sha256 {given!r} is not 64 hexadecimal digits")
        return given.strip().lower(), "command line"
    side = location + ".sha256"
    try:
        data = sourcemod.read_small(side, **source_kw)
    except (sourcemod.SourceError, OSError):
        data = None
    if not data:
        return None, "none"
    value = parse_sha256(data.decode(errors="replace"), location.rsplit("/", 1)[-1])
    if value is None:
        raise ValueError(f"{side} holds no SHA-256")
    return value, side
