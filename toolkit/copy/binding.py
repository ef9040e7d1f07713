"""A copy's mapfile bound to its pair and to the source's content.

A mapfile written by ``rtk copy`` carries, in ``# rtk-KEY: VALUE`` lines that ddrescue
ignores (:mod:`toolkit.blockio.mapfile`):

``version``
    ``2``.
``source``, ``target``
    each end's identity (:func:`identity_record`): what survives a reboot and a /dev
    rename (serial, WWN, model, vendor, size, logical sector size, iSCSI target and
    LUN, a loop device's backing file and its inode, the partition number and start),
    as one line of JSON. Never the kernel name. (A backing file's inode number alone is
    re-used by a new file at the same path: its birth time, from statx, tells them apart.)
``fingerprint``
    the source's size and the BLAKE3 of 16 sampled regions
    (:mod:`toolkit.copy.fingerprint`), taken when the copy started.
``domain``
    a copy limited to a domain (used blocks, :mod:`toolkit.copy.scope`): its digest, bytes
    and summary (JSON); resumed only by a copy of the same domain (the rest stays ``?``).
``started``, ``resumed``, ``finished``
    when the first run started, the last run resumed, the copy finished (ISO 8601).
``verified``
    the last verification: ``identical DATE (METHOD, ALGORITHM)``,
    ``differs DATE (...)``; absent: not verified.
``origin``
    only in a mapfile adopted from elsewhere (a plain ddrescue one, named with
    ``--mapfile``): where its first state came from.
``check``
    written last by :meth:`Mapfile.format`: the BLAKE3 of the other rtk lines and the
    block lines. A mapfile with identity lines whose check is missing or does not match
    (an edited ``rtk-target`` line, an edited block status) is refused ("damaged"): it
    guards against accidental edits and naive tampering, not a determined adversary (the
    hash is keyed with nothing secret).

:func:`inspect` reads the mapfile at a copy's path and says what it is
(:class:`MapState`): none, another pair's, a changed source's, an interrupted or a
finished copy of this pair, an edited one, or a mapfile without these lines (a plain ddrescue one,
or one of an older rtk), whose origin is unknown: that is only used when named
explicitly, never found at the default place. What may be done with it (resume,
restart, refuse) is the caller's choice (:class:`Choices` spells it in messages).
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
from dataclasses import dataclass, field

from toolkit.blockio.mapfile import BAD, FINISHED, Mapfile, MapfileError
from toolkit.copy.fingerprint import Fingerprint, take_path
from toolkit.copy.plan import CopyPlan, default_mapfile
from toolkit.copy.scope import domain_of, domain_problem
from toolkit.disks.endpoint import Endpoint
from toolkit.jobs.report import iso_time
from toolkit.units import human_size

VERSION = "2"
KEYS = ("source", "target", "fingerprint")  # the lines that bind a mapfile


@dataclass(frozen=True)
class Choices:
    """How the person (or plan) running a copy says "resume" and "restart" (messages)."""

    resume: str = "--resume"
    restart: str = "--restart"
    again: str = "run the same command with --resume to continue"
    no_verify: str = "--no-verify"


CLI = Choices()
MENU = Choices("Resume", "Start over", "choose the same SOURCE and TARGET again to resume",
               "verification off")
UNATTENDED = Choices("rtk.resume=yes (resume: true in a plan file)",
                     "rtk.resume=restart (resume: restart)",
                     "run it again with rtk.resume=yes (resume: true in a plan file) to "
                     "continue", "rtk.verify=no")


# --- identities ----------------------------------------------------------------------------

_COMPARED = ("serial", "wwn", "iscsi", "file", "inode", "born", "partition", "start",
             "model", "vendor", "size", "sector")  # what names it first, then the rest
_FIELD_NAMES = {"sector": "logical sector size", "iscsi": "iSCSI target and LUN",
                "file": "backing file", "inode": "backing file's inode",
                "born": "backing file's creation time (another file with the same inode "
                        "number)",
                "partition": "partition number", "start": "partition start"}


def _statx():
    try:
        f = ctypes.CDLL(None, use_errno=True).statx
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    return f


_STATX = _statx()
_AT_FDCWD, _STATX_INO, _STATX_BTIME = -100, 0x100, 0x800


def file_birth(path: str) -> tuple[int, int] | None:
    """``(inode, birth time in ns)`` of the file at ``path`` (statx), None when unknown
    (no statx, a filesystem that does not keep it)."""
    if _STATX is None:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statx
    if _STATX(_AT_FDCWD, os.fsencode(path), 0, _STATX_INO | _STATX_BTIME, buf) != 0:
        return None
    (mask,) = struct.unpack_from("I", buf, 0)
    (ino,) = struct.unpack_from("Q", buf, 32)
    sec, nsec = struct.unpack_from("qI", buf, 80)  # stx_btime
    return (ino, sec * 10**9 + nsec) if mask & _STATX_BTIME else None


def identity_record(e: Endpoint) -> dict:
    """What names ``e`` across reboots and /dev renames (only the fields it has)."""
    r = e.record()
    rec: dict = {"transport": r.transport, "model": r.model, "vendor": r.vendor,
                 "serial": r.serial, "wwn": r.wwn, "size": e.size,
                 "sector": e.sector_size}
    if r.iscsi:
        rec["iscsi"] = f"{r.iscsi['target']} LUN {r.iscsi['lun']}"
    if r.backing_file:
        rec["file"] = os.path.realpath(r.backing_file.removesuffix(" (deleted)"))
        inodes = [k.rsplit(":", 1)[1] for k in e.keys if k.startswith("inode:")]
        if inodes:
            rec["inode"] = int(inodes[0])
            born = file_birth(rec["file"])
            if born and born[0] == rec["inode"]:
                rec["born"] = born[1]
    if e.partition:
        rec["partition"], rec["start"] = e.partition.number, e.start
    return {k: v for k, v in rec.items() if v is not None}


def identity_difference(then: dict, now: dict, which: str) -> str | None:
    """The first field in which ``which`` end (source, target) differs, or None."""
    def value(v):
        if v is None:
            return "none"
        return shown(iso_time(v / 1e9)) if k == "born" else v

    for k in _COMPARED:
        if then.get(k) != now.get(k):
            return (f"the {which}'s {_FIELD_NAMES.get(k, k)} differs: {value(then.get(k))} "
                    f"then, {value(now.get(k))} now")
    return None


def describe(rec: dict) -> str:
    """One end for a person: ``ST4000NM serial Z1Z2 (4.0 TB)``, ``loop file /x.img ...``."""
    bits = [rec.get("model") or rec.get("transport") or "disk"]
    for k, label in (("serial", "serial"), ("wwn", "wwn"), ("iscsi", "iSCSI"),
                     ("file", "file")):
        if rec.get(k):
            bits.append(f"{label} {rec[k]}")
    text = " ".join(bits) + f" ({human_size(rec['size'])})" if "size" in rec else " ".join(bits)
    if "partition" in rec:
        text = f"partition {rec['partition']} of {text}"
    return text


def shown(iso: str | None) -> str:
    """A recorded time for a message: ``2026-05-04 10:12:03+02:00``."""
    return (iso or "an unknown date").replace("T", " ")


# --- what a mapfile says --------------------------------------------------------------------


@dataclass
class MapState:
    """The mapfile at ``path`` as this copy (``plan``, the source's fingerprint now) sees
    it. ``kind``: "none" (no mapfile), "ok" (this pair's, the source unchanged: it can be
    resumed), "changed" (this pair's, but the source changed), "other" (another pair's,
    or another size), "foreign" (no rtk identity lines: its origin is unknown), "damaged"
    (its rtk-check line missing or not matching: edited since rtk wrote it), or
    "unreadable". ``problem``: why it cannot be resumed (None: it can)."""

    path: str
    default: bool  # at the default place (not named with --mapfile)
    kind: str = "none"
    map: Mapfile | None = None
    problem: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.kind != "none"

    @property
    def foreign(self) -> bool:
        return self.kind == "foreign"

    @property
    def domain(self) -> dict | None:
        """The domain the copy was limited to (``digest``, ``bytes``, ``summary``)."""
        return domain_of(self.meta)

    @property
    def finished(self) -> bool:
        if self.domain is not None:  # the blocks outside stay "?": the copy says it
            return bool(self.map and "finished" in self.meta)
        return bool(self.map and self.map.finished)

    def done(self) -> int:
        return self.map.bytes_with(FINISHED, BAD) if self.map else 0

    def total(self) -> int:  # what the copy covers: the domain, or the whole source
        return int(self.domain["bytes"]) if self.domain else self.map.size if self.map else 0

    def verified(self) -> str:
        """``verified identical on DATE``, ``not verified``..."""
        v = self.meta.get("verified")
        if not v:
            return "not verified"
        word, _, rest = v.partition(" ")
        date, _, how = rest.partition(" ")
        if word == "identical":
            return f"verified identical on {shown(date)}"
        return f"verification FAILED on {shown(date)}, the target differed {how}".rstrip()

    def differs(self) -> bool:
        """The last verification of this pair found a difference."""
        return self.meta.get("verified", "").startswith("differs ")

    def no_verify_problem(self, c: Choices = CLI) -> str | None:
        """Why resuming it without a verification is refused (None: it is not): a pair
        whose last verification found a difference would otherwise end "nothing left to
        copy", and a foreign mapfile's "finished" is a claim nobody vouches for."""
        if self.foreign:
            return (f"{self.says()}: what it records as copied is a claim nobody vouches "
                    f"for, so it is only used with a verification ({c.resume} with "
                    f"{c.no_verify} is refused): {c.resume} without {c.no_verify} continues "
                    "from it and verifies the whole copy, "
                    f"{c.restart} discards it and copies everything again")
        if self.kind == "ok" and self.differs():
            date = self.meta["verified"].split(" ", 2)[1]
            return (f"the mapfile {self.path} says: the last verification of this pair found "
                    f"a difference on {shown(date)}: {c.restart} copies it again, or "
                    f"{c.resume} without {c.no_verify} verifies again ({c.resume} with "
                    f"{c.no_verify} is refused)")
        return None

    def mismatch_hint(self, samples: int, c: Choices = CLI) -> str:
        """Said when the verification of a resumed copy fails: the fingerprint did not see
        a change of the source, which it cannot prove absent."""
        if self.foreign:
            since = (f"the mapfile {self.path} was written (its origin is unknown: what it "
                     "records as copied may never have been)")
        else:
            since = f"the copy started on {shown(self.meta.get('started'))}"
        return (f"this copy was resumed: the source may have changed since {since} (the "
                f"fingerprint samples only {samples} regions): {c.restart} copies it again")

    def says(self) -> str:
        """What the mapfile says, one sentence, without a verdict."""
        size, of = self.total(), f" ({self.domain['summary']})" if self.domain else ""
        if self.foreign:
            return (f"the mapfile {self.path} has no rtk identity lines (a plain GNU ddrescue "
                    "mapfile, or one of an older rtk): its origin is unknown; it records "
                    f"{human_size(self.done())} of {human_size(size)} done")
        if self.finished:
            bad = self.map.bytes_with(BAD)
            return (f"the mapfile {self.path} says: this pair was already copied{of} on "
                    f"{shown(self.meta.get('finished'))}, {self.verified()}"
                    + (f" ({bad} bytes unreadable)" if bad else ""))
        return (f"the mapfile {self.path} is of an interrupted copy of this pair{of}, started "
                f"on {shown(self.meta.get('started'))}: {human_size(self.done())} of "
                f"{human_size(size)} copied")

    def refusal(self, c: Choices = CLI) -> str:
        """Why a copy is refused (neither resume nor restart was said, or resume was and
        ``problem`` is set), and what each choice does."""
        restart = f"{c.restart} discards it and copies everything again"
        if self.foreign and self.problem == NOT_NAMED:
            return (f"{self.says()}; it is never used from the default place: to continue "
                    f"from it, name it with --mapfile {self.path} and {c.resume}; {restart}")
        if self.foreign and not self.problem:  # named, and of the source's size
            return f"{self.says()}: {c.resume} continues from what it records, {restart}"
        if self.problem:
            head = (f"{self.says()}; but {self.problem}" if self.kind in ("changed", "domain")
                    else self.problem)
            return (f"{head}: start over with {c.restart} (discards the mapfile and copies "
                    f"everything again; {c.resume} is refused)")
        resume = ("does nothing but verify again (nothing is left to copy)" if self.finished
                  else "continues it")
        return f"{self.says()}: {c.resume} {resume}, {restart}"

    def adopted_warning(self) -> str:
        return (f"{self.says()}: continuing from what it records, as asked; the source and "
                "target it was written for cannot be checked")


NOT_NAMED = "it has no rtk identity lines and is at the default place"
UNCHECKED = object()  # inspect(domain=...): the caller does not know the copy's domain


def inspect(plan: CopyPlan, mapfile: str | None = None, *,
            fingerprint: Fingerprint | None = None, domain=UNCHECKED) -> MapState:
    """What the mapfile of this copy (``mapfile``, default :func:`default_mapfile`) is.

    ``fingerprint``: the source's now (taken from ``plan.source.path`` when it is needed
    and not given; OSError when the source cannot be read). ``domain``: what the copy is
    limited to (a :class:`toolkit.copy.usedblocks.Domain`; None: the whole source); a
    mapfile of another domain is of kind "domain", not resumed. Left out, the domain is
    not looked at (the engine looks again with it)."""
    path = mapfile or default_mapfile(plan)
    state = MapState(path, default=mapfile is None)
    if not os.path.lexists(path):
        return state
    state.kind = "unreadable"
    try:
        m = Mapfile.load(path)
    except (MapfileError, UnicodeDecodeError) as e:
        state.problem = f"the mapfile {path} cannot be read as a ddrescue mapfile ({e})"
        return state
    except OSError as e:
        state.problem = f"the mapfile {path} cannot be read ({e.strerror or e})"
        return state
    state.map, state.meta = m, dict(m.meta)
    size = plan.source.size
    wrong_size = (f"the mapfile {path} covers {m.size} bytes but the source has {size} "
                  "bytes: it belongs to another copy")
    try:
        then_src, then_dst = (json.loads(m.meta[k]) for k in ("source", "target"))
        if not isinstance(then_src, dict) or not isinstance(then_dst, dict):
            raise ValueError
    except (KeyError, ValueError):
        state.kind = "foreign"
        state.problem = wrong_size if m.size != size else NOT_NAMED if state.default else None
        return state
    state.kind = "damaged"
    if m.intact is None:
        state.problem = (f"the mapfile {path} has rtk identity lines but no rtk-check line "
                         "(edited, or written by an older rtk): whether its lines are still "
                         "the ones rtk wrote cannot be told")
        return state
    if not m.intact:
        state.problem = (f"the mapfile {path} fails its integrity check: its rtk-check line "
                         "does not match its other lines (an rtk-source or rtk-target line, "
                         "a block status edited since rtk wrote it): it is not trusted")
        return state
    state.kind = "other"
    now_src, now_dst = identity_record(plan.source), identity_record(plan.target)
    why = (identity_difference(then_src, now_src, "source")
           or identity_difference(then_dst, now_dst, "target"))
    if why:
        state.problem = (f"the mapfile {path} belongs to the copy of SOURCE "
                         f"{describe(then_src)} onto TARGET {describe(then_dst)}, not of "
                         f"{describe(now_src)} onto {describe(now_dst)} ({why})")
        return state
    if m.size != size:
        state.problem = wrong_size
        return state
    state.kind = "changed"
    try:
        recorded = Fingerprint.from_text(m.meta.get("fingerprint", ""))
    except ValueError:
        state.problem = ("its rtk-fingerprint line is missing or damaged: whether the source "
                         "changed since the copy started cannot be told")
        return state
    changed = recorded.difference(fingerprint or take_path(plan.source.path))
    if changed:
        state.problem = (f"the source changed since the copy started on "
                         f"{shown(m.meta.get('started'))}: {changed}")
        return state
    if domain is not UNCHECKED and (why := domain_problem(path, m.meta, domain)):
        state.kind, state.problem = "domain", why
        return state
    state.kind = "ok"
    return state


def new_meta(plan: CopyPlan, fingerprint: Fingerprint, now: str, origin: str | None = None,
             scope=None) -> dict[str, str]:
    """The rtk lines of a mapfile that starts now (or adopts one: ``origin``); ``scope``
    (:class:`toolkit.copy.scope.Scope`): a domain's line."""
    meta = {"version": VERSION,
            "source": json.dumps(identity_record(plan.source), sort_keys=True),
            "target": json.dumps(identity_record(plan.target), sort_keys=True),
            "fingerprint": fingerprint.to_text(), "started": now}
    if scope is not None and scope.domain is not None:
        meta["domain"] = json.dumps({"digest": scope.digest(), "bytes": scope.bytes,
                                     "summary": scope.summary()}, sort_keys=True)
    if origin:
        meta["origin"] = origin
    return meta


def verified_text(match: bool, now: str, method: str, algorithm: str, where: str = "") -> str:
    """The ``verified`` line: ``identical DATE (METHOD, ALGORITHM)``."""
    return (f"{'identical' if match else 'differs'} {now} ({method}, {algorithm}"
            + (f", {where}" if where else "") + ")")
