"""The ``RTK-DATA`` partition: state (mapfiles, reports, logs) that outlives the boot.

At boot (``rtk-data.service``, before the menu and ``rtk-unattended.service``),
:func:`boot` looks for filesystems labelled ``RTK-DATA`` (ext2/3/4, FAT or exFAT) on
every disk, mounts the preferred one read-write at ``/run/rtk/data``
(:func:`toolkit.system.paths.data_mount`) and makes ``/var/log/rtk`` a symbolic link to
its ``rtk`` directory (:func:`activate`): every path the toolkit writes stays the same.
Only one on the boot medium or on a removable or USB disk is mounted with no one
asking; one on another local disk only when ``rtk.data=UUID=...`` names it (it may be
the customer's disk to copy), never one on an iSCSI disk or on a disk attached as
SOURCE; the technician may still choose one in the menu (:func:`use_volume`).
Preferred, when there are several: the one on the boot medium, then one on a removable
or USB disk, then by filesystem UUID (a stable order, whatever the /dev names are); the
others are logged and left alone. One that does not mount is logged and the next is
tried. A partition on a disk that ``rtk.disk=`` or ``rtk.consent=`` (kernel command
line) names by serial or WWN is never used: the unattended run overwrites that disk.
Once mounted, the partition counts as "mounted" for every write check, so its disk
can never be the target of a copy or a restore.

Without one, the state stays in RAM (the live system's tmpfs overlay):
:func:`location` says where the state directory really is and
:func:`persistent_state` whether it survives a reboot
(:mod:`toolkit.system.state_location`), so the menu can warn before a long job, and
:func:`use_volume` mounts a filesystem the technician picks (:func:`volumes`, of
:mod:`toolkit.system.volumes`) in the data partition's place. Those names are imported
from here too.
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
from urllib.parse import unquote

from toolkit.atomic import TMP_SUFFIX, fsync_dir, write_atomic
from toolkit.disks.inventory import Disk
from toolkit.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_STATE_IN_RAM, EXIT_USAGE
from toolkit.system import blkid, mount, paths, tools

# where the state is and the volumes it may be put on, which callers import from here too
from toolkit.system.state_location import StateLocation, location, persistent_state  # noqa: F401
from toolkit.system.volumes import StateError, Volume, mount_volume, volumes, volumes_of  # noqa: F401

# Filesystems an RTK-DATA partition may have (the live kernel mounts them all).
DATA_FILESYSTEMS = ("ext4", "ext3", "ext2", "vfat", "exfat")

STATE_RECORD = "data.json"  # in the run directory: which partition holds the state
BOOT_LOG = "boot.log"  # in the state directory: one line per boot, which partition


# --- the RTK-DATA partition ---------------------------------------------------------------

def _norm_id(value: str) -> str:
    v = value.strip().lower()
    for prefix in ("0x", "naa.", "eui."):
        v = v.removeprefix(prefix)
    return v


def job_disk_ids(cmdline: str) -> set[str]:
    """What ``rtk.disk=`` and ``rtk.consent=`` name, in every form they take: serials and
    WWNs (normalised), by-id:/by-path: links, kernel names and paths, and ``rule:`` (any
    disk: a rule may match the stick itself) — the disk an unattended run overwrites."""
    found = set()
    for m in re.finditer(r'(?:^|\s)"?rtk\.(?:disk|consent)="?([^\s"]+)', cmdline):
        value = unquote(m.group(1))
        kind, sep, rest = value.partition(":")
        if sep and kind in ("serial", "wwn"):
            found.add(_norm_id(rest))
        elif sep and kind == "rule":
            found.add(ANY_DISK)
        elif sep and kind in ("by-id", "by-path"):
            found.add(os.path.basename(rest))
        else:
            found.add(os.path.basename(value))
    if len(found) > 1:  # a consent names the very disk: the rule alone writes nothing else
        found.discard(ANY_DISK)
    return found


def named_data_uuids(cmdline: str) -> set[str]:
    """The filesystem UUIDs that ``rtk.data=UUID=...`` names (lower case): an RTK-DATA
    partition on a fixed disk that may be used at boot."""
    found = set()
    for m in re.finditer(r'(?:^|\s)"?rtk\.data="?([^\s"]+)', cmdline):
        kind, _, value = unquote(m.group(1)).partition("=")
        if kind.upper() == "UUID" and value:
            found.add(value.strip().lower())
    return found


def _boot_rule(v: Volume, named: set[str]) -> str | None:
    """Why ``v`` may not be mounted on its own at boot (None: it may): only an
    RTK-DATA on the boot medium or on a removable or USB disk is, or one on another
    local disk that ``rtk.data=UUID=...`` names; never one on an iSCSI disk (a
    customer's LUN, a snapshot to be copied)."""
    d = v.disk
    if d.transport == "iscsi":
        return "on an iSCSI disk (never mounted at boot: it may be a LUN to copy)"
    if d.boot_medium or d.removable or d.transport == "usb":
        return None
    if v.uuid and v.uuid.lower() in named:
        return None
    return ("on a fixed disk (it may be the disk to copy): used only when rtk.data=UUID="
            f"{v.uuid or '...'} names it, or when chosen in the menu")


ANY_DISK = "*"  # job_disk_ids: a rule that may match any disk


def _on_job_disk(d: Disk, ids: set[str]) -> bool:
    names = {_norm_id(x) for x in (d.serial, d.wwn) if x}
    names |= {os.path.basename(x) for x in (d.path, d.name, *d.by_id, *d.by_path) if x}
    return ANY_DISK in ids or bool(ids & names)


def _blkid_uuid(path: str) -> str | None:
    try:
        return blkid.probe(path).get("UUID")
    except tools.ToolError:
        return None


def data_partitions(disks: Iterable[Disk], cmdline: str = "", label: str = paths.DATA_LABEL,
                    uuid_of: Callable[[str], str | None] = _blkid_uuid, *,
                    at_boot: bool = True,
                    ) -> tuple[list[Volume], list[tuple[Volume, str]]]:
    """``(candidates, skipped)``: the filesystems labelled ``label`` that may hold the
    state, preferred first (on the boot medium, then on a removable or USB disk, then
    by UUID, then by name), and those that may not, with why. ``uuid_of(path)``: the
    UUID of a filesystem on a whole disk (the inventory has those of partitions only).
    ``at_boot``: with the boot rule (:func:`_boot_rule`: mounted with no one asked)."""
    ids = job_disk_ids(cmdline)
    named = named_data_uuids(cmdline)
    ok, skipped = [], []
    for v in volumes_of(disks):
        if (v.label or "").upper() != label.upper():
            continue
        if v.uuid is None and v.path == v.disk.path:
            v = dataclasses.replace(v, uuid=uuid_of(v.path))
        why = v.mount_problems()
        if v.fstype not in DATA_FILESYSTEMS:
            why.append(f"{v.fstype} is not one of {', '.join(DATA_FILESYSTEMS)}")
        rule = _boot_rule(v, named) if at_boot else None
        if rule:
            why.append(rule)
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


# --- which partition holds the state: found at boot, or chosen in the menu --------------

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
