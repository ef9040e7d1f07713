"""A restored Linux system's ``/etc/fstab``: its entries, and whether each one's device
is on the restored disk.

An entry named by ``UUID=``, ``LABEL=``, ``PARTUUID=``, ``PARTLABEL=`` (or their
``/dev/disk/by-*/`` links) must be a filesystem or partition of the disk just written:
otherwise systemd waits for it at boot (90 s, then the emergency shell), unless the
entry says ``nofail`` or ``noauto``. A kernel name (``/dev/sda1``) is told apart: it
changes with the controller (``/dev/nvme0n1p1`` on NVMe). Pseudo filesystems (proc,
tmpfs...), swap files, network filesystems and bind mounts are not devices of the disk.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass

from toolkit.disks.filesystems import unescape

TAGS = {"UUID": "fs_uuid", "LABEL": "label", "PARTUUID": "uuid", "PARTLABEL": "name"}
BY = {"/dev/disk/by-uuid/": "UUID", "/dev/disk/by-label/": "LABEL",
      "/dev/disk/by-partuuid/": "PARTUUID", "/dev/disk/by-partlabel/": "PARTLABEL"}
REMOVABLE_TYPES = {"iso9660", "udf"}  # optical media
NOT_DEVICES = {"proc", "sysfs", "tmpfs", "devpts", "devtmpfs", "securityfs", "cgroup",
               "cgroup2", "debugfs", "efivarfs", "nfs", "nfs4", "cifs", "smb3", "sshfs",
               "fuse", "none", "9p", "virtiofs", "overlay", "ramfs", "hugetlbfs", "mqueue",
               "pstore", "bpf", "tracefs", "configfs", "fusectl", "binfmt_misc"}


@dataclass
class Entry:
    """One fstab line: ``line`` (its number), device ``spec``, ``mountpoint``,
    ``fstype``, ``options``."""

    line: int
    spec: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def optional(self) -> bool:
        """The boot does not wait for it (``nofail``, ``noauto``)."""
        return bool({"nofail", "noauto"} & set(self.options))


def mount_point(text: str) -> str:
    """``/boot/``, ``//boot`` and ``/boot/.`` are ``/boot`` (the kernel's reading)."""
    return posixpath.normpath("/" + text.lstrip("/"))


def parse(text: str) -> list[Entry]:
    """The entries of an fstab (comments, blank and short lines left out)."""
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        opts = tuple(unescape(fields[3]).split(",")) if len(fields) > 3 else ("defaults",)
        entries.append(Entry(n, unescape(fields[0]), unescape(fields[1]), fields[2], opts))
    return entries


def tag(spec: str) -> tuple[str, str] | None:
    """``("UUID", value)`` of ``UUID=value`` or ``/dev/disk/by-uuid/value``; None for
    any other spec."""
    for prefix, name in BY.items():
        if spec.startswith(prefix):
            return name, spec[len(prefix):]
    key, sep, value = spec.partition("=")
    if sep and key.upper() in TAGS:
        return key.upper(), value.strip('"')
    return None


def _same(name: str, a: str | None, b: str) -> bool:
    if a is None:
        return False
    return a.lower() == b.lower() if name in ("UUID", "PARTUUID") else a == b


def find(spec: str, volumes: list[dict]) -> dict | None:
    """The volume (a partition of :func:`toolkit.restore.contents.inspect_disk`, or a
    logical volume with the same keys) that ``spec`` names, or None."""
    t = tag(spec)
    if t:
        key = TAGS[t[0]]
        return next((v for v in volumes if _same(t[0], v.get(key), t[1])), None)
    return next((v for v in volumes if spec in (v.get("node"), *v.get("aliases", ()))), None)


def is_device(e: Entry) -> bool:
    """Whether the entry names a disk's block device at all (not proc, tmpfs, a swap
    file, NFS, a bind mount, nor a CD/DVD drive or floppy: Debian's installer writes
    ``/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto``)."""
    if e.fstype in NOT_DEVICES or e.fstype.startswith("fuse") or \
            {"bind", "rbind"} & set(e.options):
        return False
    if set(e.fstype.split(",")) <= REMOVABLE_TYPES or \
            e.spec.startswith(("/dev/sr", "/dev/cdrom", "/dev/dvd", "/dev/fd")):
        return False
    return tag(e.spec) is not None or e.spec.startswith("/dev/")


@dataclass
class Check:
    """One device entry: ``line``, ``spec``, ``mountpoint``, ``partition`` (its number on
    the restored disk, or ``volume``: a logical volume's path), ``ok``, ``message``."""

    line: int
    spec: str
    mountpoint: str
    ok: bool
    message: str
    partition: int | None = None
    volume: str | None = None

    def record(self) -> dict:
        return asdict(self)


def check_entry(e: Entry, volumes: list[dict], disk: str) -> Check:
    """Whether ``e``'s device is on the restored disk, said in words."""
    found = find(e.spec, volumes)
    where = f"fstab line {e.line}: {e.spec} ({e.mountpoint})"
    if found is not None:
        number, lv = found.get("number"), found.get("lv")
        at = f"logical volume {lv}" if lv else f"partition {number}"
        c = Check(e.line, e.spec, e.mountpoint, True, f"{where} is {at}", number, lv)
        if tag(e.spec) is None and not lv:
            c.message += ": named by its kernel name, which may differ on other hardware " \
                "(use UUID=)"
        return c
    if tag(e.spec) is None and not e.spec.startswith(("/dev/mapper/", "/dev/disk/")):
        why = "is a kernel name that is on no partition of this disk here; it may differ " \
            "on other hardware (use UUID=)"
    else:
        why = f"is on no partition of this disk ({disk})"
        if (tag(e.spec) or ("",))[0] in ("UUID", "LABEL") and \
                any(v.get("unprobed") for v in volumes):
            why += " that was looked into (its LVM volumes were not: it may be on one)"
    wait = "the boot goes on without it (nofail/noauto)" if e.optional else \
        "the system would stop at boot waiting for it"
    return Check(e.line, e.spec, e.mountpoint, False, f"{where} {why}: {wait}")


def check(text: str, volumes: list[dict], disk: str) -> list[Check]:
    """Every device entry of the fstab ``text`` checked against ``volumes``."""
    return [check_entry(e, volumes, disk) for e in parse(text) if is_device(e)]
