"""The unattended run: one :class:`~toolkit.unattended.plan.Plan` from start to the done
action.

:func:`run` goes through the phases of :class:`~toolkit.unattended.job.Job` in order
(network, iscsi, select, check, write), and every check comes before the first write to
any disk; ``dry_run`` changes nothing (no network settings applied, no LUN attached, no
initiator name set) and stops before the write, reporting what a real run would do.
Then the local report, the ``end`` event and the done action (:mod:`toolkit.unattended.ending`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from toolkit import exitcodes, iscsi
from toolkit.disks import inventory as disks_mod
from toolkit.disks import roles
from toolkit.disks.inventory import Disk
from toolkit.jobs.report import safe_url
from toolkit.system import machine
from toolkit.system.paths import LIVE_MEDIUM
from toolkit.unattended.console import Console
from toolkit.unattended.ending import (
    Outcome,
    announce,
    decide_done,
    plan_summary,
    power_off_or_reboot,
    reason_for,
    write_local_report,
)
from toolkit.unattended.job import (
    PHASES,
    Job,
    Stop,
    disk_identity,
    iscsi_luns,
    plan_secrets,
    probe_portal,
    set_initiator,
)
from toolkit.unattended.plan import Plan
from toolkit.unattended.reporter import ReportClient, RunReporter
from toolkit.unattended.selectors import SOURCE, TARGET


def run(plan: Plan, *, reporter: RunReporter | None = None, console: Console | None = None,
        power: Callable[[str], None] | None = machine.power,
        list_disks: Callable[[], list[Disk]] = disks_mod.list_disks,
        attach: Callable = iscsi.attach, set_initiator: Callable[[str], None] = set_initiator,
        apply_network: Callable | None = None, known_nics: Callable[[], list[str]] | None = None,
        source_keys: Callable[[], frozenset[str]] = roles.source_keys,
        probe_portal: Callable[[str, int], str | None] = probe_portal,
        dry_run: bool = False, medium: str = LIVE_MEDIUM) -> Outcome:
    """Run ``plan`` (mode restore or copy); never raises for a failed job.

    ``reporter``: default a :class:`RunReporter` posting to ``plan.report`` (if set).
    ``power(action)`` is called for "reboot"/"poweroff" after success only (not in a dry
    run; ``None``: never). The other callables are the real steps, replaceable (tests).
    ``dry_run`` changes nothing: no ``apply_network``, ``set_initiator``, ``attach``
    or write; the network settings are validated against ``known_nics()``, each portal
    gets a TCP connect (``probe_portal``), the disk is selected among the disks already
    present, the image is checked, and the report's ``would_do`` lists what a real run
    would do (``not_checked`` what the dry run could not check).
    """
    console = console or Console()
    if reporter is None:
        reporter = RunReporter(ReportClient(plan.report) if plan.report else None)
    reporter.set_secrets(plan_secrets(plan))
    if apply_network is None:
        from toolkit.net.apply import apply_settings as apply_network
    if known_nics is None:
        from toolkit.net.nics import nic_names as known_nics
    hooks = {"list_disks": list_disks, "attach": attach, "set_initiator": set_initiator,
             "apply_network": apply_network, "known_nics": known_nics,
             "source_keys": source_keys, "probe_portal": probe_portal}
    job = Job(plan, reporter, console, dry_run=dry_run, medium=medium, hooks=hooks)
    started = _start(plan, reporter, console, dry_run)
    status, message = _phases(job, plan, dry_run)
    message = job.clean(message)
    action = decide_done(status, plan.done, dry_run)
    reason = reason_for(status, message, plan.mode, job)
    end = _end_record(job, status, message, action, started)
    reports = write_local_report(job, reporter, plan, end, reason)
    end["reports"] = reports
    if not reporter.end(**end) and plan.report:
        console.say(f"warning: the end report did not reach {safe_url(plan.report)} "
                    f"({getattr(reporter.client, 'last_error', None)})")
    out = Outcome(status, end["exit_code"], message, action, reason, job.phase, reporter.run_id,
                  reports, written=job.written)
    announce(console, out)
    power_off_or_reboot(out, power, console)
    return out


def _start(plan: Plan, reporter: RunReporter, console: Console, dry_run: bool) -> float:
    """Announce the run on the console and to the report server; the start time."""
    reporter.update(mode=plan.mode, dry_run=dry_run, done=plan.done,
                    image={"location": safe_url(plan.image.location)} if plan.image else None,
                    disk_selector=str(plan.disk) if plan.disk else None,
                    consent=str(plan.consent) if plan.consent else None)
    console.say(f"unattended {plan.mode}{' (dry run)' if dry_run else ''}, run {reporter.run_id}"
                f", host {reporter.host['name']}")
    if plan.report:
        console.say(f"report: {safe_url(plan.report)}")
    started = time.time()
    ok_start = reporter.start(plan=plan_summary(plan))
    if plan.report and not ok_start:
        console.say(f"warning: the report server did not answer "
                    f"({getattr(reporter.client, 'last_error', None)}): carrying on")
    return started


def _phases(job: Job, plan: Plan, dry_run: bool) -> tuple[str, str]:
    """Every phase in order; ``(status, message)``, whatever happens."""
    try:
        if plan.mode not in ("restore", "copy"):
            raise Stop("start", f"rtk.mode={plan.mode}: nothing to do unattended")
        job.timed("network", job.network)
        job.timed("iscsi", job.attach)
        disks = job.timed("select", job.select)
        checked = job.timed("check", job.check_restore if plan.mode == "restore"
                            else job.check_copy, disks)
        if dry_run:
            if plan.pairs:
                job.would_copy_pairs()
            else:
                _would_write(job, plan)
            written = ", ".join(d.path for _s, d in job.pair_disks) or job.disk.path
            return "dry-run", (f"dry run: every check passed, nothing was changed; a real run "
                               f"would write {written} and then {plan.done}")
        return (job.write_restore if plan.mode == "restore" else job.write_copy)(checked)
    except Stop as e:
        job.phase = e.phase
        return e.status, job.clean(str(e))
    except Exception as e:  # noqa: BLE001 - whatever happens, report it and do not reboot
        return "failed", job.clean(f"{type(e).__name__}: {e}")


def _would_write(job: Job, plan: Plan) -> None:
    """A dry run that passed every check: the write and the done action it stopped before."""
    from toolkit.unattended.selectors import describe
    what = (f"restore {safe_url(plan.image.location)}" if plan.mode == "restore"
            else f"copy {job.source.path} ({describe(job.source)})")
    job.would("write", f"{what} onto {job.disk.path} ({describe(job.disk)}), verify "
                       f"{'yes' if plan.verify else 'no'}"
                       + (f", grow {'yes' if plan.grow else 'no'}" if plan.mode == "restore"
                          else ""), disk=job.disk.path, verify=plan.verify)
    job.would("done", f"then {plan.done}", done=plan.done)


def _end_record(job: Job, status: str, message: str, action: str, started: float) -> dict:
    """The ``end`` event: what the report server and the local report get."""
    from toolkit.jobs import report

    timings = {**job.timings, "total": round(time.monotonic() - job.t0, 3),
               "started": report.iso_time(started), "finished": report.iso_time(time.time())}
    return {"phase": job.phase, "result": status, "exit_code": exitcodes.for_status(status),
            "message": message, "error": None if status in ("ok", "dry-run") else message,
            "written": job.written, "hashes": job.hashes, "timings": timings,
            "attached": job.attached, "warnings": job.warnings, "action": action,
            "would_do": job.would_do, "not_checked": job.not_checked}


__all__ = ["PHASES", "SOURCE", "TARGET", "Outcome", "Stop", "decide_done", "disk_identity",
           "iscsi_luns", "plan_secrets", "run"]
