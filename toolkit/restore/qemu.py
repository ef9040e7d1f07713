"""Container formats (qcow2, VHD, VHDX, VMDK) through qemu-img.

qemu-img reads the container and writes raw bytes: ``qemu-img convert -n -t
none -W -m 16`` (O_DIRECT on the target, no page cache, flushed at the end;
out-of-order writes by 16 coroutines, as qemu-img advises for block
devices) with both sides seen through qemu's ``raw`` driver with
``offset=1MiB``, so qemu-img
writes everything but the first MiB; :mod:`toolkit.restore.write` writes that
last, read from the image by qemu-img. Verification is ``qemu-img compare`` of
the same two views (the target read with O_DIRECT), then the first MiB read
back. A verified restore converts in pieces (:func:`piece_size`) and compares
each one while the next is converted (:func:`toolkit.restore.qemu_compare.convert_and_compare`).

HTTP(S) sources of these formats are downloaded to a temporary file first,
not read through qemu-img's curl driver (which this qemu-img has: see
:func:`has_curl`). The curl driver reads with one Range request per cluster
run, has no resume of its own beyond a few retries, cannot be given a CA file
(only ``sslverify=off``), and the image's SHA-256 cannot be checked before
writing. A download is hashed while it runs, checked before anything is
written, and a truncated or corrupt file is refused with the target untouched.
The cost is temporary space: :func:`http_strategy` falls back to the curl
driver only when the file does not fit and no checksum or CA file was asked for.

qemu-img writes a block device only through the write gate's hold
(:class:`toolkit.disks.gate.WriteHold`, given as the restore's ``Target``): it gets the
hold's own descriptor (``pass_fds``) and opens ``/proc/self/fd/N``, the very device the
gate decided on and holds with O_EXCL, never a path that could lead elsewhere by now.
:func:`referenced_files` names the files a container refers to (backing files, VMDK
extents, a data file), which the gate treats as inputs of the restore.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading

from toolkit.blockio.blockdev import is_block_device
from toolkit.errors import Refused
from toolkit.restore.write import HEAD, Failed
from toolkit.system import tools

QEMU_IMG = "qemu-img"


class QemuError(tools.ToolError):
    """qemu-img failed: it refused the image (corrupt, truncated, unsupported) or could not
    convert or compare it. Its message names the subcommand, the last stderr line and the
    exit status: ``qemu-img info failed: Could not open 'x': ... (exit 1)``."""

    @property
    def name(self) -> str:
        sub = next((a for a in self.argv[1:] if not a.startswith("-")), None)
        return f"{self.tool} {sub}" if sub else self.tool


def url_secrets(args) -> list[str]:
    """The passwords (``user:PASSWORD@``) and queries (tokens) of the URLs in ``args``:
    masked in the log and in errors, as the reports do (a query ends at a single comma
    of the qemu options; ``,,`` is an escaped comma)."""
    out = []
    for a in args:
        for m in re.finditer(r"https?://([^/@\s]*)@", a):
            out.append(m.group(1).partition(":")[2])
        out += [m.group(1) for m in re.finditer(r"https?://[^?\s]*\?((?:[^,]|,,)*)", a)]
    return [y for x in out if x for y in {x, x.replace(",,", ",")}]


def _run(*args: str) -> str:
    return tools.run([QEMU_IMG, *args], error=QemuError, secrets=url_secrets(args)).stdout


def has_curl() -> bool:
    """Whether this qemu-img lists the ``https`` block driver (libcurl)."""
    try:
        text = tools.run([QEMU_IMG, "--help"], check=False, timeout=30).stdout
    except tools.ToolError:
        return False
    for line in text.splitlines():
        if line.startswith("Supported formats:"):
            return "https" in line.split()
    return False


def info(location: str, fmt: str) -> dict:
    """``qemu-img info --output=json`` of the image (format forced: never probed)."""
    return json.loads(_run("info", "--output=json", "-f", fmt, location))


# qemu block drivers a ``json:`` name may use: image formats and local files and devices.
# Any other (nbd, http(s), iscsi, ssh, nfs, rbd, gluster, blkdebug...) reads what the
# toolkit cannot resolve to a device: refused.
_LOCAL_DRIVERS = frozenset({"raw", "qcow2", "qcow", "qed", "vmdk", "vpc", "vhdx", "vdi",
                            "parallels", "file", "host_device", "host_cdrom"})
_LOCAL_PREFIXES = ("file:", "host_device:", "host_cdrom:")
_PLAIN_KEYS = frozenset({"driver", "locking", "node-name", "read-only", "aio", "cache",
                         "direct", "no-flush", "auto-read-only", "discard", "detect-zeroes",
                         "format", "offset", "size"})


def _unresolvable(location: str, name: str) -> Refused:
    return Refused(f"the image's backing file is {name} (which {location} refers to): the "
                   "toolkit cannot tell that it does not read the target: refused")


def _json_names(location: str, name: str) -> list[str]:
    """Every file a ``json:{...}`` name opens (its "filename" keys, nested or dotted);
    :class:`Refused` for a driver that is not a local file or format."""
    try:
        tree = json.loads(name[5:])
    except ValueError:
        raise _unresolvable(location, name) from None
    out: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                leaf = key.rsplit(".", 1)[-1]
                if leaf == "driver" and value not in _LOCAL_DRIVERS:
                    raise _unresolvable(location, name)
                if leaf == "filename":
                    if not isinstance(value, str):
                        raise _unresolvable(location, name)
                    out.append(value)
                elif isinstance(value, dict | list):
                    walk(value)
                elif leaf not in _PLAIN_KEYS and isinstance(value, str) and value:
                    # "backing": a node name, "server", "url", "path"...: not a file named
                    raise _unresolvable(location, name)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(tree)
    if not out:
        raise _unresolvable(location, name)
    return out


def referenced_files(location: str, fmt: str) -> list[str]:
    """The local files and devices the image ``location`` makes qemu-img read besides
    itself: its backing chain, VMDK extents (a descriptor may name a raw device) and a
    qcow2 external data file; a ``json:`` name by every "filename" in it.

    Raises :class:`Refused` when it cannot be told: qemu-img info fails on the image or
    its chain, or a name is of a protocol (``nbd://``, ``http:``, ``iscsi:``, ``ssh:``...)
    that the write gate cannot follow to a device."""
    found: list[str] = []

    def add(name) -> None:
        if not isinstance(name, str) or not name or name == location:
            return
        if name.startswith("json:"):
            for n in _json_names(location, name):
                add(n)
            return
        for prefix in _LOCAL_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        else:
            if ":" in name.split("/", 1)[0]:  # nbd://, http:, iscsi:, ssh:, nbd:host:port...
                raise _unresolvable(location, name)
        path = os.path.abspath(name)  # qemu-img names them as opened: relative to here
        if path != os.path.abspath(location) and path not in found:
            found.append(path)

    try:
        chain = json.loads(_run("info", "--backing-chain", "--output=json", "-f", fmt,
                                location))
    except (tools.ToolError, ValueError) as e:
        try:  # the image alone (qemu-img info opens no backing file): name what it names
            top = json.loads(_run("info", "--output=json", "-f", fmt, location))
        except (tools.ToolError, ValueError) as alone:  # not even the image itself opens
            raise Refused(f"qemu-img cannot open the image {location} ({alone}): it is "
                          "damaged or truncated; nothing was written") from None
        if isinstance(top, dict):
            add(top.get("backing-filename"))  # a protocol or json: refused by its name
        raise Refused(f"cannot tell which files the image {location} reads ({e}): "
                      "refused") from None
    for layer in chain if isinstance(chain, list) else [chain]:
        add(layer.get("filename"))
        add(layer.get("full-backing-filename"))
        if layer.get("backing-filename") and not layer.get("full-backing-filename"):
            add(layer.get("backing-filename"))
        data = (layer.get("format-specific") or {}).get("data") or {}
        add(data.get("data-file"))
        for extent in data.get("extents") or []:
            add(extent.get("filename"))
    return found


def _target_file(target, *, writing: bool) -> tuple[str, tuple[int, ...]]:
    """What qemu-img opens as the target, and the descriptors it inherits: the write
    gate's hold (a restore's ``Target`` or a ``WriteHold``) as ``/proc/self/fd/N`` of its
    own descriptor; a path only to read, or to write a regular file."""
    hold = getattr(target, "hold", None) or (target if hasattr(target, "fd_path") else None)
    if hold is not None:
        try:
            return hold.fd_path(), (hold.fd,)
        except Refused as e:  # the hold was lost after writing began: a failure
            raise Failed(str(e)) from None
    if writing and is_block_device(target):
        raise Failed(f"{target} is a block device: it is written only through the write "
                     "gate's hold")
    return target, ()


def target_to_read(target) -> tuple[str, tuple[int, ...]]:
    """What qemu-img opens to read the target (a compare), and the descriptors it inherits
    (see :func:`_target_file`)."""
    return _target_file(target, writing=False)


def check(path: str, fmt: str) -> list[str]:
    """What ``qemu-img check`` finds wrong: corruption, or data past the end of the file
    (a truncated copy: qemu-img convert would read zeros there and succeed).

    Exit codes: 0 clean, 3 leaked clusters only (harmless), 63 the format has no
    check (VHD: its open already fails on a truncated file), 1 and 2 errors.
    """
    p = tools.run([QEMU_IMG, "check", "-f", fmt, path], check=False)
    if p.returncode in (0, 3, 63):
        return []
    lines = [x.strip() for x in (p.stderr + p.stdout).splitlines() if x.strip()]
    shown = "; ".join(lines[:3]) + (f" (and {len(lines) - 3} more lines)" if len(lines) > 3
                                     else "")
    return [f"qemu-img check finds {path} damaged or truncated: {shown}"]


def _opt(value: str) -> str:
    return value.replace(",", ",,")


def source_opts(location: str, fmt: str, offset: int, size: int, *, curl: dict | None = None
                ) -> str:
    """The image's bytes ``[offset, offset+size)`` as qemu ``--image-opts``."""
    if curl is not None:
        proto = "https" if location.startswith("https:") else "http"
        leaf = f"file.file.driver={proto},file.file.url={_opt(location)}"
        if curl.get("insecure"):
            leaf += ",file.file.sslverify=off"
        leaf += ",file.file.timeout=60"
    else:
        leaf = f"file.file.driver=file,file.file.filename={_opt(location)}"
    return f"driver=raw,offset={offset},size={size},file.driver={fmt},{leaf}"


