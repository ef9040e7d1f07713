"""The check and write phases of an unattended restore (:class:`RestoreSteps`, a part of
:class:`~toolkit.unattended.job.Job`): where the image is, the restore's plan and its
SHA-256 check before writing, the write, and the multicast fallback.

A ``udpcast://`` image with ``plan.fallback`` (an HTTP(S) URL of the same image):
when the multicast restore fails (status "failed" or "mismatch": no sender, a late
join, the stream lost, a stream that is not the planned image), ``write`` runs
``check`` and ``write`` once more from the fallback URL, with the same SHA-256,
disk and consent, whether the stream wrote part of the disk or not (a failed
stream never leaves a disk that looks valid: its ends are zeroed, its first MiB
not written). A refusal ("refused": the disk, or a stream that is not a raw
image) is not retried: the fallback would meet the same refusal or hide a wrong plan.
"""

from __future__ import annotations

import os

from toolkit.disks.inventory import Disk
from toolkit.jobs.report import safe_url
from toolkit.unattended import selectors
from toolkit.unattended.stop import Stop

FALLBACK_ON = ("failed", "mismatch")  # a multicast restore's statuses the fallback retries


class RestoreSteps:
    """Job's restore phases (they use its ``plan``, ``disk``, ``enter``, ``step``...)."""

    def image_location(self, disks: list[Disk]) -> str:
        im = self.plan.image
        if im.kind in ("url", "udpcast"):
            return im.location
        if im.kind == "path":
            return os.path.join(self.medium, im.location.lstrip("/"))
        self.stop_if_not_attached(disks, im.selector, "rtk.image")
        try:
            return selectors.select(disks, im.selector, "rtk.image").path
        except selectors.SelectError as e:
            raise Stop("select", str(e)) from None

    def check_restore(self, disks: list[Disk], location: str | None = None):
        """The check phase of ``plan.image`` (or ``location``: the fallback URL)."""
        from toolkit import restore

        self.disks = disks
        location = location or self.image_location(disks)
        self.enter("check", f"check: image {safe_url(location)} onto {self.disk.path}")
        opts = restore.RestoreOptions(verify=self.plan.verify, grow=self.plan.grow,
                                      sha256=self.plan.expected_sha256,
                                      outage_limit=self.plan.outage_limit,
                                      boot_mode=self.plan.boot_mode,
                                      vhdx_log=self.plan.vhdx_log,
                                      windows_drivers=self.plan.windows_drivers,
                                      linux_initramfs=self.plan.linux_initramfs)
        try:
            rplan = self.step("plan_restore")(location, self.disk.path, opts, disks=disks)
        except restore.Refused as e:
            raise Stop("check", "; ".join(e.problems)) from None
        except OSError as e:  # requests' ConnectionError, Timeout... (not a SourceError)
            from toolkit.restore.source import is_url, os_reason
            hint = " (is the server up and reachable?)" if is_url(location) else ""
            raise Stop("check", f"cannot read the image {safe_url(location)}: {os_reason(e)}"
                                f"{hint}; nothing was written") from None
        img = rplan.image
        self.rep.update(image={"location": safe_url(location), "kind": img.kind,
                               "size": img.size, "sha256_expected": img.expected_sha256,
                               "sha256_from": safe_url(img.sha256_from)})
        self.warnings += rplan.warnings
        for w in rplan.warnings:
            self.con.say(f"warning: {w}")
        shrink = getattr(rplan, "shrink", None)  # onto a smaller disk (toolkit.restore)
        fits = f"fits {self.disk.path} ({rplan.target.size} bytes)" if shrink is None \
            else f"larger than {self.disk.path} ({rplan.target.size} bytes): fitted to it " \
            f"by shrinking, {shrink.size} bytes written"
        self.con.say(f"check: {img.kind}, {img.size or 'unknown'} bytes, {fits}")
        if img.expected_sha256:
            self.check_sha256(rplan, location)
        if self.dry_run and self.plan.fallback and location != self.plan.fallback:
            self.would("write", f"restore {safe_url(self.plan.fallback)} if the multicast "
                                "stream fails", fallback=safe_url(self.plan.fallback))
        return rplan

    def check_sha256(self, rplan, location: str) -> None:
        """The restore's own check before writing (:func:`toolkit.restore.check_image`), run
        in the check phase: its result (and an HTTP image's spool) stays in ``rplan`` for
        the write phase; a dry run drops it."""
        from toolkit import restore
        img = rplan.image
        try:
            checked = self.timed("checksum", self.step("check_image"), rplan,
                                 progress=self.on_progress)
        except restore.ChecksumMismatch as e:
            self.hashes["image_sha256"] = e.sha256
            raise Stop("check", f"SHA-256 mismatch: the image {safe_url(location)} hashes to "
                                f"{e.sha256}, expected {img.expected_sha256} (from "
                                f"{safe_url(img.sha256_from)}); nothing was written",
                       "mismatch") from None
        except restore.Refused as e:
            raise Stop("check", "; ".join(e.problems)) from None
        except OSError as e:
            from toolkit.restore.source import os_reason
            raise Stop("check", f"cannot read the image {safe_url(location)} to check its "
                                f"SHA-256: {os_reason(e)}; nothing was written") from None
        except Exception as e:  # noqa: BLE001 - restore.Failed: cancelled
            raise Stop("check", f"{e}") from None
        if checked is None and img.location.startswith("udpcast://"):  # read once
            spool = getattr(img, "spool", None)  # toolkit.restore.spool's decision
            held = spool is not None and spool.hold
            self.con.say(f"check: the multicast stream is held in {spool.directory} as it "
                         "arrives and its SHA-256 checked there, before anything is written "
                         "(docs/fleet.md)" if held else
                         "check: a multicast stream is read once: its SHA-256 is checked "
                         "after the rest is written, before its first MiB (docs/fleet.md)")
            return
        if checked is None:  # a container too large to spool: checked while downloading
            self.con.say("check: the SHA-256 is checked while the image is downloaded, "
                         "before writing")
            return
        self.hashes["image_sha256"] = checked.sha256
        self.con.say("check: SHA-256 matches" + (" (image spooled to the temporary "
                                                 "directory)" if checked.spool else ""))
        if self.dry_run:
            checked.close()
            rplan.checked = None


    def write_restore(self, rplan) -> tuple[str, str]:
        """The write phase; a multicast image that failed, once more from the fallback."""
        status, message = self.write_restore_once(rplan)
        im = self.plan.image
        if status in FALLBACK_ON and self.plan.fallback and im and im.kind == "udpcast":
            return self.fall_back(status, message)
        return status, message

    def fall_back(self, status: str, message: str) -> tuple[str, str]:
        """The multicast restore failed (``status``, ``message``): the checks and the write
        again from ``plan.fallback``, the same SHA-256, disk and consent."""
        url = safe_url(self.plan.fallback)
        touched = self.written  # the stream wrote part of the disk (its ends are zeroed)
        self.fallback = {"from": self.plan.image.location, "status": status,
                         "reason": message, "written_before": touched, "url": url}
        self.rep.update(fallback=self.fallback)
        self.con.say(f"write: the multicast restore failed: {message}")
        self.con.say(f"write: falling back to {url}" + (
            " (the stream overwrote part of the disk, which holds no valid table: the "
            "fallback writes it whole)" if touched else " (nothing was written)"))
        first = f"the multicast restore failed ({message})"
        try:
            rplan = self.check_restore(self.disks, location=self.plan.fallback)
        except Stop as e:  # after a partial write the disk is not "untouched": failed
            raise Stop(e.phase, f"{first}; the fallback {url} did not pass its checks: {e}",
                       "failed" if touched else e.status) from None
        status, message = self.write_restore_once(rplan)
        self.written = self.written or touched
        if status == "ok":
            return status, f"{message} (from the fallback {url}: {first})"
        return status, f"{first}; the fallback {url} failed too: {message}"

    def said_after(self, res, said) -> None:
        """What the restore did and found once it ran, on the console and in the report's
        warnings, as ``rtk restore`` prints it: the shrink's steps (an e2fsck repair...),
        the warnings its plan did not have, the Windows and Linux steps' lines."""
        from toolkit.restore import linux_report, windows_drivers
        done = list((getattr(res, "shrink", None) or {}).get("done") or ())
        for step in done:
            self.con.say(f"shrink: {step}")
        new = [w for w in getattr(res, "warnings", None) or () if w not in said
               and w not in self.warnings]
        for w in new:
            self.con.say(f"warning: {w}")
        self.warnings += new
        for line in windows_drivers.summary(getattr(res, "windows_drivers", None)):
            self.con.say(f"windows drivers: {line}")
        for line in linux_report.summary(getattr(res, "linux_initramfs", None)):
            self.con.say(f"linux initramfs: {line}")

    def write_restore_once(self, rplan) -> tuple[str, str]:
        self.enter("write", f"write: restoring onto {self.disk.path}")
        self.written = True
        # the write gate opens the disk only if rtk.consent= names it
        res = self.timed("write", self.step("restore"), rplan, progress=self.on_progress,
                         consent=self.write_consent())
        self.inner, self.inner_report = res.to_dict(), res.report
        self.hashes.update({"image_sha256": res.input_sha256 or self.hashes.get("image_sha256"),
                            "sha256_match": res.sha256_match,
                            "written_hash": res.image_hash, "written_hash_algorithm":
                            res.algorithm, "written_size": res.image_size})
        self.said_after(res, rplan.warnings)
        if res.status == "refused":  # refused inside (e.g. a container's real size)
            self.written = False
        from toolkit.restore.source import is_multicast
        if res.status != "ok" and is_multicast(rplan.image.location) and not res.touched:
            self.written = False  # the stream failed before the first write (no sender)
        return res.status, res.message
