"""Inspecting an image before a restore: format, size and partition table (the
probe), partitions from the first MiB, and for a local raw image or a disk the
filesystems and operating systems, through a read-only loop device."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field

from toolkit import restore
from toolkit.restore import contents, detect, qemu, stream, vhdx
from toolkit.restore import source as sourcemod
from toolkit.restore.source import read_full
from toolkit.restore.write import HEAD
from toolkit.system import partx, tools


@dataclass
class Inspection:
    info: restore.ImageInfo
    partitions: list[dict] = field(default_factory=list)
    systems: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _read_only_loop(path: str):
    """``path`` (a raw image file or a disk) as a read-only loop device with partitions."""
    dev = tools.run(["losetup", "-r", "-f", "--show", path], timeout=60).stdout.strip()
    try:
        contents.refresh_partitions(dev)
        yield dev
    finally:
        partx.delete(dev)
        tools.run(["losetup", "-d", dev], check=False, timeout=60)


def _head(location: str, info: restore.ImageInfo, options: restore.RestoreOptions) -> bytes:
    """The raw disk image's first MiB, when it can be had without downloading it all."""
    if info.format == detect.RAW:
        with sourcemod.open_source(location, **options.source_kw()) as src:
            head = read_full(src, HEAD)
        return stream.peek_decompressed(head, info.compression) if info.compression else head
    if not info.compression and not info.is_url and info.size and not info.vhdx_log:
        return qemu.first_mib(location, info.format, info.size)
    return b""


def inspect_image(location: str, options: restore.RestoreOptions) -> Inspection:
    """Format, size and table (probe), partitions (from the first MiB) and, for a local
    raw image or a disk, filesystems and operating systems (through a read-only loop)."""
    info = restore.probe_image(location, options)  # raises restore.Refused
    ins = Inspection(info)
    if info.vhdx_log:
        ins.notes.append(f"{vhdx.state(location)}. It is replayed before anything is written "
                         "(on a copy, when there is room); its partitions are read then.")
    local_raw = not info.is_url and info.format == detect.RAW and not info.compression
    if local_raw:
        try:
            with _read_only_loop(location) as dev:
                found = contents.inspect_disk(dev)
            ins.partitions, ins.systems = found["partitions"], found["systems"]
            return ins
        except OSError as e:  # a ToolError too: "losetup failed: ... (exit 1)"
            ins.notes.append(f"filesystems not inspected: {e}")
    try:
        head = _head(location, info, options)
    except (OSError, stream.CorruptImage) as e:  # qemu.QemuError is a ToolError, an OSError
        ins.notes.append(f"partitions not read: {e}")
        head = b""
    if head and info.table:
        with tempfile.NamedTemporaryFile(prefix="rtk-head-") as f:
            f.write(head)
            f.truncate(max(info.size or 0, len(head)))  # sparse: the table's extent only
            f.flush()
            ins.partitions = contents.partitions(f.name)
    if not local_raw:
        ins.notes.append("The operating system is detected on the restored disk (shown in the "
                         "result).")
    return ins
