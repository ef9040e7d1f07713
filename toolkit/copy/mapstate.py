"""The copy's mapfile and its report while it runs: loading (bound to the pair, the
source's fingerprint and the domain, :mod:`toolkit.copy.binding`), saving, what is left
to do within the scope (:mod:`toolkit.copy.scope`), and the partial ("running") report
rewritten at each save. A mixin of :class:`toolkit.copy.engine._Copier`."""

from __future__ import annotations

import os
import time

from toolkit.blockio.mapfile import BAD, NON_SCRAPED, NON_TRIED, NON_TRIMMED, Mapfile
from toolkit.blockio.ranges import total
from toolkit.copy import binding, fingerprint
from toolkit.copy.plan import Refused
from toolkit.copy.report import RUNNING, write_result_report
from toolkit.copy.result import CopyResult
from toolkit.jobs import report


class MapKeeping:
    """The mapfile and the running report of one copy (state: the copier's)."""

    # mapfile --------------------------------------------------------------------------
    def load_map(self) -> bool:
        """Open or create the mapfile; True when an earlier run had done something.

        A mapfile already there is used as ``existing`` says (:class:`CopyOptions`):
        refused with what it says, resumed only when it is this pair's and the source's
        fingerprint is unchanged (a plain ddrescue mapfile: only when named), or replaced.
        A new mapfile records both ends' identities and the source's fingerprint."""
        opts = self.opts
        if opts.existing not in ("refuse", "resume", "restart"):
            raise ValueError(f"CopyOptions.existing={opts.existing!r}: expected refuse, "
                             "resume or restart")
        fp = self.fp = fingerprint.take(self.src_fd, self.size, self.sector)
        state = self.state = binding.inspect(self.plan, opts.mapfile, fingerprint=fp,
                                             domain=self.scope.domain)
        now = report.iso_time(time.time())
        if state.exists and (opts.existing == "refuse"
                             or (opts.existing == "resume" and state.problem)):
            raise Refused(state.refusal(opts.choices))
        if state.exists and opts.existing == "resume" and not opts.verify:
            why = state.no_verify_problem(opts.choices)  # known to differ; a foreign claim
            if why:
                raise Refused(why)
        if state.exists and opts.existing == "resume":
            self.map = state.map
            if state.foreign:  # adopted: bound to this pair from now on
                self.warnings.append(state.adopted_warning())
                self.map.meta = binding.new_meta(
                    self.plan, fp, now, origin=f"a mapfile without rtk identity lines, "
                                               f"adopted on {now}", scope=self.scope)
            else:
                self.map.meta["resumed"] = now
            resumed = total(self.todo(NON_TRIED)) != self.scope.bytes
        else:  # none, or "restart": the old one (if any) is replaced at the first save
            os.makedirs(os.path.dirname(os.path.abspath(self.mapfile_path)), exist_ok=True)
            self.map = Mapfile(self.size)
            self.map.meta = binding.new_meta(self.plan, fp, now, scope=self.scope)
            resumed = False
        self.save_map()
        return resumed

    def options_record(self) -> dict:
        opts = self.opts
        return {"verify": opts.verify, "skip_zeros": opts.skip_zeros,
                "chunk_size": opts.chunk_size, "free_blocks": opts.free_blocks,
                "domain": self.scope.digest()}

    def record_verification(self, result: CopyResult) -> None:
        """The verification's outcome in the mapfile (``verified``), kept on disk."""
        v = result.verify
        if v is None or v.error:
            return
        fd = v.first_difference or {}
        where = f"first difference at bytes {fd.get('start')}-{fd.get('end')}" if fd else ""
        self.map.meta["verified"] = binding.verified_text(
            v.match, report.iso_time(time.time()), v.method, result.algorithm, where)
        try:
            self.save_map(sync=False)
        except OSError as e:
            result.warnings.append(f"cannot record the verification in the mapfile "
                                   f"{self.mapfile_path}: {e.strerror or e}")

    def save_map(self, sync: bool = True) -> None:
        if sync and self.dst_fd >= 0:
            self.sync_target()  # what the map calls finished must be on the target
            self.since_sync.clear()
        self.unsynced = 0
        self.last_save = time.monotonic()
        self.map.save(self.mapfile_path, [
            "Mapfile. Created by rtk (Recovery Toolkit) copy, in GNU ddrescue's format",
            f"Source: {self.plan.source.label()}",
            f"Target: {self.plan.target.label()}",
            f"Current time: {report.iso_time(time.time())}",
        ])

    def maybe_save(self, pos: int) -> None:
        if (self.unsynced >= self.opts.sync_bytes
                or time.monotonic() - self.last_save >= self.opts.mapfile_interval):
            self.map.current_pos = pos
            self.save_map()
            self.running_report()

    # the report while the copy runs ---------------------------------------------------
    def running_report(self, phase: str | None = None, status: str = RUNNING,
                       message: str | None = None) -> None:
        """Write (the first time) or rewrite the report in place, atomically: what the
        mapfile records as done so far, so that a power cut leaves a report of the
        interrupted copy (``result`` "running"); the final report replaces it."""
        if not self.opts.write_report:
            return
        now, done = time.time(), self.done_bytes()
        phase = phase or self.reporter.phase or "copy"
        if message is None:
            message = (f"running ({phase}): {done} of {self.scope.bytes} bytes done as of "
                       f"{report.iso_time(now)}; if no copy runs any more it was interrupted "
                       f"(a power cut, a kill): the mapfile {self.mapfile_path} records what "
                       f"was copied: {self.opts.choices.again}")
        plan, opts = self.plan, self.opts
        r = CopyResult(
            operation="copy", status=status, message=message, source=plan.source.describe(),
            target=plan.target.describe(), size=self.size, started=self.started,
            finished=now, algorithm=opts.algorithm, resumed=self.resumed,
            mapfile=self.mapfile_path, copied_bytes=self.copied, written_bytes=self.written,
            skipped_zero_bytes=self.skipped, unread_hole_bytes=self.unread,
            source_map=self.source_map, write_calls=self.write_calls,
            read_errors=self.read_errors, copy_seconds=time.monotonic() - self.t0,
            unreadable=list(self.map.ranges(BAD)), domain=self.scope.record(),
            warnings=[*plan.warnings, *self.warnings,
                      *(ev.text() for g in self.guards.values() for ev in g.events)],
            options=self.options_record())
        try:
            self.report_paths = write_result_report(
                r, opts.report_dir, paths=self.report_paths, done_bytes=done, updated=now,
                phase=phase if status == RUNNING else None)
        except OSError as e:  # the copy goes on; the final report says it
            why = f"cannot write the report while the copy runs: {e.strerror or e}"
            if why not in self.warnings:
                self.warnings.append(why)

    def final_report(self, result: CopyResult) -> None:
        """The final report, in place of the running one (same files)."""
        result.report = write_result_report(
            result, self.opts.report_dir, paths=self.report_paths,
            done_bytes=self.done_bytes() if hasattr(self, "map") else None)

    def stopped_by(self, error: BaseException) -> None:
        """The copy raised ``error`` after its report was written: the report says so
        (not "running")."""
        if self.report_paths is None or not hasattr(self, "map"):
            return
        what = str(error) or type(error).__name__
        self.running_report(status="failed", message=(
            f"the copy stopped: {what}; the mapfile {self.mapfile_path} records what was "
            f"copied: {self.opts.choices.again}"))

    def todo(self, *statuses: str) -> list[tuple[int, int]]:
        """The ranges of the scope with one of ``statuses`` in the map."""
        return self.scope.within(self.map.ranges(*statuses))

    def done_bytes(self) -> int:
        """The scope's bytes done (copied, or given up on as unreadable), all runs."""
        return self.scope.bytes - total(self.todo(NON_TRIED, NON_TRIMMED, NON_SCRAPED))

    def scope_finished(self) -> bool:
        return not self.todo(NON_TRIED, NON_TRIMMED, NON_SCRAPED)
