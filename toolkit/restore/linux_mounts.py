"""A restored Linux system mounted for a chroot, and everything unmounted again.

The root filesystem read-write, then its ``/boot`` and ``/boot/efi`` when its fstab
puts them on other partitions of the restored disk (their device numbers kept in
:attr:`Mounts.devs`), then a fresh /dev with the disk's own nodes, the live /sys
read-only and a fresh /tmp and /run (:func:`linux_chroot.pseudo`; the live /proc is
never bound: the image's programs get their own, :func:`linux_chroot.chroot`).
A mount point that leads out of the root (a symlink in the image) is refused. Every
mount is undone in reverse order in :meth:`Mounts.close`, lazily when a plain unmount
fails, and what could not be undone is said. A root on LVM: the volume groups on the
disk's physical volumes activated in the live system (only those devices looked at)
and deactivated afterwards. For a look that writes nothing (:mod:`linux_look`), the root
and its ``/boot`` read-only with no journal replayed, on devices set read-only in the
kernel meanwhile, with the same /dev, /sys, /tmp and /run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct

from toolkit.restore import linux_chroot, linux_fstab
from toolkit.restore.linux_chroot import MountError
from toolkit.system import blkid, lvm, mount, tools

BOOT_MOUNTS = ("/boot", "/boot/efi")
MOUNTABLE = {"ext2", "ext3", "ext4", "xfs", "vfat", "btrfs"}
READ_ONLY = {"ext3": ("ro", "noload"), "ext4": ("ro", "noload"),  # no journal replay
             "xfs": ("ro", "norecovery", "nouuid"), "btrfs": ("ro", "rescue=nologreplay")}
# a device node or setuid program the image carries is only a file (linux_jail)
SHUT = ("nodev", "nosuid")
BLKROSET, BLKROGET = 0x125D, 0x125E  # linux/fs.h: _IO(0x12, 93), _IO(0x12, 94)


class Mounts:
    """The mounts made, undone in reverse by :meth:`close`; ``left``: those that could
    not be undone even lazily; ``devs``: the device numbers of the image's own
    filesystems mounted (:meth:`image`)."""

    def __init__(self) -> None:
        self.points: list[str] = []
        self.left: list[str] = []
        self.devs: set[int] = set()

    def image(self, device: str, where: str, *, fstype: str | None = None,
              options: tuple[str, ...] = ()) -> None:
        """Mount a filesystem of the image and keep its device number."""
        self.mount(device, where, fstype=fstype, options=options)
        self.devs.add(os.stat(where).st_dev)

    def mount(self, device: str, where: str, *, fstype: str | None = None,
              options: tuple[str, ...] = ()) -> None:
        mount.mount(device, where, fstype=fstype, options=options)
        self.points.append(where)

    def close(self) -> None:
        while self.points:
            where = self.points.pop()
            try:
                mount.umount(where)
            except tools.ToolError:
                try:
                    mount.umount(where, lazy=True)
                except tools.ToolError:
                    self.left.append(where)


def inside(root: str, path: str, *, made: bool = True) -> str:
    """``root``/``path`` once it does not lead out of ``root`` (a symlink of the image
    resolved by the live system) and, when ``made``, is a directory."""
    where = os.path.realpath(os.path.join(root, path.lstrip("/")))
    top = os.path.realpath(root)
    if where != top and not where.startswith(top + os.sep):
        raise MountError(f"{path} of the image leads out of it (to {where}): not used")
    if made and not os.path.isdir(where):
        raise MountError(f"{path} is not a directory in the image: not mounted")
    return where


def options_for(fstype: str | None) -> tuple[str, ...]:
    """Mount options: ``nodev,nosuid``, XFS with ``nouuid`` (the image may be restored
    beside its source)."""
    return ("rw", *SHUT, "nouuid") if fstype == "xfs" else ("rw", *SHUT)


def readonly_options(fstype: str | None) -> tuple[str, ...]:
    """Mount options that write nothing: read-only, no journal replayed or recovered."""
    return (*READ_ONLY.get(fstype or "", ("ro",)), *SHUT)


@contextlib.contextmanager
def read_only(nodes: list[str]):
    """The block devices ``nodes`` read-only in the kernel meanwhile (what ``blockdev
    --setro`` does; each as it was afterwards): even a read-only ext4 mount cleans up
    orphan inodes, unless its device is read-only."""
    fds, set_ro = [], []
    try:
        for node in nodes:
            fds.append(fd := os.open(node, os.O_RDONLY | os.O_CLOEXEC))
            if not struct.unpack("i", fcntl.ioctl(fd, BLKROGET, bytes(4)))[0]:
                fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1))
                set_ro.append(fd)
        yield
    finally:
        try:
            for fd in set_ro:
                fcntl.ioctl(fd, BLKROSET, struct.pack("i", 0))
        finally:
            for fd in fds:
                os.close(fd)


def _boot_entries(fstab: str, volumes: list[dict]):
    """(mount point, volume or None, note or None) of each ``/boot`` and ``/boot/efi``
    entry of fstab: a volume it can be mounted from, or a note why not."""
    for e in linux_fstab.parse(fstab):
        mp = linux_fstab.mount_point(e.mountpoint)
        if mp not in BOOT_MOUNTS:
            continue
        v = linux_fstab.find(e.spec, volumes)
        if v is None:
            yield mp, None, (f"{mp} ({e.spec}, fstab line {e.line}) is on no partition of "
                             "this disk: not mounted")
        elif v.get("unprobed"):
            yield mp, None, (f"{mp} is on the logical volume {v['lv']}, not looked into "
                             "(the root is on a partition): not mounted")
        elif v.get("fstype") not in MOUNTABLE:
            yield mp, None, f"{mp} is {v.get('fstype') or 'no filesystem'} here: not mounted"
        else:
            yield mp, v, None


def boot_volumes(fstab: str, volumes: list[dict]) -> tuple[list[tuple[str, dict]], list[str]]:
    """The (mount point, volume) pairs of ``/boot`` and ``/boot/efi`` that fstab puts on
    a volume of ``volumes``, and notes on those it puts nowhere on this disk."""
    entries = list(_boot_entries(fstab, volumes))
    found = [(mp, v) for mp, v, _ in entries if v is not None]
    return sorted(found, key=lambda f: f[0].count("/")), [n for _, _, n in entries if n]


def unplaced(fstab: str, volumes: list[dict]) -> dict[str, str]:
    """``{mount point: note}`` of the boot mount points fstab names but that cannot be
    mounted from this disk (their files would go into the root's own directory)."""
    return {mp: n for mp, v, n in _boot_entries(fstab, volumes) if v is None}


def mount_readonly(root: dict, fstab: str, volumes: list[dict], where: str, mounts: Mounts,
                   points: tuple[str, ...] = ("/boot",)) -> None:
    """Mount the root volume ``root`` at ``where`` and those of its boot partitions at
    ``points`` read-only (:func:`readonly_options`) and the pseudo filesystems
    (:func:`linux_chroot.pseudo`): nothing written to the image."""
    fs = root.get("fstype")
    mounts.image(root["node"], where, fstype=fs, options=readonly_options(fs))
    for mp, v in boot_volumes(fstab, volumes)[0]:
        if mp in points:
            mounts.image(v["node"], inside(where, mp), fstype=v.get("fstype"),
                         options=readonly_options(v.get("fstype")))
    linux_chroot.pseudo(where, mounts, linux_chroot.disk_nodes(volumes))


def mount_system(root: dict, fstab: str, volumes: list[dict], where: str,
                 mounts: Mounts) -> list[str]:
    """Mount the root volume ``root`` at ``where``, its boot partitions and the pseudo
    filesystems (:func:`linux_chroot.pseudo`); notes on what was not mounted."""
    fs = root.get("fstype")
    mounts.image(root["node"], where, fstype=fs, options=options_for(fs))
    pairs, notes = boot_volumes(fstab, volumes)
    for mp, v in pairs:
        mounts.image(v["node"], inside(where, mp), fstype=v.get("fstype"),
                     options=options_for(v.get("fstype")))
    linux_chroot.pseudo(where, mounts, linux_chroot.disk_nodes(volumes))
    return notes


def lent_nodes(root: dict, fstab: str, volumes: list[dict], pvs: list[str],
               points: tuple[str, ...] = BOOT_MOUNTS) -> list[str]:
    """The partitions the write gate must lend: the root's (or its physical volumes),
    and the boot partitions fstab names (at ``points``)."""
    nodes = list(pvs) if root.get("lv") else [root["node"]]
    for mp, v in boot_volumes(fstab, volumes)[0]:
        if mp in points and not v.get("lv") and v["node"] not in nodes:
            nodes.append(v["node"])
    return nodes


def lv_names(pvs: list[str]) -> list[dict]:
    """The logical volumes on ``pvs`` by name only, as LVM's metadata lists them, nothing
    activated (a root on a partition beside LVM volumes: fstab may name them):
    volumes with ``unprobed`` set (no filesystem, UUID or label known). None when LVM's
    tools are missing or fail."""
    try:
        rows = lvm.logical_volumes(pvs) if pvs else []
    except OSError:
        return []
    return [{"node": v["path"], "lv": f"{v['vg']}/{v['lv']}", "fstype": None,
             "label": None, "fs_uuid": None, "number": None, "unprobed": True,
             "aliases": lvm.aliases(v["vg"], v["lv"], v.get("dm_uuid")), "snapshots": []}
            for v in rows]


def snapshotted(root: dict, fstab: str, volumes: list[dict]) -> str | None:
    """Why the system's logical volumes that a rebuild writes (its root, its /boot) must
    not be written: one has an LVM snapshot, whose space takes the old contents of every
    block written and which is lost (invalid) once that space is full; or None."""
    written = [root, *(v for mp, v in boot_volumes(fstab, volumes)[0] if mp == "/boot")]
    held = [(v["lv"], v["snapshots"]) for v in written if v.get("lv") and v.get("snapshots")]
    if not held:
        return None
    return "; ".join(
        f"the logical volume {lv} has the LVM snapshot{'s' if len(snaps) > 1 else ''} "
        f"{', '.join(snaps)}" for lv, snaps in held) + (
        ": the rebuild would write into it and could fill the snapshot's space (a full "
        "snapshot is lost): not rebuilt; remove the snapshot (lvremove) or rebuild by hand")


def lvm_members(parts: list[dict]) -> list[str]:
    """The nodes of the partitions that are LVM physical volumes."""
    return [p["node"] for p in parts if p.get("fstype") == "LVM2_member"]


def _lvm_refusal(pvs: list[str], before: list[dict]) -> str | None:
    """Why the volume groups on ``pvs`` (their logical volumes ``before``) must not be
    activated here, or None."""
    if busy := [v["path"] for v in before if v["active"]]:
        return f"the logical volumes {', '.join(busy)} are already active in the live " \
            "system: not touched"
    if missing := lvm.missing_pvs(pvs):
        return "; ".join(f"the volume group {vg} also needs {n} physical volume"
                         f"{'s' if n > 1 else ''} that {'are' if n > 1 else 'is'} not on "
                         "this disk: not touched" for vg, n in sorted(missing.items()))
    dm = lvm.active_dm_names()
    taken: dict[str, list[str]] = {}
    for v in before:
        if (dev := dm.get(lvm.dm_name(v["vg"], v["lv"]))) is not None:
            on = taken.setdefault(v["vg"], [])
            on += [n for n in lvm.underlying(dev) if n not in on]
    return "; ".join(
        f"another volume group named {vg} is active in the live system"
        f"{' on ' + ', '.join(on) if on else ''} (its logical volumes would take the same "
        "names): not touched" for vg, on in sorted(taken.items())) or None


@contextlib.contextmanager
def logical_volumes(pvs: list[str], left: list[str] | None = None):
    """The volume groups on ``pvs`` active meanwhile; yields their logical volumes as
    volumes (``node``, ``lv``, ``fstype``, ``label``, ``fs_uuid``). Refused (MountError,
    nothing activated): logical volumes already active (another copy of the same group
    in the live system), a group that needs a physical volume not among ``pvs``, another
    group of the same name active. A group that cannot be deactivated afterwards is
    named in ``left``."""
    before = lvm.logical_volumes(pvs)
    vgs = sorted({v["vg"] for v in before})
    if not vgs:
        yield []
        return
    if why := _lvm_refusal(pvs, before):
        raise MountError(why)
    try:
        lvm.activate(pvs, vgs)  # a failure may leave some active: deactivated below
        vols = []
        rows = lvm.logical_volumes(pvs)
        snaps = lvm.snapshots(rows)
        for v in rows:
            d = blkid.probe(v["path"]) if os.path.exists(v["path"]) else {}
            name = f"{v['vg']}/{v['lv']}"
            vols.append({"node": v["path"], "lv": name, "fstype": d.get("TYPE"),
                         "label": d.get("LABEL"), "fs_uuid": d.get("UUID"), "number": None,
                         "aliases": lvm.aliases(v["vg"], v["lv"], v.get("dm_uuid")),
                         "snapshots": snaps.get(name, [])})
        yield vols
    finally:
        try:
            lvm.deactivate(pvs, vgs)
        except OSError as e:  # ToolError: still active, the person must know
            msg = f"the volume group{'s' if len(vgs) > 1 else ''} {', '.join(vgs)} " \
                f"could not be deactivated ({e}): still active (deactivate " \
                f"by hand: vgchange -an {' '.join(vgs)})"
            if left is None:
                raise MountError(msg) from None
            left.append(msg)
