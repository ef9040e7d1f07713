"""The last step into the restored image's chroot: what its programs may no longer do.

``python -m toolkit.restore.linux_jail ROOT ARGV...`` runs as the first process of the
namespaces :func:`linux_chroot.argv_in` makes (its own mount, PID, network, IPC and UTS
namespaces, ROOT/proc its own). Before it runs ``ARGV`` in the chroot it

- makes ROOT/proc read-only (no ``/proc/sys`` setting, no ``/proc/sysrq-trigger``:
  ``kernel.core_pattern`` or ``modprobe`` would run a program of the image outside it);
- enters the chroot and drops every capability a build does not need from the bounding
  set (:data:`KEEP`: file ownership and permissions, setuid/setgid, kill), clears the
  inheritable and ambient sets and sets no_new_privs: the image's programs stay root for
  its own files but cannot make a device node (``mknod`` of another disk), mount or
  unmount, clear a disk's read-only flag (``BLKROSET``), chroot again (the escape to the
  live system's root through a chroot in a subdirectory), open a file by handle, load a
  module, reboot, or reach the network (a namespace with only a loopback that is down).

The image's own filesystems are mounted ``nodev`` and ``nosuid`` (:mod:`linux_mounts`):
a device node the image carries opens nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

# linux/capability.h: what a build keeps
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL = 0, 1, 3, 4, 5
CAP_SETGID, CAP_SETUID, CAP_SETFCAP = 6, 7, 31
KEEP = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID,
        CAP_SETUID, CAP_SETFCAP}
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
CAPABILITY_VERSION_3 = 0x20080522
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
EXIT_JAIL = 125  # the jail could not be made: nothing of the image ran


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def read_only(path: str) -> None:
    """``path`` (a mount point) read-only, as ``mount -o remount,bind,ro`` does."""
    _check(_libc.mount(None, path.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None),
           f"read-only {path}")


def drop_capabilities(last: int) -> None:
    """Every capability but :data:`KEEP` out of the bounding set, none inheritable or
    ambient, no_new_privs."""
    for cap in range(last + 1):
        if cap not in KEEP:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient set")
    header = _Header(CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for d in data:
        d.inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def enter(root: str) -> None:
    """ROOT/proc read-only, into the chroot, capabilities dropped."""
    last = last_cap()  # read from the live /proc while it is there
    read_only(os.path.join(root, "proc"))
    os.chroot(root)
    os.chdir("/")
    drop_capabilities(last)


def main(args: list[str]) -> int:
    if len(args) < 2:
        print("usage: python -m toolkit.restore.linux_jail ROOT ARGV...", file=sys.stderr)
        return 2
    try:
        enter(args[0])
    except OSError as e:
        print(f"the image's chroot could not be made safe ({e}): nothing run in it",
              file=sys.stderr)
        return EXIT_JAIL
    try:
        os.execvpe(args[1], args[1:], os.environ)  # PATH from the environment, in the chroot
    except OSError as e:
        print(f"{args[1]}: {e.strerror} in the image", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
