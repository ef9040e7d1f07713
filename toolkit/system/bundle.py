"""The logs bundle: one ``.tar.gz`` with everything a hand-over or a bug report needs,
with every CHAP secret masked.

``rtk-bundle-HOST-YYYYmmdd-HHMMSS/`` holds ``INDEX.txt`` and ``index.json`` (what is in it,
and what could not be collected and why: a tool that is not installed, one that failed or
timed out: the bundle is made anyway), ``state/`` (the state directory: reports, mapfiles,
logs), ``run/`` (this boot's roles and records), and ``system/``: this boot's journal
(``journalctl -b``), the kernel messages (``dmesg``), the disk probe
(:func:`toolkit.disks.probe.probe`, as ``rtk disks --dump-probe``), the iSCSI sessions
(from sysfs, and ``iscsiadm -m session -P 3``), the kernel command line.

Secrets (:func:`mask`): the ones given (an unattended run's CHAP passwords), the ones the
bundle finds (open-iscsi's node and discovery records in /etc/iscsi, credentials in the
kernel command line's ``iscsi:user:password@...``, ``password:`` values of plan files and
logs) are replaced by ``********`` wherever they appear in any file, percent-encoded too;
and every value written as ``password = X``, ``"password": "X"``, ``-n ...password -v X``,
``iscsi:user:password@`` or ``scheme://user:password@`` is masked even where the secret
itself is not known.

:func:`build` writes a bundle file; :func:`save_to` puts one in a directory (an
RTK-DATA partition, a filesystem the menu mounted); :func:`post` sends one with HTTP
POST (``Content-Type: application/gzip``). What is collected is
:mod:`toolkit.system.bundle_collect`'s, the masking :mod:`toolkit.system.bundle_secrets`',
the sending :mod:`toolkit.system.bundle_post`'s; :func:`collect`, :func:`mask` and
:func:`post` are imported from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field

from toolkit.atomic import TMP_SUFFIX, fsync_dir

# what is collected, how it is sent and masked, which callers import from here too
from toolkit.system.bundle_collect import COMMANDS, MAX_MEMBER, Entry, collect  # noqa: F401
from toolkit.system.bundle_post import Posted, post  # noqa: F401
from toolkit.system.bundle_secrets import mask  # noqa: F401
from toolkit.system.tools import MASK

SCHEMA = "rtk-bundle/1"


@dataclass
class Bundle:
    path: str
    name: str  # the file name, rtk-bundle-HOST-STAMP.tar.gz
    size: int
    sha256: str
    entries: list[Entry] = field(default_factory=list)

    def missing(self) -> list[Entry]:
        return [e for e in self.entries if e.status not in ("ok", "truncated", "empty")]


def bundle_name(now: float | None = None) -> str:
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname()) or "host"
    return f"rtk-bundle-{host}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.tar.gz"


def _index_text(name: str, entries: list[Entry], now: float) -> str:
    out = [f"Recovery Toolkit logs bundle {name}",
           f"made {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(now))} on "
           f"{socket.gethostname()}; CHAP secrets and passwords are masked ({MASK})", ""]
    width = max((len(e.name) for e in entries), default=10)
    for e in entries:
        note = f"  ({e.note})" if e.note else ""
        out.append(f"{e.status.upper():<9} {e.name:<{width}}  {e.what}{note}")
    missing = [e for e in entries if e.status in ("missing", "failed", "skipped")]
    if missing:
        out += ["", "Not collected:"] + [f"  {e.name}: {e.note}" for e in missing]
    return "\n".join(out) + "\n"


def build(out_path: str, **kw) -> Bundle:
    """Collect (:func:`collect`'s keywords) and write the bundle to ``out_path``
    atomically (temporary file, fsync, rename, fsync of the directory)."""
    now = kw.setdefault("now", time.time())
    name = os.path.basename(out_path)
    top = name.removesuffix(".tar.gz")
    members, entries = collect(**kw)
    index = {"schema": SCHEMA, "name": name, "time": now, "host": socket.gethostname(),
             "entries": [dataclasses.asdict(e) for e in entries]}
    members = [("INDEX.txt", _index_text(name, entries, now).encode()),
               ("index.json", (json.dumps(index, indent=1) + "\n").encode()), *members]
    tmp = f"{out_path}.{os.getpid()}{TMP_SUFFIX}"
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for member, data in members:
                    info = tarfile.TarInfo(f"{top}/{member}")
                    info.size, info.mtime, info.mode = len(data), int(now), 0o644
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        size = os.path.getsize(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(out_path)))
    return Bundle(out_path, name, size, h.hexdigest(), entries)


def save_to(directory: str, **kw) -> Bundle:
    """Build a bundle as ``DIRECTORY/rtk-bundle-HOST-STAMP.tar.gz`` (made if missing)."""
    os.makedirs(directory, exist_ok=True)
    now = kw.setdefault("now", time.time())
    return build(os.path.join(directory, bundle_name(now)), **kw)


@contextlib.contextmanager
def temporary(**kw):
    """A bundle in a temporary directory, removed afterwards (to be posted)."""
    with tempfile.TemporaryDirectory(prefix="rtk-bundle-") as d:
        yield save_to(d, **kw)
