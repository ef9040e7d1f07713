"""Reports of long operations (copy, verify, restore, an unattended run), as JSON and
plain text.

A report is a JSON-able dict plus a plain text rendering of it, written side
by side under :data:`toolkit.system.paths.LOG_DIR` as ``KIND-YYYYmmdd-HHMMSS.json``
and ``.txt`` (``-2``, ``-3``... when two land in the same second). Both files
are written atomically, so a report is either complete or absent. A long job (a copy)
writes its report at the start and rewrites it in place (:func:`rewrite_report`) as it
goes: after a power cut, the last version says what was done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from toolkit.system.paths import LOG_DIR


@dataclass(frozen=True)
class ReportPaths:
    json: str
    text: str


def log_dir() -> str:
    """The report directory (``RTK_LOG_DIR`` is read each time, for tests)."""
    return os.environ.get("RTK_LOG_DIR", LOG_DIR)


def safe_url(url: str | None) -> str | None:
    """``url`` without ``user:password@`` and without its query (tokens). A multicast
    location (``udpcast://NIC@PORT?sha256=...``) holds no secret and is kept whole: its
    ``NIC@`` is the machine's interface, not a user name."""
    if not url or "://" not in url or url.startswith("udpcast://"):
        return url
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


def iso_time(t: float) -> str:
    """Local time with its UTC offset: ``2025-06-01T14:03:22+02:00``."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def to_jsonable(obj):
    """Dataclasses, tuples and sets become dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    return obj


def render_text(title: str, sections: list[tuple[str, list[tuple[str, object]]]]) -> str:
    """Plain text: a title, then sections of aligned ``key: value`` lines (a row with an
    empty key, such as a warning: a ``- value`` list item)."""
    out = [title, "=" * len(title)]
    for heading, rows in sections:
        out += ["", heading]
        width = max((len(k) for k, _v in rows), default=0)
        for key, value in rows:
            text = "-" if value is None or value == "" else str(value)
            lines = text.splitlines() or ["-"]
            if not key:
                out += [f"  - {lines[0]}", *(f"    {line}" for line in lines[1:])]
                continue
            out.append(f"  {key + ':':<{width + 1}} {lines[0]}")
            out += [f"  {'':<{width + 1}} {line}" for line in lines[1:]]
    return "\n".join(out) + "\n"


def write_report(kind: str, data: dict, text: str, *, directory: str | None = None,
                 when: float | None = None, paths: ReportPaths | None = None) -> ReportPaths:
    """Write ``KIND-YYYYmmdd-HHMMSS.json`` and ``.txt``; return their paths. With
    ``paths`` (a report written before: a job's partial report), replace those files
    (:func:`rewrite_report`)."""
    if paths is not None:
        return rewrite_report(paths, data, text)
    directory = directory or log_dir()
    os.makedirs(directory, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when or time.time()))
    base = os.path.join(directory, f"{kind}-{stamp}")
    n = 1
    while not _claim(base):  # another report of this second: two copies of one job
        n += 1
        base = os.path.join(directory, f"{kind}-{stamp}-{n}")
    paths = ReportPaths(json=base + ".json", text=base + ".txt")
    _atomic_write(paths.json, json.dumps(to_jsonable(data), indent=1, sort_keys=False) + "\n")
    _atomic_write(paths.text, text)
    return paths


def _claim(base: str) -> bool:
    """Take the name ``base``.json/.txt for this report: created exclusively, so two jobs
    writing in the same second (the pairs of a copy job) never share a report."""
    if os.path.lexists(base + ".txt"):
        return False
    try:
        os.close(os.open(base + ".json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o644))
    except FileExistsError:
        return False
    return True


def rewrite_report(paths: ReportPaths, data: dict, text: str) -> ReportPaths:
    """Replace the report at ``paths`` (both files, each atomically): a long job writes
    its report when it starts and rewrites it as it goes, so that a power cut leaves one
    that says what was done so far; the last version is the final report."""
    _atomic_write(paths.json, json.dumps(to_jsonable(data), indent=1, sort_keys=False) + "\n")
    _atomic_write(paths.text, text)
    return paths


def _atomic_write(path: str, content: str) -> None:
    """Temporary file, fsync, rename, fsync of the directory: a power cut leaves the old
    version or the new one (:func:`toolkit.atomic.write_atomic`)."""
    from toolkit.atomic import write_atomic

    write_atomic(path, content)
