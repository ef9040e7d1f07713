"""The restored image's own programs run shut in, and what they may see of the live system.

Every command runs as ``unshare --mount --pid --net --ipc --uts --fork --propagation
private --mount-proc=ROOT/proc python -m toolkit.restore.linux_jail ROOT ...``: in its
own mount and PID namespaces, so its /proc shows only its own processes (no
``/proc/PID/root`` of a live process leads out), and every process it started is killed
when it ends (the kernel kills a PID namespace's processes when its first one exits:
nothing of the image is left running, holding the disk); in a network namespace with no
way out; its /proc read-only and without the capabilities that reach past its own files
(:mod:`linux_jail`: no mknod, mount, BLKROSET, chroot). The live system's /proc is never
bound in.

Around it (:func:`pseudo`): a fresh tmpfs over the image's /dev with only the nodes a
build needs (null, zero, full, random, urandom, tty, console, and the restored disk's
own nodes, made with the same major:minor), the live /sys bound read-only, and a fresh
tmpfs over /tmp and /run: nothing of the live system the image could write. A file the
toolkit writes or reads back (:func:`on_image`) must be on one of the image's own
filesystems (their device numbers, taken before anything else is mounted).
"""

from __future__ import annotations

import os
import stat
import sys

from toolkit.system import mount, tools

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LANG": "C", "LC_ALL": "C", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
BUILD_TIMEOUT = 1800  # an initramfs under software emulation takes minutes
# name -> (major, minor, mode): the character devices of devices.txt a build uses
CHAR_NODES = {"null": (1, 3, 0o666), "zero": (1, 5, 0o666), "full": (1, 7, 0o666),
              "random": (1, 8, 0o666), "urandom": (1, 9, 0o666), "tty": (5, 0, 0o666),
              "console": (5, 1, 0o600)}
LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
         "stderr": "/proc/self/fd/2"}
TMPFS = (("tmp", "mode=1777"), ("run", "mode=0755"))


class MountError(Exception):
    """A mount the rebuild needs could not be made (said in words)."""


class OutOfImage(MountError, OSError):
    """A path of the image leads out of it, or onto what is not one of its filesystems."""


def argv_in(root: str, argv: list[str]) -> list[str]:
    return ["unshare", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork",
            "--propagation", "private", f"--mount-proc={os.path.join(root, 'proc')}",
            sys.executable, "-I", "-m", "toolkit.restore.linux_jail", root, *argv]


def chroot(root: str, argv: list[str], env: dict | None = None) -> str:
    """``argv`` run in the image's chroot, in its own namespaces; its output. A failure
    names ``argv``'s tool."""
    proc = os.path.join(root, "proc")
    if os.path.islink(proc) or not os.path.isdir(proc):
        raise OutOfImage("/proc of the image is not a directory: nothing run in it")
    try:
        return tools.run(argv_in(root, argv), env=env or ENV, timeout=BUILD_TIMEOUT).stdout
    except tools.ToolNotInstalled:
        raise
    except tools.ToolError as e:
        raise tools.ToolError(argv, e.status, e.stderr, stdout=e.stdout,
                              timeout=BUILD_TIMEOUT if e.timed_out else None) from None


def disk_nodes(volumes: list[dict]) -> list[str]:
    """The device nodes of ``volumes`` (with their aliases) and of the disks they are on
    (from sysfs), as the live system names them."""
    found = []
    for v in volumes:
        for node in (v.get("node"), *v.get("aliases", ())):
            if node and node not in found:
                found.append(node)
        name = os.path.basename(os.path.realpath(v["node"]))
        sysfs = os.path.realpath(f"/sys/class/block/{name}")
        if os.path.exists(os.path.join(sysfs, "partition")):
            disk = f"/dev/{os.path.basename(os.path.dirname(sysfs))}"
            if disk not in found:
                found.append(disk)
    return found


