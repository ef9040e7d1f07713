"""The report rows every after-restore step starts with (Windows storage drivers, the Linux
initramfs): its mode and message, and the target's controller."""

from __future__ import annotations


def head_rows(data: dict) -> list[tuple[str, str]]:
    """``mode: auto: ...`` and ``target controller: NVMe (nvme)``."""
    rows = [("mode", data["mode"] + (f": {data['message']}" if data.get("message") else ""))]
    if t := data.get("target_controller"):
        rows.append(("target controller", t["name"] + (f" ({t['driver']})" if t["driver"]
                                                        else "")))
    return rows
