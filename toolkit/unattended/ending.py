"""How an unattended run ends: the :class:`Outcome`, the done action, the local report
(``unattended-*.json``/``.txt`` under /var/log/rtk) and what the console says.

``plan.done`` only after success; after anything else ``"stay"``, with the reason on
the screen (never a reboot into a half-written disk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.jobs import report
from toolkit.jobs.report import safe_url
from toolkit.unattended.plan import Plan


@dataclass
class Outcome:
    """How the run ended. ``status``: "ok", "dry-run", "refused" (nothing written),
    "failed", "mismatch", "cancelled", "unreadable" (copy: ok but some source ranges
    unreadable). ``action``: ``plan.done`` after success, else "stay" (``reason`` says
    why)."""

    status: str
    exit_code: int
    message: str
    action: str
    reason: str
    phase: str
    run_id: str
    reports: dict[str, str] = field(default_factory=dict)
    written: bool = False  # something may have been written to the disk


def decide_done(status: str, done: str, dry_run: bool = False) -> str:
    """The done action: ``done`` (reboot, poweroff, menu, shell) only after success."""
    return done if status == "ok" and not dry_run else "stay"


def plan_summary(plan: Plan) -> dict:
    d = plan.to_dict()  # CHAP passwords are ******** already
    if d.get("image"):
        d["image"]["location"] = safe_url(d["image"]["location"])
    d["report"] = safe_url(d.get("report"))
    d["plan"] = safe_url(d.get("plan"))
    return d


def render_text(data: dict, reason: str) -> str:
    disk = data.get("disk") or {}
    image = data.get("image") or {}
    hashes = data.get("hashes") or {}
    rows = [("run", data.get("run_id")), ("host", (data.get("host") or {}).get("name")),
            ("mode", data.get("mode")), ("result", data.get("result")),
            ("phase", data.get("phase")), ("message", data.get("message")),
            ("action", data.get("action")), ("why", reason)]
    target = [("path", disk.get("path")), ("model", disk.get("model")),
              ("serial", disk.get("serial")), ("wwn", disk.get("wwn")),
              ("size", disk.get("size")), ("transport", disk.get("transport"))]
    img = [("location", image.get("location")), ("kind", image.get("kind")),
           ("size", image.get("size")), ("sha256 expected", image.get("sha256_expected"))]
    # .get: a short CHAP secret scrubbed out of the keys may have renamed them
    dry = [("Dry run: a real run would", [(str(i + 1), f"{w.get('phase')}: would "
                                                       f"{w.get('action')}")
                                          for i, w in enumerate(data.get("would_do") or [])
                                          if isinstance(w, dict)]),
           ("Dry run: not checked", [(str(i + 1), w)
                                     for i, w in enumerate(data.get("not_checked") or [])])]
    return report.render_text("Unattended run", [
        ("Result", rows), ("Disk", target), ("Image", img),
        ("Hashes", [(k, v) for k, v in hashes.items()]),
        ("Timings (s)", [(k, v) for k, v in (data.get("timings") or {}).items()]),
        ("Warnings", [(str(i + 1), w) for i, w in enumerate(data.get("warnings") or [])]),
        *[(heading, lines) for heading, lines in dry if lines],
        ("Reports", [(k, v) for k, v in (data.get("reports") or {}).items()])])


def reason_for(status: str, message: str, mode: str, job) -> str:
    """The one line the screen keeps: what happened and what it means for the disk."""
    if status == "ok":
        return f"{mode} succeeded"
    if status == "dry-run":
        return message
    if job.written:
        disks = [job.disk] if job.disk else [d for _s, d in getattr(job, "pair_disks", [])]
        return (f"{mode} FAILED ({status}) while writing "
                f"{', '.join(d.path for d in disks) or '?'}"
                f": {message}. The disk is not usable: this machine does not reboot.")
    return f"{mode} STOPPED before writing anything ({job.phase}): {message}"


def write_local_report(job, reporter, plan: Plan, end: dict, reason: str) -> dict[str, str]:
    """Write ``unattended-*.json``/``.txt`` (secrets scrubbed); the paths of every report
    of this run (the restore's or copy's own, then the local one)."""
    from toolkit.unattended.reporter import scrub

    reports: dict[str, str] = {}
    if job.inner_report:
        reports[f"{plan.mode}_json"] = job.inner_report.json
        reports[f"{plan.mode}_text"] = job.inner_report.text
    try:
        local = {**reporter.common, "run_id": reporter.run_id, "host": reporter.host, **end,
                 "reports": dict(reports), "result_detail": job.inner,
                 "report_server": {"url": safe_url(plan.report), "posts_ok":
                                   getattr(reporter.client, "sent", 0), "posts_failed":
                                   getattr(reporter.client, "failed", 0)}}
        local = scrub(report.to_jsonable(local), reporter.secrets)
        paths = report.write_report("unattended", local, render_text(local, reason))
        reports["json"], reports["text"] = paths.json, paths.text
    except OSError as e:
        job.con.say(f"warning: cannot write the local report: {e}")
    if plan.bundle:  # after the local report, which it holds; the end event says how it went
        end["bundle"] = send_bundle(reporter, plan, job.con)
    return reports


def send_bundle(reporter, plan: Plan, console) -> dict:
    """``bundle: true``: the logs bundle (:mod:`toolkit.system.bundle`, the run's secrets
    masked) as one ``bundle`` event to the report server, the .tar.gz in base64. Returns
    what the end event says of it (name, size, sha256, sent, error); never raises."""
    import base64
    import time

    from toolkit.jobs.report import iso_time
    from toolkit.system import bundle
    from toolkit.unattended.reporter import SCHEMA, scrub

    try:
        with bundle.temporary(secrets=reporter.secrets) as b, open(b.path, "rb") as f:
            data = f.read()
    except Exception as e:  # noqa: BLE001 - the run's result stands without its bundle
        console.say(f"warning: cannot make the logs bundle: {e}")
        return {"sent": False, "error": f"cannot make the bundle: {e}"}
    info = {"name": b.name, "size": b.size, "sha256": b.sha256,
            "not_collected": [f"{e.name}: {e.note}" for e in b.missing()]}
    reporter.seq += 1
    body = scrub({"schema": SCHEMA, "event": "bundle", "run_id": reporter.run_id,
                  "seq": reporter.seq, "time": iso_time(time.time()), "host": reporter.host,
                  **reporter.common, "bundle": info}, reporter.secrets)
    body["bundle"] = {**body["bundle"], "encoding": "base64",  # not scrubbed: it is binary
                      "data": base64.b64encode(data).decode("ascii")}
    client = reporter.client
    ok = bool(client and client.post(body))
    error = None if ok else (getattr(client, "last_error", None) or "no report server")
    if ok:
        console.say(f"logs bundle {b.name} ({b.size} bytes) sent to {safe_url(plan.report)}")
    else:
        console.say(f"warning: the logs bundle did not reach {safe_url(plan.report)} ({error})")
    return {**info, "sent": ok, "error": error}


def announce(console, out: Outcome) -> None:
    """What the console says last: the result, or a banner with the reason that stays."""
    reports = out.reports
    if out.status == "ok":
        console.say(f"done: {out.message}")
        if reports.get("text"):
            console.say(f"report: {reports['text']}")
        console.say({"reboot": "rebooting into the restored system",
                     "poweroff": "powering off"}.get(out.action, f"then: {out.action}"))
        return
    dry = out.status == "dry-run"
    console.banner("RTK UNATTENDED " + ("DRY RUN" if dry else "STOPPED"),
                   [out.reason] + ([f"report: {reports['text']}"] if reports.get("text") else [])
                   + ([] if dry else
                      ["This machine stays here. Nothing reboots until someone acts."]))


def power_off_or_reboot(out: Outcome, power, console) -> None:
    """The done action, when it is a reboot or a power-off; a failure to do it stays."""
    if out.action not in ("reboot", "poweroff") or power is None:
        return
    try:
        power(out.action)
    except Exception as e:  # noqa: BLE001
        console.say(f"{out.action} failed: {e}")
        out.action, out.reason = "stay", f"{out.action} failed: {e}"
