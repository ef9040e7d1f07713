"""State that outlives the boot: the ``RTK-DATA`` partition, and whether the state
directory (mapfiles, reports, logs) survives a reboot.

At boot (``rtk-data.service``, before the menu and ``rtk-unattended.service``),
:func:`boot` looks for filesystems labelled ``RTK-DATA`` (ext2/3/4, FAT or exFAT) on
every disk, mounts the preferred one read-write at ``/run/rtk/data``
(:func:`toolkit.system.paths.data_mount`) and makes ``/var/log/rtk`` a symbolic link to
its ``rtk`` directory (:func:`activate`): every path the toolkit writes stays the same.
Preferred, when there are several: the one on the boot medium, then one on a removable
or USB disk, then by filesystem UUID (a stable order, whatever the /dev names are); the
others are logged and left alone. One that does not mount is logged and the next is
tried. A partition on a disk that ``rtk.disk=`` or ``rtk.consent=`` (kernel command
line) names by serial or WWN is never used: the unattended run overwrites that disk.
Once mounted, the partition counts as "mounted" for every write check, so its disk
can never be the target of a copy or a restore.

Without one, the state stays in RAM (the live system's tmpfs overlay):
:func:`location` says where the state directory really is and
:func:`persistent_state` whether it survives a reboot, so the menu can warn before a
long job, and :func:`use_volume` mounts a filesystem the technician picks
(:func:`volumes`) in the data partition's place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from toolkit.disks.inventory import Disk
from toolkit.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_STATE_IN_RAM, EXIT_USAGE
from toolkit.system import blkid, mount, paths, tools
from toolkit.system.atomic import TMP_SUFFIX, fsync_dir, write_atomic
from toolkit.units import human_size

# Filesystems an RTK-DATA partition may have (the live kernel mounts them all).
DATA_FILESYSTEMS = ("ext4", "ext3", "ext2", "vfat", "exfat")
# Filesystems a technician may pick for the state or a logs bundle (mounted read-write).
WRITABLE_FILESYSTEMS = (*DATA_FILESYSTEMS, "ntfs", "xfs", "btrfs", "f2fs")
# Filesystems whose files are gone after a reboot (or that cannot be written).
VOLATILE = {"tmpfs", "ramfs", "devtmpfs", "squashfs", "iso9660", "udf", "proc", "sysfs",
            "rootfs", "erofs"}
STATE_RECORD = "data.json"  # in the run directory: which partition holds the state
BOOT_LOG = "boot.log"  # in the state directory: one line per boot, which partition


class StateError(OSError):
    """The state directory cannot be moved where it was asked to."""


@dataclass(frozen=True)
class Volume:
    """A filesystem that can hold the state or a logs bundle."""

    name: str  # kernel name of the partition (or the disk, for a filesystem on it all)
    path: str
    size: int
    fstype: str
    label: str | None
    uuid: str | None
    disk: Disk
    mountpoints: tuple[str, ...] = ()

    def describe(self) -> str:
        """``/dev/sdb3 ext4 "RTK-DATA" 7.5 GB, UUID 1b2c..., on /dev/sdb (usb, SanDisk,
        serial 4C53...)``."""
        d = self.disk
        what = ", ".join(x for x in (d.transport, d.model, d.serial and f"serial {d.serial}")
                         if x)
        label = f' "{self.label}"' if self.label else ""
        uuid = f", UUID {self.uuid}" if self.uuid else ""
        where = "" if self.path == d.path else f" on {d.path} ({what})"
        return f"{self.path} {self.fstype}{label} {human_size(self.size)}{uuid}{where}"


def _volumes_of(disks: Iterable[Disk]) -> list[Volume]:
    out = []
    for d in disks:
        if d.transport in ("cdrom", "floppy"):
            continue
        if not d.partitions and d.fstype:
            out.append(Volume(d.name, d.path, d.size, d.fstype, d.label, None, d,
                              tuple(d.mountpoints)))
        for p in d.partitions:
            if p.fstype:
                out.append(Volume(p.name, p.path, p.size, p.fstype, p.label, p.uuid, d,
                                  tuple(p.mountpoints)))
    return out


def _uses(v: Volume) -> list[str]:
    """Why ``v`` cannot be mounted read-write by us: in use, read-only, a SOURCE."""
    d = v.disk
    reasons = []
    if d.role == "SOURCE":
        reasons.append("on an iSCSI disk attached as SOURCE (never written)")
    if d.read_only:
        reasons.append("read-only disk")
    part = next((p for p in d.partitions if p.path == v.path), None)
    swap, holders = (part.swap, part.holders) if part else (d.swap, d.holders)
    if swap:
        reasons.append("in use as swap")
    if holders:
        reasons.append("held by " + ", ".join(holders))
    return reasons


# --- the RTK-DATA partition ---------------------------------------------------------------

def _norm_id(value: str) -> str:
    v = value.strip().lower()
    for prefix in ("0x", "naa.", "eui."):
        v = v.removeprefix(prefix)
    return v


def job_disk_ids(cmdline: str) -> set[str]:
    """The serials and WWNs that ``rtk.disk=`` and ``rtk.consent=`` name (normalised):
    the disk an unattended run overwrites."""
    found = set()
    for m in re.finditer(r'(?:^|\s)"?rtk\.(?:disk|consent)="?(serial|wwn):([^\s"]+)', cmdline):
        found.add(_norm_id(unquote(m.group(2))))
    return found


def _on_job_disk(d: Disk, ids: set[str]) -> bool:
    return bool(ids & {_norm_id(x) for x in (d.serial, d.wwn) if x})


def _blkid_uuid(path: str) -> str | None:
    try:
        return blkid.probe(path).get("UUID")
    except tools.ToolError:
        return None


def data_partitions(disks: Iterable[Disk], cmdline: str = "", label: str = paths.DATA_LABEL,
                    uuid_of: Callable[[str], str | None] = _blkid_uuid,
                    ) -> tuple[list[Volume], list[tuple[Volume, str]]]:
    """``(candidates, skipped)``: the filesystems labelled ``label`` that may hold the
    state, preferred first (on the boot medium, then on a removable or USB disk, then
    by UUID, then by name), and those that may not, with why. ``uuid_of(path)``: the
    UUID of a filesystem on a whole disk (the inventory has those of partitions only)."""
    ids = job_disk_ids(cmdline)
    ok, skipped = [], []
    for v in _volumes_of(disks):
        if (v.label or "").upper() != label.upper():
            continue
        if v.uuid is None and v.path == v.disk.path:
            v = dataclasses.replace(v, uuid=uuid_of(v.path))
        why = _uses(v)
        if v.fstype not in DATA_FILESYSTEMS:
            why.append(f"{v.fstype} is not one of {', '.join(DATA_FILESYSTEMS)}")
        if _on_job_disk(v.disk, ids):
            why.append("on the disk that rtk.disk=/rtk.consent= names (the unattended run "
                       "overwrites it)")
        mine = paths.data_mount()
        if [m for m in v.mountpoints if m != mine]:
            why.append("already mounted at " + ", ".join(v.mountpoints))
        if why:
            skipped.append((v, "; ".join(why)))
        else:
            ok.append(v)
    ok.sort(key=lambda v: (not v.disk.boot_medium,
                           not (v.disk.removable or v.disk.transport == "usb"),
                           (v.uuid or "~").lower(), v.path))
    return ok, skipped


def mount_volume(v: Volume, mountpoint: str) -> None:
    """Mount ``v`` read-write at ``mountpoint`` (made if missing); NTFS with ntfs-3g.
    Raises ToolError (the mount's message) or StateError."""
    os.makedirs(mountpoint, exist_ok=True)
    if os.path.ismount(mountpoint):
        raise StateError(f"{mountpoint} is already a mount point")
    try:
        if v.fstype == "ntfs":
            tools.run(["ntfs-3g", "-o", "noatime", v.path, mountpoint], timeout=120)
        else:
            mount.mount(v.path, mountpoint, fstype=v.fstype, options=("rw", "noatime"))
    except tools.ToolError:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        raise


def _merge(src: str, dst: str) -> None:
    """Move everything in ``src`` into ``dst``. A log (``*.log``) that exists on both
    sides gets ``src``'s lines appended; another name that exists gets a ``.N`` suffix."""
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if name.endswith(TMP_SUFFIX):
            os.unlink(s)
            continue
        if os.path.isdir(s) and not os.path.islink(s):
            _merge(s, d)
            os.rmdir(s)
            continue
        if os.path.lexists(d) and name.endswith(".log") and os.path.isfile(d):
            with open(s, "rb") as f_in, open(d, "ab") as f_out:
                shutil.copyfileobj(f_in, f_out)
                f_out.flush()
                os.fsync(f_out.fileno())
            os.unlink(s)
            continue
        n = 1
        while os.path.lexists(d):
            n += 1
            d = os.path.join(dst, f"{name}.{n}")
        shutil.move(s, d)
    fsync_dir(dst)


def activate(data_root: str, state: str | None = None) -> str:
    """Make the state directory ``state`` (default :func:`paths.state_dir`) a symbolic
    link to ``DATA_ROOT/rtk`` (made if missing); what it held so far (this boot's logs)
    moves there. Returns ``DATA_ROOT/rtk``."""
    target = os.path.join(data_root, paths.STATE_SUBDIR)
    os.makedirs(target, exist_ok=True)
    state = state or paths.state_dir()
    if os.path.islink(state):
        if os.path.realpath(state) != os.path.realpath(target):
            tmp = f"{state}.{os.getpid()}.new"
            os.symlink(target, tmp)
            os.replace(tmp, state)  # atomic: the state directory is never missing
        return target
    os.makedirs(os.path.dirname(os.path.abspath(state)), exist_ok=True)
    if not os.path.isdir(state):
        os.symlink(target, state)
        return target
    if os.path.realpath(state) == os.path.realpath(target):
        return target
    old = f"{state}.ram-{os.getpid()}"
    os.rename(state, old)
    os.symlink(target, state)
    _merge(old, target)
    os.rmdir(old)
    return target


# --- where the state is, and whether it survives a reboot ---------------------------------

@dataclass(frozen=True)
class StateLocation:
    path: str  # the state directory as the toolkit names it (/var/log/rtk)
    real: str  # where it really is (/run/rtk/data/rtk)
    mountpoint: str | None
    fstype: str | None
    device: str | None
    persistent: bool  # survives a reboot (and a power cut)
    writable: bool

    @property
    def message(self) -> str:
        """One sentence for the technician."""
        where = self.path if self.real == self.path else f"{self.path} ({self.real})"
        if self.persistent and self.writable:
            return (f"Mapfiles, reports and logs are kept in {where} on {self.device} "
                    f"({self.fstype}): they survive a reboot or a power cut.")
        if self.persistent:
            return f"{where} on {self.device} is not writable: mapfiles and reports fail."
        return (f"Mapfiles, reports and logs are kept in {where}, in RAM ({self.fstype}): a "
                "reboot or a power cut loses the resume point (mapfile) and the reports.")


def _mountinfo(text: str) -> list[tuple[str, str, str, set[str], dict[str, str]]]:
    """(mountpoint, fstype, source, mount options, super options) per line."""
    def unescape(s: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)

    out = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        lf, rf = left.split(), right.split()
        if len(lf) < 6 or len(rf) < 2:
            continue
        sup = {}
        for opt in (rf[2] if len(rf) > 2 else "").split(","):
            k, _, v = opt.partition("=")
            sup[k] = v
        out.append((unescape(lf[4]), rf[0], unescape(rf[1]), set(lf[5].split(",")), sup))
    return out


def _mount_of(path: str, mounts) -> tuple | None:
    best = None
    for m in mounts:
        mp = m[0]
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
                best is None or len(mp) >= len(best[0])):
            best = m
    return best


