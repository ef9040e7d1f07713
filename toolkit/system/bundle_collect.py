"""What the logs bundle holds, collected (:func:`collect`): the state directory, this
boot's run directory, the output of :data:`COMMANDS` (journal, kernel messages, iSCSI
sessions), the disk probe, the iSCSI sessions from sysfs, the kernel command line and
``about.txt``; each as ``(member, bytes)``, secrets masked
(:mod:`toolkit.system.bundle_secrets`), with an :class:`Entry` of the index a member or a
thing that could not be collected (a tool not installed, one that failed or timed out).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from toolkit.atomic import TMP_SUFFIX
from toolkit.system import paths, tools
from toolkit.system.bundle_secrets import ISCSI_DB, known_secrets, mask

MAX_MEMBER = 64 << 20  # bytes kept of one file or command output (its end, for logs)

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
    known = known_secrets(texts, secrets, iscsi_db)
    masked = [(mask(n, known), mask(t, known).encode("utf-8", "surrogateescape"))
              for n, t in texts]
    for e in entries:
        e.name, e.what, e.note = mask(e.name, known), mask(e.what, known), mask(e.note, known)
    sizes = dict(masked)
    for e in entries:
        e.size = len(sizes.get(e.name, b""))
    return masked, entries