def target_opts(path: str, offset: int, size: int, *, locking: bool = True) -> str:
    """The target's bytes ``[offset, offset+size)``, read and written with O_DIRECT.

    ``locking=False``: without qemu's image locks, for a compare that reads
    while a qemu-img convert writes other bytes of the target (which keeps its
    locks: a QEMU guest using the disk would make it fail). The restore itself
    holds the target open with O_EXCL."""
    driver = "host_device" if is_block_device(path) else "file"
    return (f"driver=raw,offset={offset},size={size},file.driver={driver},"
            f"file.filename={_opt(path)},file.cache.direct=on"
            + ("" if locking else ",file.locking=off"))


def first_mib(location: str, fmt: str, virtual_size: int, curl: dict | None = None) -> bytes:
    """The image's first MiB (or all of it, when smaller), read by qemu-img."""
    return read_range(location, fmt, 0, min(HEAD, virtual_size), curl=curl)


def convert_range_to_file(location: str, fmt: str, offset: int, length: int, out: str,
                          curl: dict | None = None) -> None:
    """The image's bytes ``[offset, offset+length)`` into the new raw file ``out``
    (sparse: qemu-img skips the zeros). ``out`` is a new name in the caller's own
    temporary directory: anything already there (a file, a link, a device) is refused."""
    if os.path.lexists(out):
        raise FileExistsError(f"{out} exists: qemu-img writes only a new file here")
    _run("convert", "--image-opts", source_opts(location, fmt, offset, length, curl=curl),
         "-O", "raw", out)


