"""The phases of an unattended run, each a method of :class:`Job`, in order:

1. ``network``: apply ``plan.network`` (``ip=``, ``vlan=``, plan file), if any.
2. ``iscsi``: set the initiator name, attach ``plan.sources`` (and an
   ``rtk.image=iscsi:...`` LUN with a server) as SOURCE, ``plan.targets`` as
   TARGET (CHAP from the plan).
3. ``select``: the one disk ``rtk.disk=`` names (:func:`toolkit.unattended.selectors.select`),
   and ``rtk.consent=`` must name it (:func:`~toolkit.unattended.selectors.check_consent`).
4. ``check``: restore: :func:`toolkit.restore.plan_restore` (image readable,
   fits the disk, not a SOURCE, not in use...) and, for raw images with a
   SHA-256, a hashing pass over the image; copy:
   :func:`toolkit.copy.plan.plan_copy` with the SOURCE roles.
5. ``write``: :func:`toolkit.restore.restore` or :func:`toolkit.copy.engine.copy`,
   progress to the console and the report server.

A failed check raises :class:`Stop` before the first write to any disk.
"""

from __future__ import annotations

import hashlib
import os
import time

from toolkit import iscsi
from toolkit.disks.identity import identity_of
from toolkit.disks.inventory import Disk
from toolkit.iscsi.adm import redact
from toolkit.jobs import report
from toolkit.jobs.progress import Progress, Reporter
from toolkit.unattended import selectors
from toolkit.unattended.console import Console
from toolkit.unattended.plan import Plan
from toolkit.unattended.reporter import RunReporter, safe_url
from toolkit.unattended.selectors import IscsiLun, Selector

PHASES = ("network", "iscsi", "select", "check", "write")


class Stop(Exception):
    """A check failed: stop before the first write. ``status`` is "refused" (nothing was
    written) unless said otherwise."""

    def __init__(self, phase: str, message: str, status: str = "refused"):
        super().__init__(message)
        self.phase, self.status = phase, status


def plan_secrets(plan: Plan) -> list[str]:
    """Every CHAP password in ``plan`` (to keep them out of reports and messages)."""
    luns = [*plan.sources, *plan.targets, *([plan.image.lun] if plan.image and plan.image.lun
                                           else [])]
    return [c.password for x in luns for c in (x.chap, x.mutual) if c and c.password]


def disk_identity(d: Disk | None) -> dict | None:
    """What names a disk in the report: everything a person checks, nothing else."""
    return None if d is None else identity_of(d).to_dict()


def set_initiator(name: str) -> None:
    if iscsi.read_initiator_name() != name:
        iscsi.set_initiator_name(name)


def _lun_label(x: IscsiLun) -> str:
    return f"{x.role} {x.iqn} LUN {x.lun} at {x.portal}"


def iscsi_luns(plan: Plan) -> list[IscsiLun]:
    """The LUNs to attach, SOURCE first: ``plan.sources``, an ``rtk.image=iscsi:`` LUN
    with a server (unless listed already), then ``plan.targets``."""
    out = list(plan.sources)
    im = plan.image
    if im and im.lun and all((x.iqn, x.lun, x.host) != (im.lun.iqn, im.lun.lun, im.lun.host)
                             for x in out):
        out.append(im.lun)
    return out + list(plan.targets)


def _source_selector(plan: Plan) -> Selector | None:
    if plan.image and plan.image.selector:
        return plan.image.selector
    if len(plan.sources) == 1:
        x = plan.sources[0]
        return Selector("iscsi", f"{x.iqn}:{x.lun}", iqn=x.iqn, lun=x.lun)
    return None


