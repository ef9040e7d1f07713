"""The report of a copy or a verification: JSON data and text (docs/copy.md).

A copy writes its report when it starts, with ``result`` "running", and rewrites it at
each mapfile save (:func:`write_result_report` with the ``paths`` of the first write);
the final report replaces it. A report still "running" after the job is gone is the
record of an interrupted copy (a power cut, a kill): ``copy.done_bytes`` is what its
mapfile records as done, as of ``updated``.
"""

from __future__ import annotations

from toolkit.copy.result import CopyResult
from toolkit.disks import cluster
from toolkit.jobs import report
from toolkit.units import human_duration, human_rate, human_size

RUNNING = "running"  # the status of a report written while the copy runs


def report_data(r: CopyResult, *, done_bytes: int | None = None,
                updated: float | None = None, phase: str | None = None) -> dict:
    """The JSON report (see docs/copy.md for the schema). ``done_bytes``: what the
    mapfile records as done (all runs of the copy); ``updated``: when (a running
    report's time; default: ``r.finished``); ``phase``: a running copy's."""
    v = r.verify
    copy_rate = r.copied_bytes / r.copy_seconds if r.copy_seconds else None
    running = r.status == RUNNING
    updated = updated if updated is not None else r.finished
    return {
        "kind": r.operation, "schema": 1, "result": r.status,
        "exit_code": None if running else r.exit_code,
        "message": r.message, "warnings": r.warnings,
        "source": r.source, "target": r.target,
        # both ends' cluster disks (source.cluster, target.cluster) as the copy found them
        "cluster": cluster.report_comparison(r.source, r.target) if r.operation == "copy"
        else None,
        "started": report.iso_time(r.started),
        "finished": None if running else report.iso_time(r.finished),
        "updated": report.iso_time(updated),
        "duration_seconds": round(updated - r.started, 3),
        "size": r.size,
        "copy": None if r.operation != "copy" else {
            "resumed": r.resumed, "mapfile": r.mapfile, "phase": phase if running else None,
            "done_bytes": done_bytes, "copied_bytes": r.copied_bytes,
            "written_bytes": r.written_bytes, "skipped_zero_bytes": r.skipped_zero_bytes,
            "unread_hole_bytes": r.unread_hole_bytes, "source_map": r.source_map,
            "write_calls": r.write_calls, "read_errors": r.read_errors,
            "seconds": round(r.copy_seconds, 3),
            "bytes_per_second": round(copy_rate) if copy_rate else None,
            "options": r.options, "domain": r.domain, "free_blocks": r.free_blocks,
        },
        "hash": {
            "algorithm": r.algorithm,
            "source": (r.source_digest.hexdigest if r.source_digest
                       else v.source_hash if v else None),
            "target": v.target_hash if v else None,
        },
        "verify": None if v is None else {
            "result": "error" if v.error else "match" if v.match else "mismatch",
            "method": v.method, "first_difference": v.first_difference,
            "differing_regions": v.differing_regions, "error": v.error,
            "covered": v.covered, "read_back_bytes": v.read_back_bytes,
            "read_while_writing": v.read_while_writing, "compared_bytes": v.compared_bytes,
            "seconds": round(v.seconds, 3),
            "bytes_per_second": round(_after(r) / v.seconds) if v.seconds else None,
        },
        "unreadable": {"bytes": r.unreadable_bytes,
                       "ranges": [{"start": p, "size": s} for p, s in r.unreadable]},
    }


def _after(r: CopyResult) -> int:
    """The bytes a verification read once the copy was done (a verification on its own,
    or one that counted none: the size)."""
    v = r.verify
    if not (v.read_back_bytes or v.compared_bytes):
        return r.size
    return v.read_back_bytes - v.read_while_writing + v.compared_bytes


def _who(d: dict) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("device", d["node"] if d["path"] == d["node"] else f"{d['path']} ({d['node']})"),
        ("size", f"{d['size']} bytes ({human_size(d['size'])}), "
                 f"{d['logical_sector_size']}-byte sectors"),
        ("transport", d["transport"])]
    rows += [(k, d[k]) for k in ("model", "serial", "wwn", "backing_file") if d.get(k)]
    if d.get("iscsi"):
        i = d["iscsi"]
        rows.append(("iscsi", f"{i['target']} LUN {i['lun']} @ {i['portal']}"))
    if d.get("partition"):
        p = d["partition"]
        rows.append(("partition", f"number {p['number']} of {p['disk']}, at byte {p['start']}"))
    return rows + cluster.report_rows(d.get("cluster"))


