"""Disk images seen as plain files: ``qemu-storage-daemon`` with FUSE exports.

A restore onto a smaller disk shrinks filesystems without ever changing the image
(:mod:`toolkit.restore.shrink`): the changes go to a qcow2 overlay whose backing file
is the image (:func:`create_overlay`: ``qemu-img create -f qcow2 -b IMAGE -F FORMAT``),
and the tools that shrink (ntfsresize, resize2fs) and the restore that writes read
the overlay, or a byte range of it (one partition), through a FUSE export: a regular
file of exactly that range (:func:`exported`). The same works for every format
qemu-img reads (raw, qcow2, VHD, VHDX, VMDK) and needs no nbd or device-mapper in
the kernel, only FUSE.

One daemon exports at most one writable range: a FUSE export needs the ``resize``
permission of its node, which a second range of the same node would forbid. Ranges
are exported read-only together (:func:`exported` with several ``ranges``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from toolkit.blockio.blockdev import is_block_device
from toolkit.system import tools

DAEMON = "qemu-storage-daemon"
START_TIMEOUT = 15.0  # seconds for the exports to appear
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGTERM when the thread that started it ends (the
    restore killed: the daemon unmounts its exports and exits, never left holding the
    image)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ExportError(tools.ToolError):
    """The daemon did not export the image (its last stderr line says why)."""


@dataclass(frozen=True)
class Range:
    """Bytes ``offset`` to ``offset + size`` of the image (``size`` None: to its end)."""

    offset: int = 0
    size: int | None = None


def create_overlay(image: str, fmt: str, overlay: str) -> None:
    """A qcow2 file at ``overlay`` whose reads fall through to ``image`` (of qemu format
    ``fmt``) until written; the image itself is only ever opened read-only."""
    tools.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt,
               "-b", os.path.abspath(image), overlay])


def _blockdevs(image: str, fmt: str, ranges: list[Range], writable: bool) -> list[str]:
    ro = "" if writable else ",read-only=on"
    kind = "host_device" if is_block_device(image) else "file"
    args = ["--blockdev", f"driver={kind},node-name=f,filename={_opt(image)}{ro}",
            "--blockdev", f"driver={fmt},node-name=img,file=f{ro}"]
    for i, r in enumerate(ranges):
        size = f",size={r.size}" if r.size is not None else ""
        args += ["--blockdev", f"driver=raw,node-name=r{i},file=img,offset={r.offset}{size}{ro}"]
    return args


def _opt(value: str) -> str:
    """A value in qemu's option syntax (a comma is doubled)."""
    return value.replace(",", ",,")


def _wait(proc: subprocess.Popen, paths: list[str], sizes: list[int | None]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise tools.failure(proc.args, proc.returncode, err, error=ExportError)
        if all(_mounted(p) and (s is None or os.path.getsize(p) == s)
               for p, s in zip(paths, sizes, strict=True)):
            return
        time.sleep(0.05)
    _stop(proc, paths)
    raise ExportError(proc.args, None, message=f"{DAEMON} did not export the image in "
                                               f"{START_TIMEOUT:.0f} s")


def _mounted(path: str) -> bool:
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == real for line in f if len(line.split()) > 1)
    except OSError:
        return False


def _stop(proc: subprocess.Popen, paths: list[str]) -> None:
    """SIGTERM (the daemon unmounts its exports), then anything left unmounted lazily."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for p in paths:
        if _mounted(p):
            tools.run(["umount", "-l", p], check=False)


@contextlib.contextmanager
def exported(image: str, fmt: str, ranges: list[Range] | None = None, *,
             writable: bool = False, workdir: str | None = None) -> Iterator[list[str]]:
    """The byte ranges of ``image`` (qemu format ``fmt``; default: all of it) as regular
    files, one per range, while the block runs; ``writable`` (one range only) writes
    go to ``image`` itself: give an overlay (:func:`create_overlay`), never the image."""
    ranges = ranges or [Range()]
    if writable and len(ranges) != 1:
        raise ValueError("one writable range per daemon")
    with tempfile.TemporaryDirectory(prefix="rtk-export-", dir=workdir) as d:
        paths = [os.path.join(d, f"range{i}") for i in range(len(ranges))]
        args = [DAEMON, *_blockdevs(image, fmt, ranges, writable)]
        for i, p in enumerate(paths):
            open(p, "w").close()  # a FUSE export's mount point is a regular file
            args += ["--export", f"type=fuse,id=e{i},node-name=r{i},mountpoint={_opt(p)},"
                     f"writable={'on' if writable else 'off'}"]
        proc = tools.popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        try:
            _wait(proc, paths, [r.size for r in ranges])
            yield paths
        finally:
            _stop(proc, paths)
