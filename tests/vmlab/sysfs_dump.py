"""The sysfs of a guest's disks, as it is: dumped in the guest, replayed on the host.

:func:`dump` (run in the guest: ``python3 sysfs_dump.py``) prints a JSON manifest of the
parts of ``/sys`` that say what a block device is and how its transport is: the iSCSI
sessions and connections (``/sys/class/iscsi_session``, ``iscsi_connection``), the SCSI
hosts that carry them, the block devices (``/sys/block``, ``/sys/class/block``,
``/sys/dev/block``) and the devices behind them (SCSI device state, wwid, vendor,
model, VPD pages; a virtio disk's), with every symlink as the kernel made it.

:func:`replay` writes such a manifest under a directory (a test's ``tmp_path``): the
same layout, relative links included, so that code reading ``SYS_ROOT/block/sda/device/
state`` reads what the guest's kernel said. The captures are in
``tests/fixtures/sysfs-iscsi/`` (made by ``tests/vmlab/capture_sysfs.py``).
"""

from __future__ import annotations

import json
import os
import sys

SKIP_DIRS = {"power", "subsystem", "driver", "trace", "mq", "queue", "integrity", "bdi",
             "slaves", "firmware_node", "scsi_generic", "bsg", "scsi_disk", "scsi_device",
             "iscsi_host", "scsi_host", "generic", "power_supply", "virtio-ports", "net",
             "msi_irqs", "wakeup", "cache_type"}
SKIP_FILES = {"password", "password_in",  # CHAP secrets: never in a capture
              "uevent", "rescan", "delete", "remove", "modalias", "inquiry", "events",
              "events_async", "events_poll_msecs", "stat", "inflight", "badblocks",
              "alignment_offset", "discard_alignment", "ext_range", "range", "capability",
              "hidden", "resource", "config", "vpd_pg0", "vpd_pg89", "vpd_pgb0", "vpd_pgb1",
              "vpd_pgb2", "blacklist", "evt_media_change", "evt_inquiry_change_reported",
              "evt_capacity_change_reported", "evt_soft_threshold_reached",
              "evt_mode_parameter_change_reported", "evt_lun_change_reported"}
MAX_FILE = 4096


def _read(path: str) -> tuple[str, str] | None:
    """("text", content) or ("hex", bytes as hex) or None (unreadable, write-only)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE)
    except OSError:
        return None
    try:
        text = data.decode("ascii")
        if all(c.isprintable() or c in "\n\t" for c in text):
            return "text", text
    except UnicodeDecodeError:
        pass
    return "hex", data.hex()


def _walk(top: str, out: dict, depth: int) -> None:
    real = os.path.realpath(top)
    if real in out["seen"] or depth < 0:
        return
    out["seen"].add(real)
    out["dirs"].append(real)
    try:
        names = sorted(os.listdir(real))
    except OSError:
        return
    for name in names:
        p = os.path.join(real, name)
        if os.path.islink(p):
            out["links"][p] = os.readlink(p)
        elif os.path.isdir(p):
            if name not in SKIP_DIRS:
                _walk(p, out, depth - 1)
        elif name not in SKIP_FILES:
            got = _read(p)
            if got:
                out["files" if got[0] == "text" else "binary"][p] = got[1]


def dump(sys_root: str = "/sys") -> dict:
    out: dict = {"seen": set(), "dirs": [], "links": {}, "files": {}, "binary": {}}
    for cls in ("class/iscsi_session", "class/iscsi_connection", "block", "class/block"):
        base = os.path.join(sys_root, cls)
        for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if cls.endswith("block") and not name.startswith(("sd", "vd")):
                continue
            link = os.path.join(base, name)
            out["links"][link] = os.readlink(link)
            _walk(link, out, 6)
            if cls.endswith("block") and os.path.isdir(os.path.join(link, "device")):
                _walk(os.path.join(link, "device"), out, 0)  # its files (a SCSI LUN's state)
    base = os.path.join(sys_root, "dev/block")
    for name in sorted(os.listdir(base)):
        link = os.path.join(base, name)
        if os.path.realpath(link) in out["seen"]:
            out["links"][link] = os.readlink(link)
    # the SCSI hosts of the sessions: their session and target directories
    for sess in list(out["links"]):
        if "/class/iscsi_session/" in sess:
            dev = os.path.realpath(os.path.join(sess, "device"))
            _walk(dev, out, 8)
    out.pop("seen")
    return out


def replay(manifest: dict, root: str, sys_root: str = "/sys") -> str:
    """Write ``manifest`` under ``root`` (``/sys/x`` becomes ``root/x``); returns ``root``."""
    def here(p: str) -> str:
        rel = os.path.relpath(p, sys_root)
        return os.path.join(root, rel)
    for d in manifest["dirs"]:
        os.makedirs(here(d), exist_ok=True)
    for p, text in manifest["files"].items():
        os.makedirs(os.path.dirname(here(p)), exist_ok=True)
        with open(here(p), "w") as f:
            f.write(text)
    for p, data in manifest["binary"].items():
        os.makedirs(os.path.dirname(here(p)), exist_ok=True)
        with open(here(p), "wb") as f:
            f.write(bytes.fromhex(data))
    for p, target in manifest["links"].items():
        os.makedirs(os.path.dirname(here(p)), exist_ok=True)
        if not os.path.lexists(here(p)):
            os.symlink(target, here(p))
    return root


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    json.dump(dump(sys.argv[1] if len(sys.argv) > 1 else "/sys"), sys.stdout, indent=0,
              sort_keys=True)
    sys.stdout.write("\n")
