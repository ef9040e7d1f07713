"""The check and write phases of an unattended copy (:class:`CopySteps`, a part of
:class:`~toolkit.unattended.job.Job`): :func:`toolkit.copy.plan.plan_copy` with the SOURCE
roles and the write gate's consent, then :func:`toolkit.copy.engine.copy`."""

from __future__ import annotations

from toolkit.disks import gate
from toolkit.disks.inventory import Disk
from toolkit.jobs import report
from toolkit.unattended.stop import Stop


class CopySteps:
    """Job's copy phases (they use its ``plan``, ``source``, ``disk``, ``enter``...)."""

    def check_copy(self, disks: list[Disk]):
        from toolkit.copy import engine as copy
        self.enter("check", f"check: copy {self.source.path} onto {self.disk.path}")
        try:
            cplan = copy.plan_copy(self.source.path, self.disk.path,
                                   source_role=self.hooks["source_keys"](), disks=disks)
        except copy.Refused as e:
            raise Stop("check", "; ".join(e.problems)) from None
        why = gate.consent_problem(cplan.target, self.write_consent())  # the gate's word
        if why:
            raise Stop("check", why)
        self.warnings += cplan.warnings
        for w in cplan.warnings:
            self.con.say(f"warning: {w}")
        return cplan

    def write_copy(self, cplan) -> tuple[str, str]:
        from toolkit.copy import binding
        from toolkit.copy import engine as copy
        self.enter("write", f"write: copying {self.source.path} onto {self.disk.path}")
        self.written = True
        # a mapfile of the pair already there: refused unless the plan's resume says
        # yes (continue it; refused if another pair's or the source changed) or restart
        existing = {"yes": "resume", "restart": "restart"}.get(self.plan.resume, "refuse")
        options = copy.CopyOptions(verify=self.plan.verify, existing=existing,
                                   choices=binding.UNATTENDED,
                                   outage_limit=self.plan.outage_limit)
        try:
            res = self.timed("write", copy.copy, cplan, options, progress=self.on_progress,
                             consent=self.write_consent())
        except copy.Refused as e:  # target busy (no exclusive open), a mapfile there
            self.written = False
            raise Stop("write", "; ".join(e.problems)) from None
        self.inner, self.inner_report = report.to_jsonable(res), res.report
        self.inner.pop("source_digest", None)  # per-region digests: bytes, not for JSON
        v, sd = res.verify, res.source_digest
        self.hashes.update({
            "source_hash": sd.hexdigest if sd else None, "algorithm": res.algorithm,
            "verify_match": v.match if v else None,
            "target_hash": v.target_hash if v else None})
        return res.status, res.message
