"""A restored Linux image's kernels, its initramfs tool and files, and a look at whether
each kernel's initramfs holds a module, without writing a byte of the disk.

The look (:func:`look`, for ``--linux-initramfs auto``) mounts the root and its own
``/boot`` read-only with no journal replayed (:func:`linux_mounts.mount_readonly`), on
devices the kernel itself is told are read-only meanwhile, with a fresh /dev, /tmp and
/run and the live /sys read-only (mounting over a directory writes nothing to the
filesystem). In a chroot in its own namespaces (:func:`linux_chroot.chroot`), the
image's own lsinitramfs (dracut: lsinitrd) lists each kernel's existing initramfs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile

from toolkit.restore.linux_chroot import ENV, chroot, read_text
from toolkit.restore.linux_mounts import (
    MountError,
    Mounts,
    boot_volumes,
    inside,
    lent_nodes,
    mount_readonly,
    read_only,
)

DRACUT = ("usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut", "bin/dracut")
UPDATE = ("usr/sbin/update-initramfs", "sbin/update-initramfs")
LOOK_ENV = {**ENV, "TMPDIR": "/tmp"}  # the tmpfs: not the image's /var/tmp
LOOK_POINTS = ("/boot",)  # where the initramfs files are


class StillMounted(MountError):
    """What the look mounted could not all be unmounted: nothing more is done."""


def kernels(root: str) -> list[str]:
    """The kernel versions installed in the image at ``root``: a directory of
    ``lib/modules`` (or ``usr/lib/modules``) with a ``boot/vmlinuz-VERSION``."""
    found = set()
    for mods in ("lib/modules", "usr/lib/modules"):
        with contextlib.suppress(OSError):
            found.update(v for v in os.listdir(os.path.join(root, mods))
                         if os.path.isdir(os.path.join(root, mods, v)))
    return sorted(v for v in found if os.path.isfile(os.path.join(root, "boot",
                                                                  f"vmlinuz-{v}")))


def _exists(root: str, paths) -> bool:
    return any(os.path.lexists(os.path.join(root, p)) for p in paths)


def image_tool(root: str) -> str | None:
    """``dracut`` when the image has it, else ``update-initramfs``; None: neither."""
    if _exists(root, DRACUT):
        return "dracut"
    return "update-initramfs" if _exists(root, UPDATE) else None


def nothing_there(tool: str | None, versions: list[str]) -> str | None:
    """Why an image with ``tool`` and kernels ``versions`` has nothing to rebuild."""
    if tool is None:
        return "the image has neither dracut nor update-initramfs: not rebuilt"
    if not versions:
        return "no kernel is installed in the image (no /lib/modules/VERSION with its " \
               "/boot/vmlinuz-VERSION): nothing rebuilt"
    return None


def initramfs_name(tool: str, root: str, version: str) -> str:
    """The initramfs file of ``version``, as the image names it: Debian's
    ``/boot/initrd.img-V`` (update-initramfs always); with dracut the one of these the
    image has: Debian's, Fedora's and RHEL's ``/boot/initramfs-V.img``, SUSE's
    ``/boot/initrd-V`` (its boot loader loads that one), else Fedora's."""
    debian = f"/boot/initrd.img-{version}"
    if tool == "update-initramfs":
        return debian
    names = (debian, f"/boot/initramfs-{version}.img", f"/boot/initrd-{version}")
    return next((n for n in names if os.path.lexists(os.path.join(root, n[1:]))), names[1])


def listing_argv(tool: str, name: str) -> list[str]:
    return ["lsinitrd", name] if tool == "dracut" else ["lsinitramfs", name]


def norm(module: str) -> str:
    return module.replace("-", "_")


