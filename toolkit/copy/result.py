"""What a copy or a verification did: :class:`CopyResult` (its parts, :class:`SourceDigest`
and :class:`VerifyOutcome`, are :mod:`toolkit.blockio`'s: restore has them too).

Its exit code (:attr:`CopyResult.exit_code`) comes from its status through
:func:`toolkit.exitcodes.for_status`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from toolkit import exitcodes
from toolkit.blockio.hashing import SourceDigest
from toolkit.blockio.verify import VerifyOutcome
from toolkit.jobs import report


@dataclass
class CopyResult(exitcodes.StatusExit):
    """What :func:`toolkit.copy.engine.copy` (or a verification) did. ``status``: "ok", "unreadable"
    (ok but some ranges unreadable), "mismatch", "failed", "cancelled"."""

    operation: str
    status: str
    message: str
    source: dict
    target: dict | None
    size: int
    started: float
    finished: float
    algorithm: str
    resumed: bool = False
    mapfile: str | None = None
    copied_bytes: int = 0  # read from the source and handled in this run
    written_bytes: int = 0
    skipped_zero_bytes: int = 0
    unread_hole_bytes: int = 0  # of those, in the source's holes: not even read
    source_map: str | None = None  # where the holes came from (skip-zeros only)
    write_calls: int = 0
    read_errors: int = 0
    copy_seconds: float = 0.0
    unreadable: list[tuple[int, int]] = field(default_factory=list)
    verify: VerifyOutcome | None = None
    source_digest: SourceDigest | None = None
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    report: report.ReportPaths | None = None
    # a copy limited to a domain (toolkit.copy.scope): its record (summary, digest, bytes),
    # and what became of the target's blocks outside it (action "discarded", "left",
    # "partly discarded"; text, how, bytes)
    domain: dict | None = None
    free_blocks: dict | None = None

    @property
    def unreadable_bytes(self) -> int:
        return sum(s for _p, s in self.unreadable)

    @property
    def covered_bytes(self) -> int:
        """What the copy covers: the domain's bytes, or the whole source."""
        return self.domain["bytes"] if self.domain else self.size

    def scope_note(self) -> str:
        """``; free blocks: discarded, the target reads back zeros`` for a domain copy."""
        fb = self.free_blocks
        return f"; free blocks: {fb['text']}" if self.domain and fb else ""


def conclude(result: CopyResult, cancel: threading.Event) -> None:
    """Status and message from the verification and the unreadable ranges."""
    v = result.verify
    bad = result.unreadable_bytes
    bad_text = (f"{len(result.unreadable)} unreadable range(s), {bad} bytes: "
                + ", ".join(f"{p}+{s}" for p, s in result.unreadable[:10])
                + (" ..." if len(result.unreadable) > 10 else "")) if bad else ""
    verb = {"copy": "copied", "verify": "verified"}[result.operation]
    if v and v.error:
        result.status = "cancelled" if cancel.is_set() else "failed"
        result.message = f"verification did not finish: {v.error}"
    elif v and not v.match:
        fd = v.first_difference or {}
        where = f"bytes {fd.get('start')}-{fd.get('end')}"
        if fd.get("offset") is not None:
            where = f"byte {fd['offset']} (in {where})"
        result.status = "mismatch"
        result.message = (f"VERIFICATION FAILED: first difference at {where}, "
                          f"{v.differing_regions} differing region(s)" if fd else
                          "VERIFICATION FAILED: the target's hash differs from the source's")
    elif bad:
        result.status = "unreadable"
        result.message = f"completed with {bad} unreadable bytes in {bad_text}"
        if v:
            result.message += " (zeros written there; the rest verified)"
        result.message += result.scope_note()
    else:
        result.status = "ok"
        result.message = _ok_message(result, verb) + result.scope_note()


def _ok_message(result: CopyResult, verb: str) -> str:
    v, total = result.verify, result.covered_bytes
    summary = result.domain["summary"] if result.domain else None
    checked = (f", verified: {summary}, identical" if v and summary else ", verified" if v
               else f": {summary}, not verified" if summary else "")
    message = f"{verb} {total} bytes" + checked
    if result.operation == "copy" and result.resumed and result.copied_bytes < total:
        # never "copied N bytes" for bytes this run did not copy
        before = total - result.copied_bytes
        message = (
            (f"nothing copied in this run: the mapfile says all {total} bytes were "
             "copied before" if not result.copied_bytes else
             f"copied {result.copied_bytes} bytes in this run (the mapfile says the other "
             f"{before} were copied before)") + (checked or ", not verified"))
    return message
