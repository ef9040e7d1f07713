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
POST (``Content-Type: application/gzip``).
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from toolkit.system import paths, tools
from toolkit.system.atomic import TMP_SUFFIX, fsync_dir
from toolkit.system.tools import MASK

SCHEMA = "rtk-bundle/1"
MAX_MEMBER = 64 << 20  # bytes kept of one file or command output (its end, for logs)
ISCSI_DB = "/etc/iscsi"  # open-iscsi's records: node and discovery CHAP settings
MIN_FOUND_SECRET = 4  # a value found by its shape is masked everywhere only from this length

COMMANDS = (  # (member, argv, what it is)
    ("system/journal.txt", ("journalctl", "-b", "--no-pager", "-o", "short-iso-precise"),
     "this boot's journal"),
    ("system/dmesg.txt", ("dmesg", "--ctime"), "kernel messages"),
    ("system/iscsiadm-session.txt", ("iscsiadm", "-m", "session", "-P", "3"),
     "iSCSI sessions (iscsiadm)"),
)


@dataclass
class Entry:
    """One line of the index: a member of the bundle, or something that is missing."""

    name: str
    what: str
    status: str  # "ok", "truncated", "empty", "missing" (not installed), "failed", "skipped"
    note: str = ""
    size: int = 0


@dataclass
class Bundle:
    path: str
    name: str  # the file name, rtk-bundle-HOST-STAMP.tar.gz
    size: int
    sha256: str
    entries: list[Entry] = field(default_factory=list)

    def missing(self) -> list[Entry]:
        return [e for e in self.entries if e.status not in ("ok", "truncated", "empty")]


# --- secrets ------------------------------------------------------------------------------

_KEY = r"[\w.-]*(?:password|passwd|secret|password_in)"
_ASSIGN = re.compile(r"(?i)(\b" + _KEY + r"\b[\"']?\s*[:=]\s*)"
                     r"(\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s\"',;}\]]+)")
_IADM_VALUE = re.compile(r"(?i)(-n\s+\S*password(?:_in)?\s+(?:-v|--value)[=\s]\s*)(\S+)")
_ISCSI_CREDS = re.compile(r"(iscsi:)([^@\s/\"']*:[^@\s/\"']*)@")
_URL_CREDS = re.compile(r"([a-zA-Z][\w+.-]*://)([^/@\s:\"']+):([^/@\s\"']+)@")
_PLACEHOLDERS = {MASK, "<empty>", "", "null", "none", "None", "\"\"", "''"}


def _strip_quotes(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def found_secrets(text: str) -> set[str]:
    """Values that ``text`` gives as secrets beyond doubt: iscsiadm's ``-v`` after a
    password setting, ``iscsi:user:password@`` and ``scheme://user:password@``. (A
    ``password: X`` in free text is masked where it is, not looked for elsewhere: the
    value could be any word, "required" in an error message.)"""
    out = set()
    for m in _IADM_VALUE.finditer(text):
        out.add(m.group(2))
    for m in _ISCSI_CREDS.finditer(text):
        parts = m.group(2).split(":")
        out.update(unquote(p) for p in parts[1::2])
    for m in _URL_CREDS.finditer(text):
        out.add(unquote(m.group(3)))
    return {s for s in out if s not in _PLACEHOLDERS and s.strip("*")}


def _walk_secrets(value, out: set[str]) -> None:
    """``password``-like keys' string values in parsed YAML/JSON (a plan file)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and re.search(r"(?i)password|passwd|secret", str(k)):
                out.add(v)
            else:
                _walk_secrets(v, out)
    elif isinstance(value, list):
        for v in value:
            _walk_secrets(v, out)


def structured_secrets(name: str, text: str) -> set[str]:
    """Secrets in a YAML or JSON file (a plan): every ``password``-like key's value."""
    if not name.endswith((".yaml", ".yml", ".json")):
        return set()
    try:
        if name.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - not a plan after all: the patterns still apply
        return set()
    out: set[str] = set()
    _walk_secrets(data, out)
    return {s for s in out if s not in _PLACEHOLDERS}


def iscsi_db_secrets(root: str = ISCSI_DB) -> set[str]:
    """CHAP secrets of open-iscsi's records (``node.session.auth.password = X``...)."""
    out = set()
    for base, _dirs, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(base, name), encoding="utf-8", errors="replace") as f:
                    for line in f:
                        k, sep, v = line.partition("=")
                        if sep and not k.lstrip().startswith("#") and re.search(
                                r"password(_in)?$", k.strip()):
                            out.add(v.strip())
            except OSError:
                continue
    return {s for s in out if s not in _PLACEHOLDERS}


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and its percent-encoded form) and every value written
    the way a secret is written replaced by ``********``."""
    forms = set()
    for s in secrets:
        if s and s != MASK:
            forms.update({s, quote(s, safe=""), quote(s)})
    text = tools.redact(text, forms)
    text = _ASSIGN.sub(lambda m: m.group(1) + (
        m.group(2) if _strip_quotes(m.group(2)) in _PLACEHOLDERS else
        (m.group(2)[0] + MASK + m.group(2)[0] if m.group(2)[:1] in "\"'" else MASK)), text)
    text = _IADM_VALUE.sub(lambda m: m.group(1) + MASK, text)
    text = _ISCSI_CREDS.sub(lambda m: m.group(1) + MASK + "@", text)
    return _URL_CREDS.sub(lambda m: m.group(1) + m.group(2) + ":" + MASK + "@", text)


# --- collecting ---------------------------------------------------------------------------

def _read_file(path: str) -> tuple[bytes, bool]:
    """The file's bytes (its last MAX_MEMBER), and whether it was cut."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_MEMBER:
            f.seek(size - MAX_MEMBER)
        return f.read(MAX_MEMBER), size > MAX_MEMBER


