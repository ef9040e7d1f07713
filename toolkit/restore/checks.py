"""Refusals before anything is written, and the image's expected SHA-256.

:func:`check_target` asks the disks layer whether the target may be written at
all (:func:`toolkit.disks.eligibility.writable_problems`: the boot medium, mounted,
swap, held, read-only or an iSCSI disk attached as SOURCE, :func:`toolkit.disks.roles.source_keys`)
and whether the target overlaps what the restore reads: the write gate's
:func:`toolkit.disks.gate.write_problems` with the image as an input (a device given
as the image by any path; with ``deep``, by every alias: a partition of the target,
its backing file or a hard link of it, a loop device over it, a file on a filesystem
that lives on it...; :func:`image_inputs`); then what is restore's own: the
image is larger than the target (both sizes), the logical sector sizes differ.
The image's sector size comes from its GPT header (at byte 512 or 4096); an image
without GPT is taken to have 512-byte sectors, with a warning on a 4096-byte
target.

:func:`expected_sha256` takes ``--sha256 HEX``, else a ``IMAGE.sha256`` file
(or URL) beside the image (``HEX`` or ``HEX  NAME`` lines, as sha256sum writes).
It is the SHA-256 of the image file as stored (compressed, container), as
``sha256sum IMAGE`` prints it; :func:`toolkit.restore.engine.check_image` checks
it before anything is written and raises :class:`ChecksumMismatch`
(:func:`mismatch_message` says it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from toolkit.disks import gate
from toolkit.disks.endpoint import Endpoint
from toolkit.errors import Refused
from toolkit.restore import source as sourcemod
from toolkit.units import human_size

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class ChecksumMismatch(Refused):
    """The image's SHA-256 is not the expected one, found before anything was written
    (status "mismatch", exit 4). ``sha256``: what the image hashes to."""

    def __init__(self, message: str, sha256: str):
        super().__init__(message)
        self.sha256 = sha256


def mismatch_message(location: str, got: str, expected: str, source: str) -> str:
    return (f"SHA-256 mismatch: the image {location} hashes to {got}, expected {expected} "
            f"(from {source})")


def image_inputs(location: str, image_device: Endpoint | None = None,
                 referenced: Iterable[str] = ()) -> list[gate.Input]:
    """What a restore of ``location`` reads, for the write gate: the image (a local file
    or device; nothing for a URL) and the files a container refers to (``referenced``:
    backing files, VMDK extents, a qcow2 data file)."""
    if sourcemod.is_url(location) or sourcemod.is_multicast(location):
        return []
    return [gate.Input(location, "image", endpoint=image_device),
            *(gate.Input(p, f"image's file {p} (which {location} refers to)")
              for p in referenced)]


def check_target(target: Endpoint, location: str, image_size: int | None,
                 image_sector: int | None, source_role: Iterable[str] = frozenset(), *,
                 image_device: Endpoint | None = None, deep: bool = False,
                 inputs: list[gate.Input] | None = None) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` for restoring the image at ``location`` onto ``target``.

    ``image_device``: the image's own device when it is read from one (an iSCSI LUN, a
    disk given as the image), which the target must not overlap. ``deep``: every alias
    of the image and the target that sysfs records (both must exist); ``inputs``: what
    is read (default :func:`image_inputs` of ``location``).
    """
    inputs = image_inputs(location, image_device) if inputs is None else inputs
    problems = gate.write_problems(target, inputs, source_role=source_role, deep=deep)
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
    if image_size is None and not sourcemod.is_multicast(location):
        # a multicast stream's size: from its GPT or its held length, or said once its
        # first MiB has arrived that it is not known (toolkit.restore.spool.size_unknown)
        warnings.append("the image's size is not known before writing (a compressed stream "
                        "or a download of unknown length, without a GPT): a too large image "
                        "fails while writing, and the target is then left without a "
                        "partition table")
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
    if sourcemod.is_multicast(location):  # no sidecar: the URL's ?sha256= or the given
        from toolkit.restore import multicast
        url = multicast.parse(location).sha256
        if given and url and given.strip().lower() != url:
            raise ValueError(f"--sha256 {given} differs from the sha256= of {location}")
        if url and not given:
            return url, "the udpcast:// URL"
    if given:
        if not _HEX.match(given.strip()):
            raise ValueError(f"--sha256 {given!r} is not 64 hexadecimal digits")
        return given.strip().lower(), "command line"
    if sourcemod.is_multicast(location):
        return None, "none"
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
