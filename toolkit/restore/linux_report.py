"""The "Linux initramfs" part of the restore's report and command line, from the record
of :func:`toolkit.restore.linux_initramfs.run`."""

from __future__ import annotations

from toolkit.restore import step_report


def where(r: dict) -> str:
    """``partition 2``, ``logical volume vg0/root``."""
    return f"logical volume {r['volume']}" if r.get("volume") else \
        f"partition {r['partition']}" if r.get("partition") else "LVM"


def report_rows(data: dict | None) -> list[tuple[str, str]]:
    """The report's "Linux initramfs" rows."""
    if not data:
        return []
    rows = step_report.head_rows(data)
    for r in data.get("roots", []):
        rows.append((where(r), f"{r['status']}: {r['message']}"))
        rows += [(f"kernel {k['version']}", k["message"]) for k in r.get("kernels", [])]
        rows += [("changed", c) for c in r.get("changes", [])]
        rows += [(f"fstab line {c['line']}", ("ok: " if c["ok"] else "NOT FOUND: ")
                  + c["message"].split(": ", 1)[-1]) for c in r.get("fstab", [])]
        rows += [("note", n) for n in r.get("notes", [])]
    return rows


def summary(data: dict | None) -> list[str]:
    """One line per root (and per fstab problem), for the command line."""
    if data and data.get("message"):
        return [data["message"]]
    lines = []
    for r in (data or {}).get("roots", []):
        lines.append(f"{where(r)}: {r['status']}: {r['message']}")
        lines += [f"{where(r)}: changed {c}" for c in r.get("changes", [])]
        lines += [c["message"] for c in r.get("fstab", []) if not c["ok"]]
    return lines
