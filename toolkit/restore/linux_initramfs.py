"""After a Linux image is restored: its initramfs rebuilt for the hardware it is on now,
and its fstab checked, so that it finds its root on another storage controller.

The root is the ext or XFS filesystem (a partition, or a logical volume of the disk's
LVM physical volumes) where :func:`toolkit.restore.contents.inspect_disk` found an
os-release. It is mounted read-write through the write gate's lend, with its own
``/boot`` and ``/boot/efi`` when its fstab puts them on other partitions of the disk,
a fresh /dev (the disk's own nodes), /tmp and /run and the live /sys read-only
(:mod:`linux_mounts`). In a chroot in its own mount and PID namespaces
(:mod:`linux_chroot`), the image's own tool rebuilds the initramfs of every kernel
installed in it (a ``/lib/modules/VERSION`` with its ``/boot/vmlinuz-VERSION``; never
the live system's version): dracut when the image has it, else update-initramfs. The
new initramfs must be a regular file on one of the image's own filesystems (not a
symlink, nor on a tmpfs). It is listed (lsinitrd, lsinitramfs: the image's own) for the
module of the target's controller (the kernel driver sysfs shows for the target disk).
When the module is missing but the image's kernel has it, it is added to the image's
configuration (``/etc/initramfs-tools/modules``; dracut:
``/etc/dracut.conf.d/90-rtk-storage.conf``, so later kernels get it too; only on the
image's root filesystem itself) and that kernel's initramfs rebuilt once more. Each fstab
entry of a device must be on the disk (:mod:`linux_fstab`). Everything done, and what
was not and why, goes into the report; everything mounted is unmounted in the end.

When (``--linux-initramfs``, plan ``linux_initramfs``): ``auto`` (the default) rebuilds
only when needed: it first looks, without writing a byte (:mod:`linux_look`: the root and
its /boot mounted read-only), whether every kernel's existing initramfs holds the
target's controller module (or has it built in), and when all do, or the module is not
known, rebuilds nothing (the fstab is still checked); ``on`` always rebuilds when a Linux
root is found; ``off`` does nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
from dataclasses import asdict, dataclass, field

from toolkit.errors import Refused
from toolkit.restore import linux_fstab, windows_drivers
from toolkit.restore.contents import os_release
from toolkit.restore.fs_files import EXT, Unreadable, exists, read_file
from toolkit.restore.linux_chroot import ENV, chroot, on_image, read_text
from toolkit.restore.linux_look import (
    DRACUT,
    UPDATE,
    StillMounted,
    has_module,
    image_tool,
    initramfs_name,
    kernel_text,
    kernels,
    listing_argv,
    look,
    module_state,
    norm,
    nothing_there,
)
from toolkit.restore.linux_mounts import (
    MOUNTABLE,
    MountError,
    Mounts,
    lent_nodes,
    logical_volumes,
    lv_names,
    lvm_members,
    mount_system,
    snapshotted,
    unplaced,
)
from toolkit.restore.linux_report import where
from toolkit.system import tools

MODES = ("auto", "on", "off")
MODULES_FILE = "etc/initramfs-tools/modules"
DRACUT_CONF = "etc/dracut.conf.d/90-rtk-storage.conf"
ANYWAY = "(--linux-initramfs on rebuilds it anyway)"
NEW = ".rtk-new"  # dracut's output, renamed over the initramfs once whole
# the tools' work trees on the chroot's fresh /tmp (a tmpfs), not on the image's /var/tmp:
# a root filesystem with little room left must not fail the build nor be filled
BUILD_ENV = {**ENV, "TMPDIR": "/tmp"}


def rebuild_argv(tool: str, version: str, name: str, exists: bool) -> list[str]:
    if tool == "dracut":
        return ["dracut", "--force", name, version]
    return ["update-initramfs", "-u" if exists else "-c", "-k", version]


def add_module_config(tool: str, root: str, module: str) -> str | None:
    """Add ``module`` to the image's initramfs configuration, on the root's own
    filesystem (a symlink of the image onto /run, /dev or out of it: refused); what was
    changed (None: it was there already)."""
    rel = DRACUT_CONF if tool == "dracut" else MODULES_FILE
    devs = {os.stat(root).st_dev}
    folder = on_image(root, os.path.dirname(rel), devs)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(on_image(root, os.path.dirname(rel), devs), os.path.basename(rel))
    if not os.path.isdir(os.path.dirname(path)):
        raise OSError(f"/{os.path.dirname(rel)} is not a directory in the image: not written")
    text = ""
    with contextlib.suppress(FileNotFoundError):
        text = read_text(root, rel, devs)  # not a FIFO, a device or a symlink
    if tool != "dracut" and any(norm(ln.split()[0]) == norm(module)
                                for ln in text.splitlines()
                                if ln.split() and not ln.startswith("#")):
        return None
    if tool == "dracut" and f" {module} " in text:
        return None
    line = f'add_drivers+=" {module} "\n' if tool == "dracut" else f"{module}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with open(fd, "a") as f:
        f.write(("\n" if text and not text.endswith("\n") else "") +
                "# rtk restore: the storage controller of the disk this system was "
                "restored onto\n" + line)
    return f"/{rel}: {line.strip()} added"


@dataclass
class Outcome:
    """What was done for one Linux root (its ``record()`` goes into the report)."""

    partition: int | None
    volume: str | None = None  # a logical volume (vg/lv)
    system: str | None = None
    status: str = "skipped"  # "rebuilt", "failed", "skipped"
    message: str = ""
    tool: str | None = None
    kernels: list[dict] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    fstab: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warn: bool = False

    def record(self) -> dict:
        d = asdict(self)
        d.pop("warn")
        return d


def built(root: str, name: str, devs: set[int]) -> os.stat_result | None:
    """The ``lstat`` of the initramfs ``name`` (None: there is none) once it is a
    regular file on one of the image's filesystems ``devs``; else OSError, in words."""
    try:
        st = os.lstat(_in_image(root, name, devs))
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{name} is not a regular file in the image (a symlink?): not used")
    if st.st_dev not in devs:
        raise OSError(f"{name} is not on one of the image's filesystems: not used")
    return st