class Job:
    """One run of a plan: the phases, what they found and did (for the report)."""


    def __init__(self, plan: Plan, reporter: RunReporter, console: Console, *, dry_run: bool,
                 medium: str, hooks: dict):
        self.plan, self.rep, self.con, self.dry_run = plan, reporter, console, dry_run
        self.medium, self.hooks = medium, hooks
        self.phase = "start"
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.disk: Disk | None = None
        self.source: Disk | None = None
        self.attached: list[dict] = []
        self.warnings: list[str] = []
        self.hashes: dict = {}
        self.inner: dict = {}  # the restore/copy result as its report has it
        self.inner_report: report.ReportPaths | None = None
        self.written = False
        self.secrets = plan_secrets(plan)

    def clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def enter(self, phase: str, text: str) -> None:
        self.phase = phase
        self.con.say(text)
        self.rep.progress(Progress(phase, 0, 0, 0.0, 0.0, None), force=True)

    def timed(self, phase: str, fn, *args, **kw):
        start = time.monotonic()
        try:
            return fn(*args, **kw)
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0) + time.monotonic() - start, 3)

    def on_progress(self, p: Progress) -> None:
        try:
            self.con.progress(p)
            self.rep.progress(p)
        except Exception:  # noqa: BLE001 - progress display must never stop a write
            pass

    # phases ---------------------------------------------------------------------------
    def network(self) -> None:
        if not self.plan.network:
            return
        from toolkit.net.errors import NetError
        self.enter("network", "network: applying " + ", ".join(
            f"{s.iface} {s.mode}" for s in self.plan.network))
        try:
            known = self.hooks["known_nics"]()
            for s in self.plan.network_settings(known):
                r = self.hooks["apply_network"](s, known_nics=known)
                addrs = ", ".join(getattr(r, "addresses", []) or []) or "no address yet"
                self.con.say(f"network: {s.iface} up ({addrs})")
        except (NetError, OSError, ValueError) as e:
            raise Stop("network", f"network settings failed: {e}") from None

    def attach(self) -> None:
        luns = iscsi_luns(self.plan)
        if not luns:
            return
        self.enter("iscsi", f"iscsi: attaching {len(luns)} LUN(s)")
        try:
            if self.plan.initiator:
                self.hooks["set_initiator"](self.plan.initiator)
                self.con.say(f"iscsi: initiator {self.plan.initiator}")
        except (iscsi.IscsiError, OSError, ValueError) as e:
            raise Stop("iscsi", self.clean(f"cannot set the initiator name: {e}")) from None
        for x in luns:
            try:
                r = self.hooks["attach"](x.host, x.iqn, x.role, port=x.port, lun=x.lun,
                                         chap=x.chap, mutual=x.mutual)
            except iscsi.IscsiAuthError as e:
                hint = getattr(e, "hint", None)
                raise Stop("iscsi", self.clean(
                    f"CHAP authentication failed for {_lun_label(x)}: {e}"
                    + (f" ({hint})" if hint else ""))) from None
            except iscsi.IscsiPortalUnreachable as e:
                raise Stop("iscsi", self.clean(f"iSCSI portal unreachable for "
                                               f"{_lun_label(x)}: {e}")) from None
            except (iscsi.IscsiError, OSError, ValueError) as e:
                raise Stop("iscsi", self.clean(f"cannot attach {_lun_label(x)}: {e}")) from None
            devices = [getattr(lun, "device", None) for lun in getattr(r, "luns", []) or []]
            self.attached.append({"role": x.role, "iqn": x.iqn, "lun": x.lun,
                                  "portal": x.portal, "devices": [d for d in devices if d]})
            self.warnings += [self.clean(w) for w in getattr(r, "warnings", []) or []]
            self.con.say(f"iscsi: attached {_lun_label(x)}"
                         + (f" as {', '.join(d for d in devices if d)}" if any(devices) else ""))

    def select(self) -> list[Disk]:
        self.enter("select", f"disk: looking for rtk.disk={self.plan.disk}")
        try:
            disks = self.hooks["list_disks"]()
            self.disk = selectors.select(disks, self.plan.disk)
            self.rep.update(disk=disk_identity(self.disk))
            self.con.say(f"disk: found {selectors.describe(self.disk)}")
            selectors.check_consent(self.disk, self.plan.consent)
            self.con.say(f"disk: rtk.consent={self.plan.consent} names it")
            if self.plan.mode == "copy":
                sel = _source_selector(self.plan)
                if sel is None:
                    raise Stop("select", "rtk.mode=copy: no source (rtk.image=iscsi:IQN:LUN "
                                         "or exactly one rtk.source=)")
                self.source = selectors.select(disks, sel, "the source")
                self.rep.update(source=disk_identity(self.source))
                self.con.say(f"source: {selectors.describe(self.source)}")
        except (selectors.SelectError, selectors.ConsentError) as e:
            raise Stop("select", str(e)) from None
        except OSError as e:
            raise Stop("select", f"cannot list the disks: {e}") from None
        return disks

    def image_location(self, disks: list[Disk]) -> str:
        im = self.plan.image
        if im.kind == "url":
            return im.location
        if im.kind == "path":
            return os.path.join(self.medium, im.location.lstrip("/"))
        try:
            return selectors.select(disks, im.selector, "rtk.image").path
        except selectors.SelectError as e:
            raise Stop("select", str(e)) from None

    def check_restore(self, disks: list[Disk]):
        from toolkit import restore
        from toolkit.restore import detect

        location = self.image_location(disks)
        self.enter("check", f"check: image {safe_url(location)} onto {self.disk.path}")
        opts = restore.RestoreOptions(verify=self.plan.verify, grow=self.plan.grow,
                                      sha256=self.plan.sha256)
        try:
            rplan = restore.plan_restore(location, self.disk.path, opts, disks=disks)
        except restore.Refused as e:
            raise Stop("check", "; ".join(e.problems)) from None
        except OSError as e:  # requests' ConnectionError, Timeout... (not a SourceError)
            why = getattr(e, "strerror", None) or type(e).__name__
            raise Stop("check", f"cannot read the image {safe_url(location)}: {why} (is the "
                                "server up and reachable?); nothing was written") from None
        img = rplan.image
        self.rep.update(image={"location": safe_url(location), "kind": img.kind,
                               "size": img.size, "sha256_expected": img.expected_sha256,
                               "sha256_from": safe_url(img.sha256_from)})
        self.warnings += rplan.warnings
        for w in rplan.warnings:
            self.con.say(f"warning: {w}")
        self.con.say(f"check: {img.kind}, {img.size or 'unknown'} bytes, fits "
                     f"{self.disk.path} ({rplan.target.size} bytes)")
        if img.expected_sha256 and img.format == detect.RAW:
            # a raw image is streamed onto the disk: check its hash before writing
            got = self.timed("checksum", self.prehash, location, opts)
            self.hashes["image_sha256"] = got
            if got != img.expected_sha256:
                raise Stop("check", f"SHA-256 mismatch: the image {safe_url(location)} "
                                    f"hashes to {got}, expected {img.expected_sha256} "
                                    f"(from {safe_url(img.sha256_from)}); nothing was written",
                           "mismatch")
            self.con.say("check: SHA-256 matches")
        return rplan

    def prehash(self, location: str, opts) -> str:
        from toolkit.restore import source as sourcemod
        rep = Reporter(self.on_progress, 0.25)
        h, done = hashlib.sha256(), 0
        try:
            with sourcemod.open_source(location, **opts.source_kw()) as src:
                rep.start("checksum", src.size or 0)
                while data := src.read(8 << 20):
                    h.update(data)
                    done += len(data)
                    rep.update(done)
        except OSError as e:
            raise Stop("check", f"cannot read the image to check its SHA-256: {e}") from None
        rep.update(done, force=True)
        return h.hexdigest()

    def check_copy(self, disks: list[Disk]):
        from toolkit.copy import engine as copy
        self.enter("check", f"check: copy {self.source.path} onto {self.disk.path}")
        try:
            cplan = copy.plan_copy(self.source.path, self.disk.path,
                                   source_role=self.hooks["source_keys"](), disks=disks)
        except copy.Refused as e:
            raise Stop("check", "; ".join(e.problems)) from None
        self.warnings += cplan.warnings
        for w in cplan.warnings:
            self.con.say(f"warning: {w}")
        return cplan

    def write_restore(self, rplan) -> tuple[str, str]:
        from toolkit import restore
        self.enter("write", f"write: restoring onto {self.disk.path}")
        self.written = True
        res = self.timed("write", restore.restore, rplan, progress=self.on_progress)
        self.inner, self.inner_report = res.to_dict(), res.report
        self.hashes.update({"image_sha256": res.input_sha256 or self.hashes.get("image_sha256"),
                            "sha256_match": res.sha256_match,
                            "written_hash": res.image_hash, "written_hash_algorithm":
                            res.algorithm, "written_size": res.image_size})
        if res.status == "refused":  # refused inside (e.g. a container's real size)
            self.written = False
        return res.status, res.message

    def write_copy(self, cplan) -> tuple[str, str]:
        from toolkit.copy import engine as copy
        self.enter("write", f"write: copying {self.source.path} onto {self.disk.path}")
        self.written = True
        try:
            res = self.timed("write", copy.copy, cplan, copy.CopyOptions(verify=self.plan.verify),
                             progress=self.on_progress)
        except copy.Refused as e:  # target busy (no exclusive open), foreign mapfile
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
