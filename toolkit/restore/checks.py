"""Refusals before anything is written, and the image's expected SHA-256.

:func:`check_target` reuses Disk Copy's checks
(:func:`toolkit.copy_plan.check_pair`) with the image as the "source" end:
the target is the boot medium, mounted, swap, held, read-only or an iSCSI
disk attached as SOURCE (:func:`toolkit.roles.source_keys`); the image is
larger than the target (both sizes); the logical sector sizes differ. The
image's sector size comes from its GPT header (at byte 512 or 4096); an image
without GPT is taken to have 512-byte sectors, with a warning on a 4096-byte
target.

:func:`expected_sha256` takes ``--sha256 HEX``, else a ``IMAGE.sha256`` file
(or URL) beside the image (``HEX`` or ``HEX  NAME`` lines, as sha256sum writes).
"""

from __future__ import annotations

import re

from toolkit.copy.plan import Endpoint, check_pair
from toolkit.disks.inventory import Disk
from toolkit.restore import source as sourcemod

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def image_endpoint(location: str, size: int, sector_size: int) -> Endpoint:
    """The image, dressed as the source end of :func:`check_pair` (no device, no keys)."""
    disk = Disk(name="image", path=location, size=size, logical_sector_size=sector_size,
                physical_sector_size=sector_size, transport="image", model="image")
    return Endpoint(path=location, node=location, size=size, sector_size=sector_size,
                    disk=disk, keys=frozenset(), rdev=None)


def check_target(target: Endpoint, location: str, image_size: int | None,
                 image_sector: int | None, source_role=frozenset()
                 ) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for restoring the image at ``location`` onto ``target``."""
    warnings = []
    sector = image_sector or 512
    if image_sector is None and target.sector_size != 512:
        warnings.append(f"the image's logical sector size is unknown (no GPT header), taken "
                        f"as 512 bytes; the target {target.node} has {target.sector_size}-byte "
                        "sectors")
        sector = target.sector_size
    src = image_endpoint(location, image_size or 0, sector)
    problems, _ = check_pair(src, target, source_role)
    problems = [p.replace("the source", "the image").replace("source ", "image ")
                for p in problems]
    if image_sector and image_sector != target.sector_size:
        problems = [p for p in problems if "sector sizes differ" not in p]
        problems.append(f"the logical sector sizes differ: the image was made on a disk with "
                        f"{image_sector}-byte sectors (its GPT header says so), the target "
                        f"{target.node} has {target.sector_size}-byte sectors: partition "
                        "offsets and filesystems would be wrong on it")
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