def _in_image(root: str, name: str, devs: set[int]) -> str:
    """The host's path of the image's file ``name`` (its folder on the image)."""
    return os.path.join(on_image(root, os.path.dirname(name), devs), os.path.basename(name))


def _dracut_beside(root: str, version: str, name: str, devs: set[int]) -> None:
    """dracut builds ``name`` as ``name.rtk-new`` then renamed over it: dracut writes its
    output in place and removes it when that fails (a full /boot), which would leave the
    image with no initramfs at all; update-initramfs already writes beside and renames."""
    new = name + NEW
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_in_image(root, new, devs))  # an old one, or the image's own symlink
    try:
        chroot(root, rebuild_argv("dracut", version, new, False), BUILD_ENV)
        if built(root, new, devs) is None:
            raise OSError(f"dracut ended without writing {name}")
        os.replace(_in_image(root, new, devs), _in_image(root, name, devs))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_in_image(root, new, devs))


def _build(root: str, tool: str, version: str, devs: set[int]) -> dict:
    name = initramfs_name(tool, root, version)
    before = built(root, name, devs)
    if tool == "dracut":
        _dracut_beside(root, version, name, devs)
    else:
        try:
            chroot(root, rebuild_argv(tool, version, name, before is not None), BUILD_ENV)
        except OSError:  # update-initramfs builds NAME.new; stopped (Ctrl-C), it stays
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(new := _in_image(root, name + ".new", devs)).st_mode):
                    os.unlink(new)
            _drop_backup_link(root, name, devs)
            raise
    after = built(root, name, devs)
    if after is None or before is not None and after.st_mtime_ns == before.st_mtime_ns:
        raise OSError(f"{tool} ended without writing {name}")
    return {"version": version, "file": name, "size": after.st_size}


def _drop_backup_link(root: str, name: str, devs: set[int]) -> None:
    """update-initramfs hard-links NAME to NAME.dpkg-bak before it builds and removes the
    link when it ends; stopped (Ctrl-C) or failed, the link stays: removed here when it is
    still NAME itself (same inode), never another file."""
    with contextlib.suppress(OSError):
        bak, cur = _in_image(root, name + ".dpkg-bak", devs), _in_image(root, name, devs)
        a, b = os.lstat(bak), os.lstat(cur)
        if stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            os.unlink(bak)