def _files(root: str, prefix: str, recursive: bool, entries: list[Entry],
           skip: Callable[[str], bool] = lambda _n: False) -> list[tuple[str, bytes]]:
    out = []
    if not os.path.isdir(root):
        entries.append(Entry(prefix, f"files in {root}", "skipped", f"{root} does not exist"))
        return out
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if recursive and not os.path.ismount(
            os.path.join(base, d)) and not os.path.islink(os.path.join(base, d)))
        for name in sorted(files):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            if name.endswith(TMP_SUFFIX) or skip(rel) or not os.path.isfile(path):
                continue
            member = f"{prefix}/{rel}"
            try:
                data, cut = _read_file(path)
            except OSError as e:
                entries.append(Entry(member, path, "failed", f"cannot read: {e.strerror}"))
                continue
            entries.append(Entry(member, path, "truncated" if cut else "ok",
                                 f"the last {MAX_MEMBER >> 20} MiB" if cut else ""))
            out.append((member, data))
    return out


def _command(member: str, argv: tuple[str, ...], what: str, entries: list[Entry],
             timeout: float) -> tuple[str, bytes] | None:
    shown = " ".join(argv)
    try:
        p = tools.run(list(argv), check=False, timeout=timeout, text=False)
    except tools.ToolNotInstalled as e:
        entries.append(Entry(member, f"{what}: {shown}", "missing", str(e)))
        return None
    except tools.ToolError as e:  # timed out, could not run
        entries.append(Entry(member, f"{what}: {shown}", "failed", str(e)))
        return None
    out = p.stdout or b""
    cut = len(out) > MAX_MEMBER
    out = out[-MAX_MEMBER:]
    err = (p.stderr or b"").decode(errors="replace").strip()
    if p.returncode != 0:
        note = f"exit {p.returncode}" + (f": {err.splitlines()[-1]}" if err else "")
        if argv[0] == "iscsiadm" and p.returncode == 21:
            note = "no active iSCSI session"
        entries.append(Entry(member, f"{what}: {shown}", "empty" if not out else "failed",
                             note))
        out = out + (b"\n" if out else b"") + f"({shown}: {note})\n".encode()
    else:
        entries.append(Entry(member, f"{what}: {shown}", "truncated" if cut else "ok",
                             f"the last {MAX_MEMBER >> 20} MiB" if cut else ""))
    return member, out


def _json_member(member: str, what: str, make: Callable[[], object],
                 entries: list[Entry]) -> tuple[str, bytes] | None:
    try:
        data = make()
    except Exception as e:  # noqa: BLE001 - a probe that fails is said, the bundle goes on
        entries.append(Entry(member, what, "failed", f"{type(e).__name__}: {e}"))
        return None
    def default(o):
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        return str(o)
    entries.append(Entry(member, what, "ok"))
    return member, (json.dumps(data, indent=1, sort_keys=True, default=default) + "\n").encode()


def _disk_probe():
    from toolkit.disks.probe import probe
    return probe()


def _iscsi_sessions():
    from toolkit.iscsi.sessions import list_sessions
    return list_sessions()