def _loop_backing(device: str) -> str | None:
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip().removesuffix(" (deleted)") or None
    except OSError:
        return None


def _survives(path: str, mounts, depth: int = 0) -> tuple[bool, tuple | None]:
    """Whether the file at ``path`` survives a reboot; the mount it is on."""
    m = _mount_of(path, mounts)
    if m is None or depth > 4:
        return False, m
    _mp, fstype, source, _opts, sup = m
    if fstype == "overlay":  # live-boot's root: its upper layer decides (persistence)
        upper = sup.get("upperdir")
        return (_survives(upper, mounts, depth + 1)[0] if upper else False), m
    if fstype in VOLATILE or source.startswith(("/dev/zram", "/dev/ram")):
        return False, m
    if re.fullmatch(r"/dev/loop\d+", source):  # as durable as the file behind it
        backing = _loop_backing(source)
        return (_survives(backing, mounts, depth + 1)[0] if backing else False), m
    return True, m


def location(state: str | None = None, *, mountinfo: str | None = None) -> StateLocation:
    """Where the state directory ``state`` (default :func:`paths.state_dir`) really is,
    and whether what is written there survives a reboot."""
    state = state or paths.state_dir()
    real = os.path.realpath(state)
    probe = real
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    mounts = _mountinfo(mountinfo)
    persistent, m = _survives(probe, mounts)
    read_only = bool(m and "ro" in m[3])
    writable = not read_only and os.access(probe, os.W_OK)
    return StateLocation(state, real, m[0] if m else None, m[1] if m else None,
                         m[2] if m else None, persistent, writable)