def _failure(e: OSError, cancel) -> str:
    """A kernel's rebuild that failed, in words: Ctrl-C said as a cancel (the tools exit
    130 then, their last line "Generating ..."), a full filesystem said as such."""
    status = getattr(e, "status", None)
    if cancel is not None and cancel.is_set() or status in (130, -signal.SIGINT):
        return ("cancelled (Ctrl-C) during the rebuild: the image keeps the initramfs it "
                "brought")
    said = f"{getattr(e, 'stderr', '')}\n{getattr(e, 'stdout', '')}"
    if "No space left on device" in said and "No space left" not in str(e):
        return f"{e}: no space left on the filesystem of /boot (free some, or grow it)"
    return str(e)  # names the tool


def rebuild_kernel(root: str, tool: str, version: str, module: str | None,
                   changes: list[str], devs: set[int]) -> dict:
    """Rebuild ``version``'s initramfs and look for ``module`` in it (once more after
    adding it to the configuration when it is missing); the kernel's record."""
    rec = _build(root, tool, version, devs)
    rec.update(module=module, contains_module=None, state=None)
    if module is None:
        return rec
    rec["state"] = state = module_state(root, version, module)
    if state == "builtin":
        rec["contains_module"] = True
        return rec
    rec["contains_module"] = has_module(chroot(root, listing_argv(tool, rec["file"])), module)
    if not rec["contains_module"] and state == "module":
        change = add_module_config(tool, root, module)
        if change:  # else the configuration names it already: building again changes nothing
            changes.append(change)
            rec.update(_build(root, tool, version, devs))
            rec["contains_module"] = has_module(
                chroot(root, listing_argv(tool, rec["file"])), module)
    return rec


def rebuild(root: str, module: str | None, out: Outcome, devs: set[int],
            cancel=None) -> None:
    """Every installed kernel's initramfs rebuilt, recorded in ``out`` (``devs``: the
    device numbers of the image's filesystems, where each must be)."""
    out.tool = image_tool(root)
    versions = kernels(root)
    if why := nothing_there(out.tool, versions):
        out.status, out.warn, out.message = "skipped", True, why
        return
    failed = []
    for v in versions:
        if cancel is not None and cancel.is_set():  # Ctrl-C: no further kernel begun
            out.kernels.append({"version": v, "failed": True,
                                "message": "not rebuilt: cancelled (Ctrl-C)"})
            failed.append(v)
            continue
        try:
            k = rebuild_kernel(root, out.tool, v, module, out.changes, devs)
            k["message"] = kernel_text(k)
            out.warn |= k.get("contains_module") is False or k.get("state") is None \
                and module is not None
        except OSError as e:  # ToolError too
            k = {"version": v, "failed": True, "message": _failure(e, cancel)}
            failed.append(v)
        out.kernels.append(k)
    out.status = "failed" if failed else "rebuilt"
    out.warn |= bool(failed)
    out.message = f"{out.tool}: " + "; ".join(f"{k['version']}: {k['message']}"
                                             for k in out.kernels)


def _check_fstab(fstab: str | None, volumes: list[dict], disk: str, out: Outcome,
                 crypttab: str | None = None) -> None:
    if fstab is None:
        out.notes.append("no /etc/fstab in the image: nothing checked")
        return
    out.fstab = [c.record() for c in linux_fstab.check(fstab, volumes, disk,  # warned apart
                                                       crypttab)]


def nothing_to_do(node: str, fstype: str | None) -> str | None:
    """Why the root on ``node`` has no initramfs to rebuild, read without mounting (a
    root mounted read-write changes: not without a reason), or None."""
    if not any(exists(node, fstype, f"/{p}") for p in (*DRACUT, *UPDATE)):
        return "the image has neither dracut nor update-initramfs: not rebuilt"
    if not any(exists(node, fstype, p) for p in ("/usr/lib/modules", "/lib/modules")):
        return "the image has no /lib/modules: no kernel installed, nothing rebuilt"
    return None