def report_text(r: CopyResult, **progress) -> str:
    data = report_data(r, **progress)
    running = r.status == RUNNING
    rows = [("result", "RUNNING (or interrupted, if no job is running any more)" if running
             else f"{r.status.upper()} (exit code {r.exit_code})"),
            ("message", r.message), ("started", data["started"]),
            ("updated" if running else "finished", data["updated"]),
            ("size", f"{r.size} bytes ({human_size(r.size)})")]
    rows += [("warning", w) for w in r.warnings]
    rows += [("cluster disks", data["cluster"]["text"])] if data["cluster"] else []
    sections = [("Result", rows), ("Source", _who(r.source))]
    if r.target:
        sections.append(("Target", _who(r.target)))
    c = data["copy"]
    if c:
        rate = human_rate(c["bytes_per_second"]) if c["bytes_per_second"] else None
        sections.append(("Copy", [
            ("resumed", "yes" if r.resumed else "no"), ("mapfile", r.mapfile),
            *([("phase", c["phase"])] if c["phase"] else []),
            *([("done", f"{c['done_bytes']} of {r.size} bytes (all runs, as the mapfile "
                        "records)")] if c["done_bytes"] is not None else []),
            ("copied", f"{r.copied_bytes} bytes in {human_duration(r.copy_seconds)}"
                       + (f" ({rate})" if rate else "")),
            ("written", f"{r.written_bytes} bytes in {r.write_calls} writes"),
            ("zeros skipped", f"{r.skipped_zero_bytes} bytes"
                              + (f", {r.unread_hole_bytes} of them not read ({r.source_map})"
                                 if r.source_map else "")),
            ("read errors", r.read_errors),
            *_scope_rows(r)]))
    h = data["hash"]
    of = f" (of the used-blocks domain, {r.domain['bytes']} bytes)" if r.domain else ""
    sections.append(("Hash", [("algorithm", h["algorithm"]), (f"source{of}", h["source"]),
                              (f"target{of}", h["target"])]))
    v = data["verify"]
    if v:
        fd = v["first_difference"]
        sections.append(("Verification", [
            ("result", v["result"]), ("method", v["method"]),
            ("first difference", None if not fd else
             f"bytes {fd['start']}-{fd['end']}"
             + (f", first at byte {fd['offset']}" if fd.get("offset") is not None else "")),
            ("differing regions", v["differing_regions"]), ("error", v["error"]),
            *([("covered", v["covered"])] if v["covered"] else []),
            *_how_rows(v),
            ("rate", human_rate(v["bytes_per_second"]) if v["bytes_per_second"] else None)]))
    u = data["unreadable"]
    sections.append(("Unreadable", [
        ("bytes", u["bytes"]),
        ("ranges", "\n".join(f"{x['start']}-{x['start'] + x['size']} ({x['size']} bytes)"
                             for x in u["ranges"]) or "none")]))
    title = f"rtk {r.operation} report"
    return report.render_text(title, sections)


def _scope_rows(r: CopyResult) -> list[tuple[str, object]]:
    """A domain copy's rows: what it covered, what became of the free blocks."""
    if not r.domain:
        return []
    d, fb = r.domain, r.free_blocks
    rows: list[tuple[str, object]] = [("domain", f"{d['summary']} (digest {d['digest']})")]
    if fb:
        rows.append(("free blocks", fb["text"] + (f" ({fb['how']})" if fb.get("how") else "")))
    for p in d.get("parts", []):  # each part: mapped by which tool, or why in full
        where = f"partition {p['number']}" if p.get("number") is not None else "bytes"
        rows.append(("part", f"{where} {p['start']}-{p['start'] + p['size']}"
                             f"{' ' + p['fstype'] if p.get('fstype') else ''}: "
                             + (f"mapped by {p['tool']}, {p['used']} bytes copied"
                                if p.get("tool") else p.get("note") or "copied in full")))
    return rows


def _how_rows(v: dict) -> list[tuple[str, object]]:
    """How the bytes were verified: read back behind the writer, compared after."""
    rows: list[tuple[str, object]] = []
    if v["read_back_bytes"]:
        rows.append(("read back", f"{v['read_back_bytes']} bytes, "
                                  f"{v['read_while_writing']} of them while the copy ran"))
    if v["compared_bytes"]:
        rows.append(("compared", f"{v['compared_bytes']} bytes with the source, after the "
                                 "copy"))
    return rows


def write_result_report(r: CopyResult, directory: str | None = None, *,
                        paths: report.ReportPaths | None = None,
                        **progress) -> report.ReportPaths:
    """Write the report; with ``paths`` (the running report's), replace it in place.
    ``progress``: ``done_bytes``, ``updated``, ``phase`` (:func:`report_data`)."""
    return report.write_report(r.operation, report_data(r, **progress),
                               report_text(r, **progress), directory=directory,
                               when=r.started, paths=paths)
