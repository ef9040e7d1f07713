"""Planning a restore: what the image is, where it goes, and whether that is safe.

:func:`plan_restore` resolves the target (:func:`toolkit.disks.endpoint.resolve`,
and the image's own device when it is read from one), probes the image by content
(:func:`probe_image`: the first MiB, the last 512 bytes, qemu-img info for local
containers) and refuses with :class:`~toolkit.errors.Refused` before anything is
written (:func:`toolkit.restore.checks.check_target`), then says what the image's
partitions tell (:func:`read_layout`): the firmware mode it boots in against this
machine's or the one required (:mod:`toolkit.restore.bootmode`), its encrypted
partitions, a VHDX's log to replay (:mod:`toolkit.restore.vhdx`). Container
images that are downloaded or decompressed first (and a VHDX replayed first) are
checked again, with their real size and sector size, once the temporary file exists
(still before writing).
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from toolkit.blockio import blockdev
from toolkit.disks import roles, transport
from toolkit.disks.endpoint import Endpoint, resolve
from toolkit.disks.inventory import Disk, list_disks
from toolkit.errors import Refused
from toolkit.restore import bootmode, checks, detect, qemu, stream, vhdx
from toolkit.restore import layout as layoutmod
from toolkit.restore import source as sourcemod
from toolkit.restore import spool as spoolmod
from toolkit.restore.layout import Layout
from toolkit.restore.shrink_plan import ShrinkPlan, plan_shrink
from toolkit.restore.source import read_full
from toolkit.restore.write import HEAD
from toolkit.units import human_size


@dataclass
class RestoreOptions:
    """How to restore. ``algorithm``: hash of the written image bytes (blake3 or sha256)."""

    verify: bool = True
    grow: bool = False
    sha256: str | None = None  # expected SHA-256 of the image file as given
    ca_file: str | None = None
    insecure: bool = False
    tmpdir: str | None = None  # for downloads of container formats (default: $TMPDIR)
    algorithm: str = "blake3"
    boot: bool = True  # create a UEFI boot entry when booted in UEFI mode
    interval: float = 0.25  # seconds between progress events
    # a storage outage of the target (its path down: toolkit.disks.transport) is waited
    # out this long, then the restore fails (the disk left without a partition table)
    outage_limit: float = transport.DEFAULT_LIMIT
    # the firmware mode the restored disk must boot in: "uefi", "bios", or "any" (this
    # machine's, from sys_root/firmware/efi: a mismatch is then a warning, not a refusal)
    boot_mode: str = "any"
    sys_root: str = "/sys"
    # a VHDX whose log was never replayed: replayed on a temporary "copy" (in tmpdir), or
    # "in-place" in the file itself (only when the person agreed: it changes the file)
    vhdx_log: str = "copy"
    # after a Windows image: its storage drivers made to start at boot, "on", "off", or
    # "auto" (when the target's controller is not one it boots from: windows_drivers)
    windows_drivers: str = "auto"
    # after a Linux image: its initramfs rebuilt in a chroot, fstab checked ("auto", "on":
    # when a Linux root is found; "off": toolkit.restore.linux_initramfs)
    linux_initramfs: str = "auto"

    def source_kw(self) -> dict:
        return {"ca_file": self.ca_file, "insecure": self.insecure}


@dataclass
class ImageInfo:
    """The image as probed. ``size``: the raw disk image's size in bytes (None: unknown
    until written); ``file_size``: the file as stored (compressed, container)."""

    location: str
    is_url: bool
    compression: str | None
    format: str  # detect.RAW or a qemu-img driver name
    file_size: int | None
    size: int | None
    sector_size: int | None
    table: str | None
    expected_sha256: str | None = None
    sha256_from: str = "none"
    # an HTTP image: (ETag, Last-Modified, size) of the answer probed; every later
    # download must be of the same file (toolkit.restore.source.same_entity)
    http_entity: tuple | None = None
    geometry: detect.Geometry | None = None  # what the image's first MiB says
    # its partitions as the first MiB (and, with random access, their contents) say:
    # the boot mode, the encrypted partitions (toolkit.restore.layout)
    layout: Layout | None = None
    vhdx_log: bool = False  # a VHDX whose log was never replayed (toolkit.restore.vhdx)
    spool: spoolmod.Decision | None = None  # a udpcast:// stream: held first, or not

    @property
    def kind(self) -> str:
        name = detect.FORMAT_NAMES[self.format]
        return f"{name}, {self.compression}-compressed" if self.compression else name


@dataclass
class RestorePlan:
    """``checked``: the image's SHA-256 once checked before writing
    (:func:`toolkit.restore.engine.check_image`, which :func:`~toolkit.restore.engine.restore`
    calls unless done already; it holds the spooled copy of an HTTP image)."""

    image: ImageInfo
    target: Endpoint
    options: RestoreOptions
    warnings: list[str] = field(default_factory=list)
    checked: object = None  # engine.Checked
    # what the restore reads (the image, files a container refers to) and the SOURCE
    # roles: the write gate checks them again when it opens the target
    inputs: list = field(default_factory=list)
    source_role: frozenset[str] = frozenset()
    # onto a disk smaller than the image: its partitions fitted (toolkit.restore.shrink_plan)
    shrink: ShrinkPlan | None = None


def probe_image(location: str, options: RestoreOptions) -> ImageInfo:
    """Detect compression, container format, size and sector size by content. A
    ``udpcast://`` stream is read once: probed by the restore itself, from its first MiB,
    before writing (raw only; compression, sector size and size checked then)."""
    if sourcemod.is_multicast(location):
        return ImageInfo(location, False, None, detect.RAW, None, None, None, None)
    try:
        with sourcemod.open_source(location, **options.source_kw()) as src:
            head = read_full(src, HEAD)
            comp = detect.compression(head)
            tail = None if comp else src.tail(512)  # a VHD's footer; never of a stream
            file_size = src.size
            entity = getattr(src, "entity", None)
    except sourcemod.SourceError as e:
        raise Refused(str(e)) from None
    except OSError as e:  # a read error of a file or device
        raise Refused(f"cannot read the image {location}: {sourcemod.os_reason(e)}") from None
    if not head:
        raise Refused(f"{location} is empty")
    try:
        data = stream.peek_decompressed(head, comp, HEAD) if comp else head
    except stream.CorruptImage as e:
        raise Refused(f"{location}: {e}") from None
    fmt = detect.container(data, None if comp else tail)
    if why := detect.not_a_disk_image(location, data):
        raise Refused(why)
    info = ImageInfo(location, sourcemod.is_url(location), comp, fmt, file_size, None, None,
                     None, http_entity=entity)
    local = not comp and not info.is_url
    if fmt == detect.RAW:
        geo = info.geometry = detect.geometry(data)
        info.table, info.sector_size = geo.table, geo.sector_size
        # a download of unknown length: as large as its GPT says (checked at its end)
        info.size = file_size if not comp and file_size is not None else geo.disk_size
        info.layout = layoutmod.from_head(data)
    elif local and fmt == detect.VHDX and vhdx.needs_replay(location):
        # its log is replayed (on a copy) before writing, and the copy probed then
        info.vhdx_log = True
        info.size, info.sector_size = vhdx.disk_size(location)
    elif local:
        qemu.referenced_files(location, fmt)  # a protocol or json: name: refused first
        info.size = container_size(location, fmt)
        try:
            head = qemu.first_mib(location, fmt, info.size)
        except qemu.QemuError as e:
            raise Refused(f"{location}: {e}") from None
        geo = info.geometry = detect.geometry(head)
        info.table, info.sector_size = geo.table, geo.sector_size
        info.layout = layoutmod.from_head(head)
    else:
        info.size = detect.virtual_size_hint(fmt, data, None if comp else tail)
    return info


def container_size(path: str, fmt: str) -> int:
    """The virtual size by ``qemu-img info``, refusing a damaged or truncated file."""
    problems = qemu.check(path, fmt)
    if problems:
        raise Refused(problems)
    try:
        return int(qemu.info(path, fmt)["virtual-size"])
    except qemu.QemuError as e:
        raise Refused(f"{path}: {e}") from None


def image_device(location: str, disks: list[Disk]) -> Endpoint | None:
    """The device the image is read from (a disk or LUN given as the image), else None."""
    if sourcemod.is_url(location) or not blockdev.is_block_device(location):
        return None
    try:
        return resolve(location, disks)
    except (Refused, OSError):
        return None  # not in the inventory: nothing to compare the target with


def image_inputs(image: str, info: ImageInfo, disks: list[Disk]) -> list:
    """What the restore of ``image`` reads, for the write gate (the plan's ``inputs``, and
    the menu's list of targets): the image and, for a local container, every file its
    chain refers to (:func:`toolkit.restore.qemu.referenced_files`: :class:`Refused` when
    that cannot be told). A compressed or downloaded container's are checked once it is
    unpacked, before writing (:func:`toolkit.restore.engine.restore`)."""
    local = info.format != detect.RAW and not info.is_url and not info.compression \
        and not info.vhdx_log  # (qemu-img opens it once its log is replayed: a VHDX has
    # no backing file; the replayed copy's files are checked before writing)
    return checks.image_inputs(image, image_device(image, disks),
                               qemu.referenced_files(image, info.format) if local else ())


def target_open_problem(target: str, e: OSError, writing: bool = False) -> str:
    """Why the target cannot be opened, in plain words, naming it."""
    how = " for writing" if writing else ""
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot open the target {target}{how}: permission denied (rtk runs as root; "
                "a container or a sandbox may forbid opening block devices)")
    if e.errno == errno.ENOENT:
        return f"the target {target} does not exist"
    if e.errno == errno.EROFS:
        return f"the target {target} is read-only"
    return f"cannot open the target {target}{how}: {sourcemod.os_reason(e)}"


def read_layout(location: str, info: ImageInfo) -> None:
    """Add what the partitions hold to ``info.layout`` (encryption, the ESP's loaders),
    for an image read at random where it lies (a local file or disk, not compressed)."""
    if info.layout is not None and not info.is_url and not info.compression:
        reader = (layoutmod.file_readers(location) if info.format == detect.RAW
                  else layoutmod.container_readers(location, info.format))
        layoutmod.read_contents(info.layout, *reader)


def _image_notes(image: str, info: ImageInfo, options: RestoreOptions,
                 problems: list[str]) -> list[str]:
    """The boot mode, the encrypted partitions and a VHDX's log: warnings returned,
    refusals added to ``problems`` (:class:`~toolkit.restore.vhdx.NoRoomToReplay` when a
    VHDX's replay on a copy is all that stops the restore)."""
    read_layout(image, info)
    # a container downloaded or unpacked first (or a VHDX replayed first) is checked again
    # then, before writing, and a multicast stream once its first MiB has arrived; a raw
    # image's first MiB is known here
    known = info.layout is not None or (info.format == detect.RAW
                                        and not sourcemod.is_multicast(image))
    bad, warnings = bootmode.check(info.layout, options.boot_mode, options.sys_root,
                                   known=known)
    problems += bad
    warnings += layoutmod.notes(info.layout, options.grow)
    if info.vhdx_log:
        try:
            warnings.append(vhdx.plan_note(image, options.vhdx_log == "in-place",
                                           options.tmpdir or tempfile.gettempdir()))
        except vhdx.NoRoomToReplay as e:
            if not problems:
                raise
            problems += e.problems
    return warnings


def plan_restore(image: str, target: str, options: RestoreOptions | None = None, *,
                 source_role: Iterable[str] | None = None,
                 disks: list[Disk] | None = None) -> RestorePlan:
    """Resolve and check a restore; raises :class:`Refused` with every problem found."""
    options = options or RestoreOptions()
    disks = list_disks() if disks is None else disks
    try:
        dst = resolve(target, disks)
    except Refused as e:  # say which end: "the target /dev/sdb: permission denied"
        raise Refused([f"the target {p}" if p.startswith(target) else p
                       for p in e.problems]) from None
    except OSError as e:  # EACCES, EPERM: not root, or a device the sandbox forbids
        raise Refused(target_open_problem(target, e)) from None
    info = probe_image(image, options)
    try:
        info.expected_sha256, info.sha256_from = checks.expected_sha256(
            image, options.sha256, **options.source_kw())
    except ValueError as e:
        raise Refused(str(e)) from None
    role = frozenset(roles.source_keys() if source_role is None else source_role)
    inputs = image_inputs(image, info, disks)  # Refused: cannot tell what it reads
    cut = _truncated(image, info)  # first: a cut file is not fitted to anything
    shrink = None if cut else _shrink_plan(image, info, dst, options)
    problems, warnings = checks.check_target(dst, image, shrink.size if shrink else info.size,
                                             info.sector_size, role, deep=True, inputs=inputs)
    problems += cut
    if shrink is not None:
        warnings += shrink.lines()
    if sourcemod.is_multicast(image):  # held whole before writing, or written as it arrives
        info.spool = spoolmod.decide(image, dst.size, options.tmpdir)
        warnings.append(spoolmod.note(info.spool, bool(info.expected_sha256)))
    notes = _image_notes(image, info, options, problems)
    if problems:
        raise Refused(problems)
    warnings += notes
    if info.http_entity is not None and not (info.http_entity[0] or info.http_entity[1]):
        warnings.append(sourcemod.no_validator_warning(image))
    if options.insecure and image.startswith("https://"):
        warnings.append("TLS NOT VERIFIED: the server's certificate is not checked, anyone on "
                        "the path could send another image" + (
                            "" if info.expected_sha256 else " (and no SHA-256 checks it)"))
    return RestorePlan(info, dst, options, warnings, inputs=inputs, source_role=role,
                       shrink=shrink)


def _truncated(image: str, info: ImageInfo) -> list[str]:
    """Why the image is cut short, from its size and its partition table (none: it is
    not)."""
    problems = []
    if info.format == detect.RAW and not info.compression and info.size and info.size % 512:
        problems.append(f"the image has {info.size} bytes, not a multiple of 512: truncated, "
                        "or not a disk image")
    if info.geometry is not None and (info.format != detect.RAW or not info.compression):
        # the file's (or the download's Content-Length, the container's virtual) size
        cut = detect.truncation(info.size if info.format != detect.RAW else info.file_size,
                                info.geometry)
        if cut:
            problems.append(f"{image}: {cut}")
    return problems


def fits_by_shrinking(info: ImageInfo) -> bool:
    """Whether an image larger than the target can be fitted to it: read at random where
    it lies (a local file or disk, not compressed; a VHDX once its log is replayed)."""
    return not info.is_url and not info.compression and not info.vhdx_log and \
        not sourcemod.is_multicast(info.location)


def _shrink_plan(image: str, info: ImageInfo, dst: Endpoint,
                 options: RestoreOptions) -> ShrinkPlan | None:
    """The fitting of an image larger than the target (None: it is not larger); refused
    with the reason when it cannot be fitted."""
    seekable = fits_by_shrinking(info)
    if info.vhdx_log and info.size is not None and info.size > dst.size:
        raise Refused(f"{image} is a VHDX whose log was never replayed (its Hyper-V host "
                      "stopped before writing it back; the file is not damaged), and its "
                      f"disk of {info.size} bytes ({human_size(info.size)}) is larger than "
                      f"the target {dst.node} ({dst.size} bytes, {human_size(dst.size)}): "
                      "its partitions are read to fit them to a smaller disk only once the "
                      "log is replayed. Replay it on a copy first (cp --sparse=always IMAGE "
                      "COPY; qemu-img check -r all COPY) and restore the copy, or restore "
                      f"onto a disk of at least {info.size} bytes; nothing was written")
    if info.size is not None and info.size > dst.size and not seekable:
        raise Refused(f"the target {dst.node} is smaller than the image: target {dst.size} "
                      f"bytes ({human_size(dst.size)}), image {image} has {info.size} bytes "
                      f"({human_size(info.size)}); an image is fitted to a smaller disk (its "
                      "filesystems shrunk) only when read from a local file or disk, not "
                      "compressed: download or decompress it first")
    geo = info.geometry
    ends = max(geo.parts_end or 0, geo.min_size or 0) if geo else 0
    if ends > dst.size and not seekable:  # known from the first MiB, the size perhaps not
        raise Refused(f"{image}: its partition table describes a disk of at least {ends} bytes "
                      f"(partition {geo.last_partition} ends at byte {ends}), more than the "
                      f"target's {dst.size} ({human_size(dst.size)}); an image is fitted to "
                      "a smaller disk only when read from a local file or disk, not "
                      "compressed: download or decompress it first; nothing was written")
    if info.size is None or info.size <= dst.size:
        return None
    if info.sector_size and info.sector_size != dst.sector_size:
        return None  # refused by check_target, with both sector sizes
    return plan_shrink(image, info.format, info.size, dst.size,
                       options.tmpdir or tempfile.gettempdir())
