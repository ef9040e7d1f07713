"""The report of a copy job of several pairs (:mod:`toolkit.copy.job`): one summary, JSON
and text, ``LOG_DIR/copy-job-YYYYmmdd-HHMMSS.json``/``.txt``, listing each pair, its
verdict and the path of its own report (each pair keeps the report of a single copy,
:mod:`toolkit.copy.report`). Written when the job starts ("running") and rewritten in
place as each pair ends; the last version is the final report (docs/copy.md).
"""

from __future__ import annotations

from toolkit.copy.job_progress import NOT_STARTED, RUNNING
from toolkit.jobs import report
from toolkit.units import human_size

KIND = "copy-job"
WORDS = {"ok": "copied", "unreadable": "copied, with unreadable ranges (zeros written there)",
         "mismatch": "VERIFICATION FAILED", "failed": "FAILED", "cancelled": "CANCELLED",
         "refused": "REFUSED (nothing written to its target)", NOT_STARTED: "not started",
         RUNNING: "running"}


def _verified(o) -> bool:
    v = o.result.verify if o.result else None
    return bool(v and v.match)


def pair_verdict(o) -> str:
    """``copied, verified`` / ``FAILED: why`` / ``not started``: one pair in words."""
    word = WORDS.get(o.status, o.status.upper())
    if o.status == "ok":
        return word + (", verified" if _verified(o) else ", not verified")
    if o.status in (NOT_STARTED, RUNNING) or not o.message:
        return word
    return f"{word}: {o.message}"


def job_message(outcomes, final: bool = True) -> str:
    """One line for the whole job: how many pairs were copied, then every pair that was
    not copied, with why (a pair not started because an earlier one stopped the job)."""
    n = len(outcomes)
    copied = [o for o in outcomes if o.status in ("ok", "unreadable")]
    if not final:
        ended = sum(1 for o in outcomes if o.status not in (NOT_STARTED, RUNNING))
        return f"running: {ended} of {n} pairs ended, {len(copied)} copied"
    if len(copied) == n and all(o.status == "ok" for o in outcomes):
        return f"all {n} pairs copied" + (", verified" if all(map(_verified, outcomes))
                                          else "")
    rest = [f"pair {o.number}: {pair_verdict(o)}" for o in outcomes if o.status != "ok"]
    return f"{len(copied)} of {n} pairs copied; " + "; ".join(rest)


def _pair_data(o) -> dict:
    r = o.result
    v = r.verify if r else None
    digest = r.source_digest.hexdigest if r and r.source_digest else v.source_hash if v \
        else None
    return {
        "pair": o.number, "result": o.status, "exit_code": o.exit_code,
        "message": o.message, "source": o.plan.source.describe(),
        "target": o.plan.target.describe(), "size": o.plan.source.size,
        "started": report.iso_time(o.started) if o.started else None,
        "finished": report.iso_time(o.finished) if o.finished else None,
        "report": {"json": r.report.json, "text": r.report.text} if r and r.report else None,
        "mapfile": r.mapfile if r else None,
        "copied_bytes": r.copied_bytes if r else None,
        "verified": None if v is None else bool(v.match and not v.error),
        "hash": {"algorithm": r.algorithm, "source": digest} if r else None,
    }


def report_data(r) -> dict:
    """The job's JSON report (docs/copy.md, "Several pairs")."""
    running = r.status == RUNNING
    return {
        "kind": KIND, "schema": 1, "result": r.status,
        "exit_code": None if running else r.exit_code, "message": r.message,
        "order": "concurrent" if r.concurrent else "sequential",
        "started": report.iso_time(r.started),
        "finished": None if running else report.iso_time(r.finished),
        "updated": report.iso_time(r.finished),
        "duration_seconds": round(r.finished - r.started, 3),
        "pairs": [_pair_data(o) for o in r.pairs], "warnings": r.warnings,
    }


def report_text(r, data: dict | None = None) -> str:
    data = data or report_data(r)
    running = r.status == RUNNING
    rows = [("result", "RUNNING (or interrupted, if no job is running any more)" if running
             else f"{r.status.upper()} (exit code {r.exit_code})"),
            ("message", r.message), ("pairs", f"{len(r.pairs)}, {data['order']}"),
            ("started", data["started"]),
            ("updated" if running else "finished", data["updated"])]
    rows += [("warning", w) for w in r.warnings]
    sections = [("Result", rows)]
    for o, d in zip(r.pairs, data["pairs"], strict=True):
        sections.append((f"Pair {o.number}", [
            ("result", pair_verdict(o)), ("source", o.plan.source.label()),
            ("target", o.plan.target.label()),
            ("size", f"{d['size']} bytes ({human_size(d['size'])})"),
            ("started", d["started"]), ("finished", d["finished"]),
            ("hash", f"{d['hash']['algorithm']} {d['hash']['source']}"
             if d["hash"] and d["hash"]["source"] else None),
            ("mapfile", d["mapfile"]),
            ("report", d["report"]["text"] if d["report"] else None)]))
    return report.render_text("rtk copy job report", sections)


def write_job_report(r, directory: str | None = None, *,
                     paths: report.ReportPaths | None = None) -> report.ReportPaths:
    """Write the job's report; with ``paths`` (its earlier version), replace it in place."""
    data = report_data(r)
    return report.write_report(KIND, data, report_text(r, data), directory=directory,
                               when=r.started, paths=paths)
