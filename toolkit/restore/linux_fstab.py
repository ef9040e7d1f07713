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

import os
import posixpath
from dataclasses import asdict, dataclass

from toolkit.disks.filesystems import unescape
from toolkit.restore.contents import ENCRYPTED

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


def live_link(spec: str) -> str | None:
    """What a ``/dev/disk/...`` link of this live system (udev's, for the disks attached
    now) points to, or None."""
    return os.path.realpath(spec) if spec.startswith("/dev/disk/") and \
        os.path.islink(spec) else None


def find(spec: str, volumes: list[dict]) -> dict | None:
    """The volume (a partition of :func:`toolkit.restore.contents.inspect_disk`, or a
    logical volume with the same keys) that ``spec`` names, or None. A hardware name
    (``/dev/disk/by-id/wwn-...-part1``, ``by-path``) is the volume its link of the live
    system points to: the disk written here is the disk it will boot on."""
    t = tag(spec)
    if t:
        key = TAGS[t[0]]
        return next((v for v in volumes if _same(t[0], v.get(key), t[1])), None)
    named = next((v for v in volumes if spec in (v.get("node"), *v.get("aliases", ()))), None)
    target = named is None and live_link(spec)
    if target:
        return next((v for v in volumes if v.get("node")
                     and os.path.realpath(v["node"]) == target), None)
    return named


def hardware_name(spec: str) -> bool:
    """``/dev/disk/by-id/`` (a disk's model, serial or WWN) or ``/dev/disk/by-path/`` (its
    controller's port): a name that another disk does not have. LVM's ``dm-name-`` and
    ``dm-uuid-`` links follow the volume, not the disk."""
    return spec.startswith("/dev/disk/by-path/") or (
        spec.startswith("/dev/disk/by-id/")
        and not spec.startswith(("/dev/disk/by-id/dm-name-", "/dev/disk/by-id/dm-uuid-")))


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


def crypttab(text: str | None) -> dict[str, str]:
    """``/etc/crypttab``'s mappings: the name opened at boot (``/dev/mapper/NAME``) -> its
    encrypted device's spec (``UUID=...``, ``/dev/sda3``)."""
    names = {}
    for raw in (text or "").splitlines():
        fields = raw.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            names[unescape(fields[0])] = unescape(fields[1])
    return names


def mapped_name(spec: str) -> str | None:
    """``home_crypt`` of ``/dev/mapper/home_crypt`` or ``/dev/disk/by-id/dm-name-...``."""
    for prefix in ("/dev/mapper/", "/dev/disk/by-id/dm-name-"):
        if spec.startswith(prefix):
            return spec[len(prefix):]
    return None


def _opened(e: Entry, where: str, volumes: list[dict], disk: str,
            mappings: dict[str, str]) -> Check | None:
    """The check of an entry naming a volume that crypttab opens (LUKS, BitLocker), or
    None when crypttab does not name it."""
    name = mapped_name(e.spec)
    source = mappings.get(name) if name else None
    if source is None:
        return None
    dev = find(source, volumes)
    said = f"{where} is {name} of /etc/crypttab, opened at boot from {source}"
    if dev is None:
        wait = "the boot goes on without it (nofail/noauto)" if e.optional else \
            "the system would stop at boot waiting for it"
        return Check(e.line, e.spec, e.mountpoint, False,
                     f"{said}, which is on no partition of this disk ({disk}): {wait}")
    kind = dev.get("encrypted") or ENCRYPTED.get(dev.get("fstype"), "encrypted")
    at = f"logical volume {dev['lv']}" if dev.get("lv") else f"partition {dev.get('number')}"
    return Check(e.line, e.spec, e.mountpoint, True, f"{said}: {at} ({kind}, restored as is)",
                 dev.get("number"), dev.get("lv"))


def check_entry(e: Entry, volumes: list[dict], disk: str,
                mappings: dict[str, str] | None = None) -> Check:
    """Whether ``e``'s device is on the restored disk, said in words. ``mappings``: the
    image's :func:`crypttab`."""
    found = find(e.spec, volumes)
    where = f"fstab line {e.line}: {e.spec} ({e.mountpoint})"
    if found is None and (opened := _opened(e, where, volumes, disk, mappings or {})):
        return opened
    if found is not None:
        number, lv = found.get("number"), found.get("lv")
        at = f"logical volume {lv}" if lv else f"partition {number}"
        c = Check(e.line, e.spec, e.mountpoint, True, f"{where} is {at}", number, lv)
        if hardware_name(e.spec):
            c.message += ": named by this disk's hardware identity, which a replacement " \
                "disk will not have (use UUID=)"
        elif tag(e.spec) is None and not lv:
            c.message += ": named by its kernel name, which may differ on other hardware " \
                "(use UUID=)"
        return c
    if hardware_name(e.spec):
        why = "names a disk by its hardware identity (model and serial, WWN or controller " \
            f"port), which the disk written here ({disk}) does not have (use UUID=)"
    elif tag(e.spec) is None and not e.spec.startswith(("/dev/mapper/", "/dev/disk/")):
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


def check(text: str, volumes: list[dict], disk: str,
          crypttab_text: str | None = None) -> list[Check]:
    """Every device entry of the fstab ``text`` checked against ``volumes``; a name
    ``/etc/crypttab`` (``crypttab_text``) opens is checked through its encrypted device."""
    mappings = crypttab(crypttab_text)
    return [check_entry(e, volumes, disk, mappings) for e in parse(text) if is_device(e)]