def module_state(root: str, version: str, module: str) -> str | None:
    """``module`` in the image's kernel ``version``: "module", "builtin", or None."""
    want = norm(module)
    devs = {os.stat(root).st_dev}
    for mods in ("lib/modules", "usr/lib/modules"):
        for name, state in (("modules.dep", "module"), ("modules.builtin", "builtin")):
            try:  # read as the image's own file: never a FIFO, a device or out of it
                text = read_text(root, f"{mods}/{version}/{name}", devs)
            except OSError:
                continue
            for line in text.splitlines():
                path = line.split(":", 1)[0].strip()
                if norm(re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(path))) == want:
                    return state
    return None


def has_module(listing: str, module: str) -> bool:
    """Whether an initramfs listing (lsinitramfs, lsinitrd) holds ``module``'s file."""
    pat = re.compile(r"(^|/)" + re.escape(norm(module)).replace("_", "[-_]")
                     + r"\.ko(\.(xz|zst|gz|bz2|lz4))?$")
    return any(pat.search(line.split()[-1]) for line in listing.splitlines() if line.split())


def kernel_text(k: dict) -> str:
    """What a kernel's record says of its initramfs, in words."""
    size = f"{k['file']}, {k['size']} bytes"
    if k.get("module") is None:
        return f"{size}: the target's controller module is not known"
    if k.get("state") == "builtin":
        return f"{size}: {k['module']} is built into this kernel"
    if k.get("state") is None:
        return f"{size}: this kernel has no {k['module']} module: it cannot find its root " \
               "on the target's controller"
    return f"{size}: {'holds' if k['contains_module'] else 'does NOT hold'} {k['module']}"


def seen_kernel(root: str, tool: str, version: str, module: str) -> dict:
    """The record of ``version``'s existing initramfs, listed (not rebuilt):
    ``contains_module`` None when there is no such file or it cannot be listed."""
    name = initramfs_name(tool, root, version)
    rec = {"version": version, "file": name, "size": None, "module": module,
           "state": module_state(root, version, module), "contains_module": None}
    path = inside(root, name, made=False)  # a symlink out of the image: not followed
    if not os.path.isfile(path):
        rec["message"] = f"{name}: there is no such file"
        return rec
    rec["size"] = os.path.getsize(path)
    if rec["state"] == "builtin":
        rec["contains_module"] = True
    else:
        try:
            listing = chroot(root, listing_argv(tool, name), LOOK_ENV)
        except OSError as e:  # ToolError too
            rec["message"] = f"{name} could not be listed: {e}"
            return rec
        rec["contains_module"] = has_module(listing, module)
    rec["message"] = kernel_text(rec)
    return rec


def look(root: dict, fstab: str, volumes: list[dict], module: str, tmpdir=None,
         lend=None) -> tuple[str | None, list[dict]]:
    """The image's tool and the record of each installed kernel's existing initramfs
    (:func:`seen_kernel`), read from the root volume ``root`` and its /boot mounted
    read-only (``lend(nodes)``: the write gate's lend of those partitions)."""
    nodes = lent_nodes(root, fstab, volumes, root.get("pvs", []), LOOK_POINTS)
    work = tempfile.mkdtemp(prefix="rtk-linux-", dir=tmpdir)
    mounts = Mounts()
    try:
        with lend(nodes) if lend else contextlib.nullcontext():
            try:
                devices = [root["node"]] + [v["node"] for _, v in mount_points(fstab, volumes)]
                with read_only(devices):
                    try:
                        mount_readonly(root, fstab, volumes, work, mounts, LOOK_POINTS)
                        tool = image_tool(work)
                        return tool, [seen_kernel(work, tool, v, module)
                                      for v in (kernels(work) if tool else [])]
                    finally:
                        mounts.close()
            finally:
                if mounts.left:
                    raise StillMounted(f"still mounted after the look (unmount by hand): "
                                       f"{', '.join(mounts.left)}")
    finally:
        if not mounts.left:
            shutil.rmtree(work, ignore_errors=True)


def mount_points(fstab: str, volumes: list[dict]) -> list[tuple[str, dict]]:
    """The (mount point, volume) pairs the look mounts besides the root."""
    return [(mp, v) for mp, v in boot_volumes(fstab, volumes)[0] if mp in LOOK_POINTS]