def make_dev(dev: str, nodes: list[str]) -> None:
    """The nodes a build needs in the fresh tmpfs ``dev``: :data:`CHAR_NODES`, the
    links to /proc/self/fd, and each of ``nodes`` (a block device of the live system's
    /dev) with the same major:minor."""
    for name, (major, minor, mode) in CHAR_NODES.items():
        os.mknod(os.path.join(dev, name), stat.S_IFCHR | mode, os.makedev(major, minor))
        os.chmod(os.path.join(dev, name), mode)
    for name, target in LINKS.items():
        os.symlink(target, os.path.join(dev, name))
    for d in ("pts", "shm"):
        os.mkdir(os.path.join(dev, d))
    for node in nodes:
        try:
            st = os.stat(node)
        except OSError:
            continue
        rel = os.path.normpath(node).removeprefix("/dev/")
        if not stat.S_ISBLK(st.st_mode) or rel.startswith(("/", "..")):
            continue
        where = os.path.join(dev, rel)
        os.makedirs(os.path.dirname(where), exist_ok=True)
        os.mknod(where, stat.S_IFBLK | 0o660, st.st_rdev)


def _point(where: str, d: str) -> str:
    path = os.path.join(where, d)
    if os.path.islink(path) or not os.path.isdir(path):
        raise OutOfImage(f"/{d} of the image is not a directory (a symlink?): not mounted")
    return path


def pseudo(where: str, mounts, nodes: list[str]) -> None:
    """A fresh /dev (:func:`make_dev` with ``nodes``), the live /sys read-only and a
    fresh /tmp and /run in the image mounted at ``where`` (``mounts``: a
    :class:`linux_mounts.Mounts`, which undoes them)."""
    dev = _point(where, "dev")
    mounts.mount("tmpfs", dev, fstype="tmpfs", options=("nosuid", "mode=0755", "size=16m"))
    make_dev(dev, nodes)
    sys = _point(where, "sys")
    mounts.mount("/sys", sys, options=("bind",))
    mount.mount("/sys", sys, options=("remount", "ro", "bind"))
    for d, mode in TMPFS:
        mounts.mount("tmpfs", _point(where, d), fstype="tmpfs",
                     options=("nosuid", "nodev", mode))


def on_image(root: str, path: str, devs: set[int]) -> str:
    """``root``/``path`` with its symlinks resolved, once it is inside ``root`` and on
    one of the filesystems ``devs`` (the nearest existing directory is looked at when it
    does not exist yet); else :class:`OutOfImage`."""
    where = os.path.realpath(os.path.join(root, path.lstrip("/")))
    top = os.path.realpath(root)
    if where != top and not where.startswith(top + os.sep):
        raise OutOfImage(f"{path} of the image leads out of it (to {where}): not used")
    probe = where
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if os.lstat(probe).st_dev not in devs:
        raise OutOfImage(f"{path} of the image leads onto a filesystem that is not the "
                         f"image's own (to {where}): not used")
    return where


TEXT_LIMIT = 64 << 20  # a modules.dep is a few hundred KiB; no configuration file is more


def read_text(root: str, path: str, devs: set[int], limit: int = TEXT_LIMIT) -> str:
    """The image's text file ``path`` read by the live system: its folder resolved inside
    the image (:func:`on_image`), the file itself never a symlink, a FIFO, a device or
    larger than ``limit`` (OSError in words: a hostile image cannot make the live system
    wait on a pipe or read /dev/zero), bytes that are not UTF-8 replaced. A missing file
    is FileNotFoundError."""
    where = os.path.join(on_image(root, os.path.dirname(path), devs), os.path.basename(path))
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP: a symlink
        raise OutOfImage(f"{path} of the image could not be read ({e.strerror}; a "
                         "symlink?): not used") from None
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_dev not in devs:
            raise OutOfImage(f"{path} is not a regular file of the image: not used")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OutOfImage(f"{path} of the image is larger than {limit >> 20} MiB: not used")
    return data.decode("utf-8", errors="replace")