def persistent_state(state: str | None = None) -> bool:
    """Whether the mapfiles and reports written now survive a reboot (False on the live
    system's tmpfs overlay, True once an RTK-DATA partition or a chosen disk holds them)."""
    try:
        loc = location(state)
    except OSError:
        return False
    return loc.persistent and loc.writable


# --- the menu: a filesystem the technician picks ------------------------------------------

def volumes(disks: Iterable[Disk], busy: Iterable[str] = ()) -> list[tuple[Volume, str | None]]:
    """Every filesystem that could be mounted read-write, with None for those that may be
    chosen and the reason for the others. ``busy``: paths of disks that a job is about to
    use (its SOURCE and TARGET), never chosen."""
    busy = {os.path.realpath(b) if b.startswith("/dev/") else b for b in busy}
    out = []
    for v in _volumes_of(disks):
        if v.fstype not in WRITABLE_FILESYSTEMS:
            continue
        why = _uses(v)
        if v.disk.role == "TARGET":
            why.append("on an iSCSI disk attached as TARGET (to be overwritten)")
        if {v.disk.path, v.path, v.disk.name} & busy:
            why.append("part of this job")
        if v.mountpoints:
            why.append("mounted at " + ", ".join(v.mountpoints))
        out.append((v, "; ".join(why) or None))
    return sorted(out, key=lambda c: (c[1] is not None, not c[0].disk.removable, c[0].path))