def needed(root: dict, fstab: str, volumes: list[dict], module: str | None, out: Outcome,
           tmpdir=None, lend=None) -> bool:
    """``auto``: whether the initramfs must be rebuilt, found without writing a byte
    (:func:`linux_look.look`): not when every kernel's initramfs holds ``module`` (or
    has it built in), nor when ``module`` is not known; ``out`` then says why."""
    if module is None:
        out.message = "the target's storage controller is not known (a loop device, iSCSI " \
            f"or USB names none): not rebuilt {ANYWAY}"
        return False
    try:
        tool, seen = look(root, fstab, volumes, module, tmpdir, lend)
    except (StillMounted, Refused) as e:  # nothing more is done with this disk
        out.status, out.warn = "failed", True
        out.message = f"the initramfs could not be looked at: {e}"
        return False
    except (MountError, OSError) as e:  # ToolError too
        out.notes.append(f"the initramfs could not be looked at without writing: {e}: "
                         "rebuilt")
        return True
    if why := nothing_there(tool, [k["version"] for k in seen]):
        out.warn, out.message = True, why
        return False
    if lacking := [k for k in seen if not k["contains_module"]]:
        out.notes += [f"before: kernel {k['version']}: {k['message']}: rebuilt"
                      for k in lacking]
        return True
    out.tool, out.kernels = tool, seen
    out.message = f"the initramfs of every kernel ({', '.join(k['version'] for k in seen)}) " \
        f"already holds {module}: not rebuilt {ANYWAY}"
    return False


def fix_root(disk: str, root: dict, volumes: list[dict], module: str | None, tmpdir=None,
             lend=None, mode: str = "auto", cancel=None) -> Outcome:
    """Check the fstab and rebuild the initramfs of the Linux root volume ``root``
    (``lend(nodes)``: the write gate's lend of those partitions); ``mode`` ``auto``:
    only when :func:`needed`, ``on``: always."""
    out = Outcome(root.get("number"), root.get("lv"))
    try:
        fstab = read_file(root["node"], root.get("fstype"), "/etc/fstab")
    except Unreadable as e:  # there, but where /boot is cannot be known
        out.status, out.warn = "failed", True
        out.message = f"{e}: where /boot is (and the rest of fstab) is unknown: not rebuilt"
        return out
    try:
        crypttab = read_file(root["node"], root.get("fstype"), "/etc/crypttab")
    except Unreadable as e:
        crypttab = None
        out.notes.append(f"{e}: its encrypted volumes are not known")
    _check_fstab(fstab, volumes, disk, out, crypttab)
    if why := nothing_to_do(root["node"], root.get("fstype")):
        out.status, out.message = "skipped", why
        return out
    if lost := unplaced(fstab or "", volumes).get("/boot"):
        out.status, out.warn = "failed", True  # its initramfs would go where nothing boots
        out.message = f"{lost.removesuffix(': not mounted')}: the initramfs would be " \
            "written into the root's own /boot directory, which this system does not " \
            "boot from: not rebuilt"
        return out
    if mode == "auto" and not needed(root, fstab or "", volumes, module, out, tmpdir, lend):
        return out
    if cancel is not None and cancel.is_set():  # Ctrl-C during the look: nothing mounted rw
        out.status, out.warn, out.message = "skipped", True, "cancelled (Ctrl-C): not rebuilt"
        return out
    if why := snapshotted(root, fstab or "", volumes):
        out.status, out.warn, out.message = "failed", True, why
        return out
    nodes = lent_nodes(root, fstab or "", volumes, root.get("pvs", []))
    work = tempfile.mkdtemp(prefix="rtk-linux-", dir=tmpdir)
    mounts = Mounts()
    try:
        with lend(nodes) if lend else contextlib.nullcontext():
            try:
                out.notes += mount_system(root, fstab or "", volumes, work, mounts)
                rebuild(work, module, out, mounts.devs, cancel)
            finally:
                mounts.close()
    except (MountError, OSError, Refused, ValueError) as e:  # ToolError, gate, decoding
        out.status, out.warn = "failed", True
        out.message = f"the initramfs could not be rebuilt: {e}"
    finally:
        if mounts.left:
            out.warn = True
            out.notes.append(f"still mounted (unmount by hand): {', '.join(mounts.left)}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _lvm_roots(disk: str, parts: list[dict], module: str | None, tmpdir, hold,
               mode: str = "auto", cancel=None) -> list:
    """The Linux roots on the logical volumes of the disk's physical volumes, fixed while
    their volume groups are active (the gate lends the physical volumes and the
    partitions a /boot may be on)."""
    pvs = lvm_members(parts)
    if not pvs:
        return []
    if not tools.installed("vgchange"):
        return [Outcome(None, status="skipped", warn=True, message=(
            f"the disk has LVM physical volumes ({', '.join(pvs)}) but lvm2 is not "
            "installed in the live system: their logical volumes are not looked into"))]
    nodes = pvs + [p["node"] for p in parts if p.get("fstype") in MOUNTABLE]
    outcomes, left = [], []
    try:
        with hold.lend(*nodes) if hold else contextlib.nullcontext(), \
                logical_volumes(pvs, left) as lvs:
            for lv in lvs:
                rel = os_release(lv["node"], lv["fstype"]) \
                    if lv["fstype"] in (*EXT, "xfs") else None
                if rel:
                    o = fix_root(disk, {**lv, "pvs": pvs}, parts + lvs, module, tmpdir,
                                 mode=mode, cancel=cancel)
                    o.system = rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux"
                    outcomes.append(o)
    except (MountError, OSError, Refused) as e:
        outcomes.append(Outcome(None, status="failed", warn=True, message=(
            f"the logical volumes on {', '.join(pvs)} could not be looked into: {e}")))
    if left:  # what was done stands; the person must deactivate by hand
        outcomes.append(Outcome(None, status="failed", warn=True, message="; ".join(left)))
    return outcomes