def read_range(location: str, fmt: str, offset: int, length: int,
               curl: dict | None = None) -> bytes:
    """The image's bytes ``[offset, offset+length)``, read by qemu-img."""
    with tempfile.TemporaryDirectory(prefix="rtk-head-") as d:
        out = os.path.join(d, "range")
        convert_range_to_file(location, fmt, offset, length, out, curl)
        with open(out, "rb") as f:
            return f.read(length)


def with_progress(args: list[str], progress, cancel: threading.Event,
                   pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Run qemu-img with ``-p``, calling ``progress(fraction)``; terminate it on cancel.
    ``proc.failure()``: the QemuError for its exit status. ``pass_fds``: the write gate's
    descriptor, which ``/proc/self/fd/N`` in the arguments names."""
    proc = tools.popen([QEMU_IMG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       pass_fds=pass_fds)
    stop = threading.Event()

    proc.stopped = False  # terminated by us (a cancel), not killed by someone else

    def watch():
        while not stop.wait(0.2):
            if cancel.is_set():
                proc.stopped = True
                proc.terminate()
                return

    threading.Thread(target=watch, daemon=True).start()
    buf, said = b"", []
    while True:
        data = proc.stdout.read1(4096)
        if not data:
            break
        buf += data
        *parts, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for part in parts:
            text = part.decode(errors="replace").strip()
            if text.startswith("(") and "/100%" in text:
                with contextlib.suppress(ValueError):
                    progress(float(text[1:text.index("/")]) / 100)
            elif text:
                said.append(text)  # e.g. compare's "Content mismatch at offset N!"
    proc.wait()
    stop.set()
    proc.stdout_text = "\n".join([*said, buf.decode(errors="replace").strip()]).strip()
    proc.stderr_text = proc.stderr.read().decode(errors="replace").strip()
    proc.failure = lambda: tools.failure([QEMU_IMG, *args], proc.returncode, proc.stderr_text,
                                         stdout=proc.stdout_text, error=QemuError,
                                         secrets=url_secrets(args))
    return proc


def convert_rest(location: str, fmt: str, target, virtual_size: int, progress,
                 cancel: threading.Event, curl: dict | None = None) -> None:
    """Write the image's bytes after its first MiB onto ``target`` (same offsets)."""
    if virtual_size > HEAD:
        convert_range(location, fmt, target, HEAD, virtual_size - HEAD, progress, cancel,
                      curl)


def convert_range(location: str, fmt: str, target, start: int, length: int, progress,
                  cancel, curl: dict | None = None) -> None:
    """Write the image's bytes ``[start, start+length)`` onto the same bytes of ``target``
    (the write gate's hold; a path: a regular file only); qemu-img fdatasyncs the target
    before it exits."""
    name, fds = _target_file(target, writing=True)
    # -W -m 16: out-of-order writes, 16 coroutines (qemu-img recommends -W for block
    # devices; the first MiB is written last anyway): 30 % faster than the default here
    args = ["convert", "-p", "-n", "-t", "none", "-W", "-m", "16", "--image-opts",
            source_opts(location, fmt, start, length, curl=curl),
            "--target-image-opts", target_opts(name, start, length)]
    proc = with_progress(args, progress, cancel, fds)
    if cancel.is_set():
        raise Failed("cancelled", "cancelled")
    if proc.returncode:
        raise proc.failure()


PIECE = 1 << 30  # at most this many bytes converted, then compared, at a time (see piece_size)
PIECES = 8  # ... and the image cut in about this many pieces, of at least 64 MiB


def piece_size(size: int) -> int:
    """How much a verified restore converts before comparing it: an eighth of the
    image, from 64 MiB to :data:`PIECE`, in whole MiB. Smaller pieces leave less to
    compare once the last conversion ends, and less of the source for the page
    cache to hold until its compare; but each costs five qemu-img runs, and on a
    target that is the slower side the comparison slows the conversion down
    (measured in docs/benchmarks.md: eight pieces keep that to a few per cent)."""
    n = -(-size // PIECES // HEAD) * HEAD  # rounded up to whole MiB
    return max(min(n, PIECE), min(64 << 20, PIECE))


def http_strategy(size: int | None, tmpdir: str, *, want_hash: bool, ca_file: str | None
                  ) -> str:
    """``"download"`` (the default) or ``"curl"``; raises ValueError when neither fits."""
    free = shutil.disk_usage(tmpdir).free
    if size is None or size + (64 << 20) <= free:
        return "download"
    why = (f"the image ({size if size is not None else 'unknown size'} bytes) does not fit "
           f"in {tmpdir} ({free} bytes free)")
    if want_hash or ca_file:
        raise ValueError(f"{why}; qemu-img's curl driver cannot check a SHA-256 before "
                         "writing nor use a CA file: set a larger --tmpdir")
    if not has_curl():
        raise ValueError(f"{why}, and this qemu-img has no curl (https) driver")
    return "curl"


def __getattr__(name: str):
    """The comparison's names, still reachable here (they live in
    :mod:`toolkit.restore.qemu_compare`, which imports this module)."""
    if name in ("COMPARE_PIECES", "compare_range", "convert_and_compare"):
        from toolkit.restore import qemu_compare
        return getattr(qemu_compare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