def _record(v: Volume, mountpoint: str, how: str, others: list[str]) -> None:
    """``/run/rtk/data.json`` (which partition holds the state) and a line in the state
    directory's boot.log."""
    info = {"device": v.path, "fstype": v.fstype, "label": v.label, "uuid": v.uuid,
            "mountpoint": mountpoint, "how": how, "disk": v.disk.path,
            "disk_serial": v.disk.serial, "others": others,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(OSError):
        os.makedirs(paths.run_dir(), exist_ok=True)
        write_atomic(os.path.join(paths.run_dir(), STATE_RECORD), json.dumps(info, indent=1))
    with contextlib.suppress(OSError), \
            open(os.path.join(paths.state_dir(), BOOT_LOG), "a", encoding="utf-8") as f:
        f.write(f"{info['time']} {how}: state on {v.describe()}"
                + (f"; not used: {'; '.join(others)}" if others else "") + "\n")
        f.flush()
        os.fsync(f.fileno())


def use_volume(v: Volume) -> StateLocation:
    """Mount ``v`` read-write in the data partition's place and keep the state there
    (``V:/rtk``); what this boot wrote so far moves there too."""
    mnt = paths.data_mount()
    try:
        mount_volume(v, mnt)
    except tools.ToolError as e:
        raise StateError(f"cannot mount {v.path} read-write: {e}") from e
    try:
        activate(mnt)
    except OSError as e:
        with contextlib.suppress(tools.ToolError):
            mount.umount(mnt)
        raise StateError(f"cannot keep the state on {v.path}: {e}") from e
    _record(v, mnt, "chosen in the menu", [])
    return location()


def held_by_data_partition() -> dict | None:
    """What :func:`boot` (or :func:`use_volume`) recorded for this boot, if anything."""
    try:
        with open(os.path.join(paths.run_dir(), STATE_RECORD)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# --- at boot ------------------------------------------------------------------------------

def boot(list_disks: Callable[[], list[Disk]] | None = None, cmdline: str | None = None,
         say: Callable[[str], None] = print) -> int:
    """Find, mount and use the RTK-DATA partition (see the module's text); 0 also when
    there is none (the state then stays in RAM), 1 when none of those found mounts."""
    if list_disks is None:
        from toolkit.disks.inventory import list_disks
    if cmdline is None:
        try:
            with open("/proc/cmdline") as f:
                cmdline = f.read()
        except OSError:
            cmdline = ""
    mnt = paths.data_mount()
    candidates, skipped = data_partitions(list_disks(), cmdline)
    for v, why in skipped:
        say(f"{paths.DATA_LABEL}: not using {v.describe()}: {why}")
    if not candidates:
        say(f"{paths.DATA_LABEL}: no usable partition labelled {paths.DATA_LABEL}: mapfiles, "
            f"reports and logs stay in RAM ({paths.state_dir()}), lost at reboot")
        return EXIT_OK
    failed = []
    for v in candidates:
        if mnt in v.mountpoints:
            break  # this service ran before in this boot
        try:
            mount_volume(v, mnt)
            break
        except (tools.ToolError, StateError) as e:
            say(f"{paths.DATA_LABEL}: cannot mount {v.describe()}: {e}")
            failed.append(v)
    else:
        say(f"{paths.DATA_LABEL}: none of the partitions found mounts: the state stays in "
            f"RAM ({paths.state_dir()})")
        return EXIT_FAILED
    others = [f"{o.describe()}" for o in candidates if o is not v]
    others += [f"{o.describe()} ({why})" for o, why in skipped]
    say(f"{paths.DATA_LABEL}: using {v.describe()}, mounted at {mnt}; {paths.state_dir()} "
        f"-> {os.path.join(mnt, paths.STATE_SUBDIR)}")
    for o in candidates:
        if o is not v and o not in failed:
            say(f"{paths.DATA_LABEL}: also found, not used: {o.describe()}")
    activate(mnt)
    _record(v, mnt, "found at boot", others)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m toolkit.system.state boot`` (rtk-data.service), or ``status``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["boot"]:
        return boot()
    if args[:1] == ["status"]:
        loc = location()
        print(loc.message)
        return EXIT_OK if loc.persistent else EXIT_STATE_IN_RAM
    print("usage: python -m toolkit.system.state boot|status", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