def run(plan, res, hold=None, cancel=None) -> dict | None:
    """The restore's step: every Linux root of ``res.contents`` (without one: of the
    logical volumes of its LVM physical volumes) rebuilt as
    ``plan.options.linux_initramfs`` says; the report's record (None: no Linux root and
    no LVM on the disk). What the person must know goes to ``res.warnings``."""
    mode = getattr(plan.options, "linux_initramfs", "auto")
    parts = (res.contents or {}).get("partitions", [])
    roots = [p for p in parts if p.get("os") == "Linux"]
    if not roots and not lvm_members(parts):
        return None
    if mode == "off":
        return {"mode": mode, "message": "not looked at: the Linux initramfs option is off",
                "roots": []}
    target = windows_drivers.target_controller(plan.target.disk, plan.options.sys_root)
    disk, tmpdir = plan.target.node, plan.options.tmpdir
    names = {s["partition"]: s["name"] for s in (res.contents or {}).get("systems", [])}
    outcomes = []
    volumes = parts + (lv_names(lvm_members(parts)) if roots else [])
    for p in roots:
        try:
            o = fix_root(disk, p, volumes, target.driver, tmpdir,
                         (lambda nodes: hold.lend(*nodes)) if hold else None, mode, cancel)
        except Exception as e:  # noqa: BLE001 - the image is written: a report, never a traceback
            o = Outcome(p.get("number"), status="failed", warn=True, message=(
                f"the Linux step stopped on an unexpected error ({type(e).__name__}: {e}): "
                "the image is written and verified; its initramfs may not be rebuilt"))
        o.system = names.get(p["number"])
        outcomes.append(o)
    if not roots:  # the root is on a logical volume, if anywhere
        outcomes += _lvm_roots(disk, parts, target.driver, tmpdir, hold, mode, cancel)
    for o in outcomes:
        if o.warn:
            res.warnings.append(f"Linux initramfs, {where(asdict(o))}: {o.message}")
        res.warnings += [f"Linux, {where(asdict(o))}: {c['message']}" for c in o.fstab
                         if not c["ok"]]
    return {"mode": mode, "target_controller": asdict(target),
            "roots": [o.record() for o in outcomes]}
