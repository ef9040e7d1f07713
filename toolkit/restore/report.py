"""What a restore did (:class:`RestoreResult`) and its report (via :mod:`toolkit.jobs.report`).

The report, ``restore-YYYYmmdd-HHMMSS.json`` and ``.txt`` under the log
directory: the image (location, format, compression, sizes, SHA-256 of the
file as given and whether it matched, the hash of the written image bytes),
the target's identity, the verification, the fitting steps, the partitions
and filesystems found on the restored disk, the operating systems detected,
the boot plan, times and the result. Schema in docs/restore.md.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from toolkit import exitcodes
from toolkit.disks import cluster
from toolkit.jobs import report
from toolkit.restore import linux_report, windows_drivers
from toolkit.units import human_duration, human_size


@dataclass
class RestoreResult(exitcodes.StatusExit):
    """``status``: "ok", "refused" (nothing written), "failed", "mismatch" (checksum or
    verification), "cancelled". After a failure the target holds no partition table."""

    status: str
    message: str
    image: object  # plan.ImageInfo
    target: object  # toolkit.disks.endpoint.Endpoint
    warnings: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    image_size: int | None = None
    image_hash: str | None = None  # of the written image bytes, ``algorithm``
    algorithm: str | None = None
    input_sha256: str | None = None  # of the image file as given
    sha256_match: bool | None = None
    table: str | None = None
    verify: dict | None = None
    fit: list[str] = field(default_factory=list)
    contents: dict | None = None
    boot: object = None  # boot.BootPlan
    windows_drivers: dict | None = None  # toolkit.restore.windows_drivers.run's record
    linux_initramfs: dict | None = None  # toolkit.restore.linux_initramfs.run's record
    shrink: dict | None = None  # onto a smaller disk: toolkit.restore.shrink_plan's, and done
    resumes: int = 0
    zeroed_bytes: int = 0  # all-zero chunks zeroed by the device (BLKZEROOUT), not written
    wiped: bool = False  # the target's ends are zeroed: no valid table until the head is back
    touched: bool = False  # the target was written to (set at the first wipe, never cleared)
    report: report.ReportPaths | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        img = dataclasses.asdict(self.image)
        img["kind"] = self.image.kind
        img.update(sha256=self.input_sha256, sha256_match=self.sha256_match,
                   written_size=self.image_size, written_hash=self.image_hash,
                   written_hash_algorithm=self.algorithm, http_resumes=self.resumes,
                   zeroed_by_device=self.zeroed_bytes)
        return {
            "operation": "restore", "status": self.status, "exit_code": self.exit_code,
            "message": self.message,
            "started": report.iso_time(self.started), "finished": report.iso_time(self.finished),
            "seconds": round(self.finished - self.started, 3),
            "image": img, "target": self.target.record().to_dict(), "verify": self.verify,
            "fit": self.fit, "disk": self.contents,
            "boot": report.to_jsonable(self.boot) if self.boot else None,
            "windows_drivers": self.windows_drivers,
            "linux_initramfs": self.linux_initramfs,
            "shrink": self.shrink,
            "warnings": self.warnings,
        }


def _zeroed(n: int | None) -> str | None:
    return f"{n} bytes ({human_size(n)}) of zeros, BLKZEROOUT" if n else None


def _shrink_rows(shrink: dict | None) -> list[tuple[str, str]]:
    if not shrink:
        return []
    rows = [("image size", f"{shrink['image_size']} bytes ({human_size(shrink['image_size'])})"),
            ("written", f"{shrink['size']} bytes ({human_size(shrink['size'])})")]
    for p in shrink["parts"]:
        rows.append((f"partition {p['number']}",
                     f"{p['action']}: {p['start']}+{p['size']} -> "
                     f"{p['new_start']}+{p['new_size']} bytes ({p.get('fstype') or '-'})"))
    rows += [("done", d) for d in shrink.get("done") or []]
    return rows


def render(data: dict) -> str:
    img, tgt = data["image"], data["target"]
    sha = img.get("sha256") or "-"
    if img.get("expected_sha256"):
        sha += f" (expected {img['expected_sha256']} from {img['sha256_from']}: " \
               f"{'match' if img.get('sha256_match') else 'MISMATCH'})"
    rows_image = [("location", img["location"]), ("kind", img["kind"]),
                  ("file size", img.get("file_size")), ("bytes written", img.get("written_size")),
                  ("sha256", sha),
                  (f"written hash ({img.get('written_hash_algorithm') or '-'})",
                   img.get("written_hash")),
                  ("zeroed by the device", _zeroed(img.get("zeroed_by_device"))),
                  ("HTTP resumes", img.get("http_resumes"))]
    rows_target = [("device", tgt["node"]), ("model", tgt.get("model")),
                   ("serial", tgt.get("serial") or tgt.get("wwn")),
                   ("size", f"{tgt['size']} bytes ({human_size(tgt['size'])})"),
                   ("sector size", tgt.get("logical_sector_size")),
                   ("backing file", tgt.get("backing_file")),
                   # what the disk held before the restore (target.cluster in the JSON)
                   *((f"{k} before", v) for k, v in cluster.report_rows(tgt.get("cluster")))]
    v = data.get("verify") or {}
    rows_result = [("status", data["status"]), ("message", data["message"]),
                   ("verified", f"{v.get('method')}: {'match' if v.get('match') else 'NO'}"
                    if v else "not verified"),
                   ("fit", "\n".join(data.get("fit") or []) or None),
                   ("started", data["started"]), ("finished", data["finished"]),
                   ("duration", human_duration(data["seconds"]))]
    sections = [("Image", rows_image), ("Target", rows_target), ("Result", rows_result)]
    disk = data.get("disk")
    if disk:
        rows = [("table", disk.get("table"))]
        for p in disk.get("partitions", []):
            bits = [human_size(p["size"]), p.get("fstype") or "-"]
            if p.get("label"):
                bits.append(f'"{p["label"]}"')
            if p.get("os"):
                bits.append(p["os"])
            rows.append((f"partition {p['number']}", " ".join(bits)))
        for s in disk.get("systems", []):
            rows.append(("system", f"{s['name']} (partition {s['partition']})"))
        sections.append(("Restored disk", rows))
    if data.get("boot"):
        sections.append(("Boot", [("mode", data["boot"]["mode"]),
                                  ("plan", data["boot"]["message"])]))
    if rows := _shrink_rows(data.get("shrink")):
        sections.append(("Fitted to a smaller disk", rows))
    if rows := windows_drivers.report_rows(data.get("windows_drivers")):
        sections.append(("Windows storage drivers", rows))
    if rows := linux_report.report_rows(data.get("linux_initramfs")):
        sections.append(("Linux initramfs", rows))
    if data.get("warnings"):
        sections.append(("Warnings", [("", w) for w in data["warnings"]]))
    return report.render_text("Image restore", sections)


def write_restore_report(result: RestoreResult, paths: report.ReportPaths | None = None
                         ) -> report.ReportPaths | None:
    """The final report; with ``paths`` (the running report's), in place of it."""
    data = result.to_dict()
    try:
        return report.write_report("restore", data, render(data), when=result.started,
                                   paths=paths)
    except OSError:
        return None


def write_running_report(result: RestoreResult) -> report.ReportPaths | None:
    """The report of a restore that has begun writing (status "running"): a power cut
    leaves it, the record of which image was being written onto which disk; the final
    report replaces it (:func:`write_restore_report` with its paths)."""
    now = time.time()
    running = dataclasses.replace(
        result, status="running", finished=now, message=(
            f"running since {report.iso_time(result.started)}: restoring "
            f"{report.safe_url(result.image.location)} onto {result.target.node}; if no "
            "restore runs any more it was interrupted (a power cut, a kill): restore the "
            "image again (its first MiB is written last: the disk is not left looking "
            "valid)"))
    data = running.to_dict()
    data.update(exit_code=None, finished=None, updated=report.iso_time(now))
    try:
        return report.write_report("restore", data, render(data), when=result.started)
    except OSError:
        return None
