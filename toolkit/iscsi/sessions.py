"""Sessions and their LUNs from sysfs: session -> host -> target -> LUN -> /dev/sdX.

``/sys/class/iscsi_session/sessionN/device`` is the session's device
directory, ``.../hostH/sessionN``; its LUNs are
``targetH:0:0/H:0:0:L/block/sdX``. The portal comes from the session's
connection (``/sys/class/iscsi_connection/connectionN:0``). Waits are on
``udevadm settle`` (:mod:`toolkit.system.udev`), never on sleeps.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from toolkit.iscsi.portal import format_portal
from toolkit.system import udev

_HCTL = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")


@dataclass
class Lun:
    lun: int
    hctl: str  # "2:0:0:1"
    device: str | None = None  # /dev/sdX (None: no block device, e.g. tgt's controller LUN 0)
    by_path: list[str] = field(default_factory=list)
    vendor: str | None = None
    model: str | None = None
    wwid: str | None = None
    state: str | None = None  # scsi device state: running, offline...
    role: str | None = None  # SOURCE, TARGET (from toolkit.disks.roles)

    def key(self, iqn: str) -> str:
        return f"{iqn}:{self.lun}"


@dataclass
class Session:
    sid: int
    name: str  # session1
    target: str  # IQN
    address: str | None
    port: int | None
    state: str | None  # LOGGED_IN, FAILED, FREE
    host: int | None  # SCSI host number
    luns: list[Lun] = field(default_factory=list)

    @property
    def portal(self) -> str:
        return format_portal(self.address, self.port)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def by_path_links(dev_root: str = "/dev") -> dict[str, list[str]]:
    """``{"/dev/sdb": ["/dev/disk/by-path/ip-...-lun-1"], ...}`` (whole disks and partitions)."""
    out: dict[str, list[str]] = {}
    base = os.path.join(dev_root, "disk/by-path")
    for link in sorted(glob.glob(os.path.join(base, "*"))):
        target = os.path.normpath(os.path.join(base, os.readlink(link))) \
            if os.path.islink(link) else link
        out.setdefault(target, []).append(os.path.join("/dev/disk/by-path",
                                                       os.path.basename(link)))
    return out


def session_luns(session_dev: str, links: dict[str, list[str]] | None = None,
                 dev_root: str = "/dev") -> list[Lun]:
    """The LUNs under a session's device directory, by LUN number."""
    links = by_path_links(dev_root) if links is None else links
    luns = []
    for sdev in glob.glob(os.path.join(session_dev, "target*", "*:*:*:*")):
        m = _HCTL.match(os.path.basename(sdev))
        if not m:
            continue
        blocks = sorted(os.listdir(os.path.join(sdev, "block"))) \
            if os.path.isdir(os.path.join(sdev, "block")) else []
        device = f"/dev/{blocks[0]}" if blocks else None
        luns.append(Lun(
            lun=int(m.group(4)), hctl=os.path.basename(sdev), device=device,
            by_path=links.get(os.path.join(dev_root, blocks[0]), []) if blocks else [],
            vendor=_read(os.path.join(sdev, "vendor")), model=_read(os.path.join(sdev, "model")),
            wwid=_read(os.path.join(sdev, "wwid")), state=_read(os.path.join(sdev, "state"))))
    return sorted(luns, key=lambda x: x.lun)


def list_sessions(sys_root: str = "/sys", dev_root: str = "/dev") -> list[Session]:
    """Every iSCSI session with its LUNs and block devices, from sysfs."""
    links = by_path_links(dev_root)
    out = []
    for sdir in sorted(glob.glob(os.path.join(sys_root, "class/iscsi_session/session*")),
                       key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0)):
        name = os.path.basename(sdir)
        sid = int(name.removeprefix("session"))
        conn = os.path.join(sys_root, "class/iscsi_connection", f"connection{sid}:0")
        dev = os.path.realpath(os.path.join(sdir, "device"))
        host = re.search(r"/host(\d+)/", dev + "/")
        port = _read(os.path.join(conn, "persistent_port")) or _read(os.path.join(conn, "port"))
        out.append(Session(
            sid=sid, name=name, target=_read(os.path.join(sdir, "targetname")) or "?",
            address=_read(os.path.join(conn, "persistent_address"))
            or _read(os.path.join(conn, "address")),
            port=int(port) if port and port.isdigit() else None,
            state=_read(os.path.join(sdir, "state")),
            host=int(host.group(1)) if host else None,
            luns=session_luns(dev, links, dev_root)))
    return out


def settle(timeout: int = 60) -> None:
    """Wait for udev to finish creating (or removing) device nodes and links (no udev: a
    container, the build host: nothing to wait for, sysfs is still right)."""
    udev.settle(timeout)


def wait_devices(devices: list[str], timeout: int = 30) -> None:
    """Wait until udev has processed each device (its by-path and by-id links exist):
    ``udevadm wait --settle`` (systemd 251+), else ``udevadm settle``; without udevadm,
    until the device nodes exist (no links will come)."""
    udev.wait_devices(devices, timeout)


def partitions_of(device: str, sys_root: str = "/sys") -> list[str]:
    """/dev paths of the partitions of a whole disk (from sysfs)."""
    name = os.path.basename(device)
    base = os.path.join(sys_root, "class/block", name)
    return sorted(f"/dev/{p}" for p in os.listdir(base)
                  if p.startswith(name) and os.path.exists(os.path.join(base, p, "partition"))) \
        if os.path.isdir(base) else []
