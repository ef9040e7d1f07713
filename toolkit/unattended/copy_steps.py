"""The check and write phases of an unattended copy (:class:`CopySteps`, a part of
:class:`~toolkit.unattended.job.Job`): :func:`toolkit.copy.plan.plan_copy` with the SOURCE
roles and the write gate's consent, then :func:`toolkit.copy.engine.copy`; and of a copy
job of several pairs (plan file ``pairs:``, :class:`PairSteps`): select, check, write."""

from __future__ import annotations

from toolkit.disks import gate
from toolkit.disks.identity import identity_of
from toolkit.disks.inventory import Disk
from toolkit.jobs import report
from toolkit.unattended import selectors
from toolkit.unattended.stop import Stop


class CopySteps:
    """Job's copy phases (they use its ``plan``, ``source``, ``disk``, ``enter``...)."""

    def check_copy(self, disks: list[Disk]):
        if self.plan.pairs:
            return self.check_pairs(disks)
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
        if self.plan.pairs:
            return self.write_pairs(cplan)
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
            if self.plan.used_blocks:  # plan file used_blocks: true
                from toolkit.copy import domain_choice
                options = domain_choice.with_used_blocks(options, cplan.source)
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


class PairSteps:
    """Job's phases for a copy job of several pairs (``plan.pairs``): each pair's SOURCE
    and disk selected and its consent checked, the pairs planned together
    (:func:`toolkit.copy.job.plan_job`: refused before anything is written when a disk is
    the target of two pairs, or a target is another pair's source or target by any
    alias), then :func:`toolkit.copy.job.run_job`."""

    def select_pairs(self) -> list[Disk]:
        plan = self.plan
        self.enter("select", f"disks: looking for the disks of {len(plan.pairs)} pairs")
        try:
            disks = self.hooks["list_disks"]()
            self.pair_disks = []
            for i, p in enumerate(plan.pairs):
                where = f"plan.pairs[{i}]"
                self.stop_if_not_attached(disks, p.disk, f"{where}.disk")
                self.stop_if_not_attached(disks, p.source, f"{where}.source")
                disk = selectors.select(disks, p.disk, f"{where}.disk")
                selectors.check_consent(disk, p.consent, f"{where}.consent")
                source = selectors.select(disks, p.source, f"{where}.source")
                self.pair_disks.append((source, disk))
                self.con.say(f"pair {i + 1}: {selectors.describe(source)} -> "
                             f"{selectors.describe(disk)}, {where}.consent={p.consent} "
                             "names it")
        except (selectors.SelectError, selectors.ConsentError) as e:
            raise Stop("select", str(e)) from None
        except OSError as e:
            raise Stop("select", f"cannot list the disks: {e}") from None
        self.rep.update(pairs=[{"source": identity_of(s).to_dict(),
                                "disk": identity_of(d).to_dict()} for s, d in self.pair_disks])
        return disks

    def check_pairs(self, disks: list[Disk]) -> list:
        from toolkit.copy import job as copyjob
        self.enter("check", f"check: {len(self.pair_disks)} pairs")
        try:
            plans = copyjob.plan_job([(s.path, d.path) for s, d in self.pair_disks],
                                     source_role=self.hooks["source_keys"](), disks=disks)
        except copyjob.Refused as e:
            raise Stop("check", "; ".join(e.problems)) from None
        for n, (cplan, p) in enumerate(zip(plans, self.plan.pairs, strict=True), 1):
            why = gate.consent_problem(cplan.target, self.pair_consent(p))  # the gate's word
            if why:
                raise Stop("check", f"pair {n}: {why}")
            self.warnings += [f"pair {n}: {w}" for w in cplan.warnings]
            for line in ([copyjob.cluster_sentence(cplan)] + cplan.warnings):
                if line:
                    self.con.say(f"pair {n}: {line}")
        return plans

    def pair_consent(self, p) -> gate.Consent:
        return gate.Consent.unattended(p.consent.kind, p.consent.value)

    def would_copy_pairs(self) -> None:
        """A dry run that passed every check: each pair it stopped before, the done action."""
        verify = "yes" if self.plan.verify else "no"
        for n, (s, d) in enumerate(self.pair_disks, 1):
            self.would("write", f"copy pair {n}: {s.path} ({selectors.describe(s)}) onto "
                                f"{d.path} ({selectors.describe(d)}), verify {verify}",
                       pair=n, source=s.path, disk=d.path, verify=self.plan.verify)
        self.would("done", f"then {self.plan.done}", done=self.plan.done)

    def write_pairs(self, plans) -> tuple[str, str]:
        from toolkit.copy import binding
        from toolkit.copy import engine as copy
        from toolkit.copy import job as copyjob
        from toolkit.copy.job_report import pair_verdict, report_data
        plan = self.plan
        self.enter("write", f"write: copying {len(plans)} pairs")
        existing = {"yes": "resume", "restart": "restart"}.get(plan.resume, "refuse")
        pairs = [copyjob.JobPair(cplan, copy.CopyOptions(
            verify=plan.verify, existing=existing, choices=binding.UNATTENDED,
            outage_limit=plan.outage_limit), self.pair_consent(p), plan.used_blocks)
            for cplan, p in zip(plans, plan.pairs, strict=True)]

        def on_pair(o) -> None:
            if o.status != "running":
                self.written = self.written or o.status != "refused"
            self.con.say(f"pair {o.number} of {len(plans)}: "
                         + ("started" if o.status == "running" else pair_verdict(o)))
        self.written = True  # from here on something may be written
        res = self.timed("write", copyjob.run_job, pairs, on_pair=on_pair,
                         progress=self.on_job_progress,
                         concurrent=copyjob.DEFAULT_CONCURRENT if plan.concurrent is None
                         else plan.concurrent)
        self.written = any(o.status not in ("not started", "refused") for o in res.pairs)
        self.inner, self.inner_report = report.to_jsonable(report_data(res)), res.report
        self.hashes.update({"pairs": [{
            "pair": o.number, "algorithm": o.result.algorithm if o.result else None,
            "source_hash": o.result.source_digest.hexdigest
            if o.result and o.result.source_digest else None,
            "verify_match": o.result.verify.match if o.result and o.result.verify else None,
            "target_hash": o.result.verify.target_hash
            if o.result and o.result.verify else None} for o in res.pairs]})
        return res.status, res.message

    def on_job_progress(self, jp) -> None:
        """A job's progress: the console's line names the pairs, the report server gets
        the whole job (its phase that of the first pair running)."""
        try:
            self.con.progress(jp)
            self.rep.progress(jp.overall)
        except Exception:  # noqa: BLE001 - progress display must never stop a write
            pass