def _about(now: float) -> bytes:
    import platform

    import toolkit
    from toolkit.system import state
    try:
        where = state.location().message
    except OSError as e:
        where = f"unknown ({e})"
    lines = [f"Recovery Toolkit {toolkit.__version__}", f"host: {socket.gethostname()}",
             f"time: {time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(now))}",
             f"kernel: {platform.release()}", f"state: {where}",
             f"data partition: {json.dumps(state.held_by_data_partition())}"]
    return ("\n".join(lines) + "\n").encode()


def bundle_name(now: float | None = None) -> str:
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", socket.gethostname()) or "host"
    return f"rtk-bundle-{host}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.tar.gz"


def collect(*, secrets: Iterable[str] = (), state: str | None = None,
            run: str | None = None, iscsi_db: str = ISCSI_DB, cmdline: str = "/proc/cmdline",
            timeout: float = 120, now: float | None = None,
            probe: Callable[[], object] = _disk_probe,
            sessions: Callable[[], object] = _iscsi_sessions) -> tuple[list, list[Entry]]:
    """``(members, entries)``: the bundle's files as ``(name, bytes)``, secrets masked, and
    the index's lines."""
    now = time.time() if now is None else now
    state = state or paths.state_dir()
    run = run or paths.run_dir()
    entries: list[Entry] = []
    members = _files(os.path.realpath(state), "state", True, entries,
                     skip=lambda rel: rel.startswith("bundles/") or rel.endswith(".tar.gz"))
    members += _files(run, "run", False, entries)
    for member, argv, what in COMMANDS:
        got = _command(member, argv, what, entries, timeout)
        if got:
            members.append(got)
    for member, what, make in (("system/disks-probe.json", "disk probe (rtk disks "
                                "--dump-probe)", probe),
                               ("system/iscsi-sessions.json", "iSCSI sessions (sysfs)",
                                sessions)):
        got = _json_member(member, what, make, entries)
        if got:
            members.append(got)
    try:
        with open(cmdline, "rb") as f:
            members.append(("system/cmdline.txt", f.read()))
        entries.append(Entry("system/cmdline.txt", "the kernel command line", "ok"))
    except OSError as e:
        entries.append(Entry("system/cmdline.txt", cmdline, "failed", e.strerror or str(e)))
    members.append(("system/about.txt", _about(now)))
    entries.append(Entry("system/about.txt", "version, host, time, where the state is", "ok"))

    # Every secret known or found anywhere is masked everywhere.
    texts = [(n, d.decode("utf-8", "surrogateescape")) for n, d in members]
    known = {s for s in secrets if s}
    found = iscsi_db_secrets(iscsi_db)
    for name, text in texts:
        found |= structured_secrets(name, text) | found_secrets(text)
    known |= {s for s in found if len(s) >= MIN_FOUND_SECRET}
    masked = [(mask(n, known), mask(t, known).encode("utf-8", "surrogateescape"))
              for n, t in texts]
    for e in entries:
        e.name, e.what, e.note = mask(e.name, known), mask(e.what, known), mask(e.note, known)
    sizes = dict(masked)
    for e in entries:
        e.size = len(sizes.get(e.name, b""))
    return masked, entries


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


# --- sending ------------------------------------------------------------------------------

@dataclass
class Posted:
    ok: bool
    url: str  # shown without user:password@ and query
    status: int | None = None
    error: str | None = None
    tries: int = 0


def _shown(url: str) -> str:
    from toolkit.jobs.report import safe_url
    return safe_url(url) or url


def post(b: Bundle, url: str, *, verify: bool | str = True, timeout: float = 60,
         retries: int = 2, backoff: float = 1.0, headers: dict | None = None) -> Posted:
    """HTTP POST of the bundle file (``application/gzip``) to ``url``; any 2xx answer
    counts. Retried ``retries`` times (waits ``backoff``, doubled) after a failure to
    connect or a 5xx; never raises."""
    import requests

    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        return Posted(False, _shown(url), error="expected an http:// or https:// URL")
    hdrs = {"Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{b.name}"',
            "X-RTK-Bundle": b.name, "X-RTK-Bundle-SHA256": b.sha256, **(headers or {})}
    result = Posted(False, _shown(url))
    for attempt in range(1 + retries):
        result.tries = attempt + 1
        try:
            with open(b.path, "rb") as f:
                r = requests.post(url, data=f, headers=hdrs, timeout=timeout, verify=verify)
            result.status = r.status_code
            if r.status_code < 300:
                result.ok, result.error = True, None
                return result
            result.error = f"HTTP {r.status_code}"
            if r.status_code < 500:
                return result
        except requests.RequestException as e:
            result.error = type(e).__name__
        except OSError as e:
            result.error = f"cannot read {b.path}: {e.strerror}"
            return result
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    return result
