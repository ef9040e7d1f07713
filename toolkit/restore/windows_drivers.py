"""After a Windows image is restored: the storage drivers Windows ships start at boot, so
that it boots on the target's storage controller (else: INACCESSIBLE_BOOT_DEVICE).

Microsoft's documented fix, the one virt-v2v applies with hivex: in the offline SYSTEM
hive (``Windows/System32/config/SYSTEM``, found case-insensitively), in *every* control
set (``ControlSet001``, ``ControlSet002``...), for each driver of :data:`DRIVERS` that the
image's ``Services`` key has, ``Start`` (REG_DWORD) becomes 0 (boot start) and its
``StartOverride`` subkey is deleted (Windows 8 and later keep an unused miniport off
through it, whatever ``Start`` says). A driver the image lacks is never created. Every
value changed is recorded, old and new, per control set.

When (``--windows-drivers``, plan ``windows_drivers``): ``on``, ``off``, or ``auto`` (the
default): on unless the image already starts at boot a driver of the target's controller.
The image's boot controller is what its registry starts at boot: the drivers of
:data:`DRIVERS` whose ``Start`` is 0 with no nonzero ``StartOverride`` value in the
current control set (``Select\\Current``): Windows Setup and Plug and Play leave
boot-start only the miniports of the controllers the machine had. The target's
controller is the kernel driver of the target disk's controller (sysfs, the nearest in
the device's chain that :data:`LINUX` knows), named by the inventory's transport
otherwise. ``auto`` acts when the image starts none of the Windows drivers of that
controller, when the controller has several Windows drivers by generation (MegaRAID,
LSI/Broadcom SAS HBAs: which one cannot be told from Linux), and when it is not known
(a loop device, USB, iSCSI: the disk is going into another machine).

Nothing is written when the hive cannot be parsed (said), was not saved cleanly (its
base block's sequence numbers differ: the transaction logs hold changes Windows replays),
or the volume cannot be mounted for writing. BitLocker volumes are not looked into
(reported). The new hive is made and checked on a copy in the temporary directory, then
written into the file in place (:mod:`toolkit.restore.ntfs_file`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

from toolkit import atomic
from toolkit.restore import fit, layout, ntfs_file, step_report
from toolkit.restore.windows_registry import System, plan_changes, read_system, verify
from toolkit.system import hivex, tools

MODES = ("auto", "on", "off")
HIVE_PATH = ("Windows", "System32", "config", "SYSTEM")

# The boot-critical storage drivers (Services key names) Windows ships, from: the issue's
# list (the inbox miniports of Windows 10/11 and Server 2016-2022); Microsoft KB 922976
# ("Error message occurs after you change the SATA mode of the boot drive": Start of
# msahci / iaStorV to 0); the Windows 8 and later variant of that advice (storahci, and
# delete its StartOverride key); virt-v2v's convert/windows_virtio.ml (viostor written
# boot-start, Start 0, through hivex). viostor and vioscsi are not shipped: changed only
# when virtio-win installed them.
DRIVERS = {
    "storahci": "SATA AHCI (Microsoft, Windows 8 and later)",
    "msahci": "SATA AHCI (Microsoft, Windows Vista and 7)",
    "stornvme": "NVMe (Microsoft)",
    "iaStorAVC": "Intel Rapid Storage Technology (SATA, NVMe)",
    "iaStorV": "Intel Rapid Storage Technology (SATA AHCI/RAID)",
    "iaStorAV": "Intel Rapid Storage Technology (SATA AHCI/RAID)",
    "intelide": "Intel IDE", "pciide": "standard IDE", "atapi": "IDE/ATAPI channels",
    "megasas": "LSI MegaRAID SAS", "megasas2i": "LSI MegaRAID SAS 2",
    "megasas35i": "Broadcom MegaRAID SAS 3.5", "megasr": "LSI MegaRAID software RAID",
    "percsas2i": "Dell PERC (SAS 2)", "percsas3i": "Dell PERC (SAS 3)",
    "LSI_SAS": "LSI SAS", "LSI_SAS2i": "LSI SAS 2 HBA", "LSI_SAS3i": "LSI SAS 3 HBA",
    "LSI_SSS": "LSI SSS PCIe flash", "ItSas35i": "Broadcom SAS 3.5 HBA",
    "LSI_SCSI": "LSI Logic parallel SCSI",
    "SmartSAMD": "Microsemi Smart Storage", "HpSAMD": "HP Smart Array",
    "arcsas": "Adaptec SAS/SATA RAID", "ADP80XX": "PMC-Sierra/Adaptec SAS",
    "pvscsi": "VMware Paravirtual SCSI", "storvsc": "Hyper-V storage",
    "viostor": "virtio block (virtio-win)", "vioscsi": "virtio SCSI (virtio-win)",
}

# Linux driver of the target's controller -> (what it is, the Windows drivers that drive
# it; None: several, one per hardware generation, which one cannot be told from here)
LINUX: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "ahci": ("SATA AHCI", ("storahci", "msahci")),
    "ata_piix": ("IDE (Intel)", ("intelide", "pciide")),
    "ata_generic": ("IDE", ("pciide",)),
    "nvme": ("NVMe", ("stornvme",)),
    "virtio_blk": ("virtio block", ("viostor",)),
    "virtio_scsi": ("virtio SCSI", ("vioscsi",)),
    "hv_storvsc": ("Hyper-V storage", ("storvsc",)),
    "vmw_pvscsi": ("VMware Paravirtual SCSI", ("pvscsi",)),
    "mptsas": ("LSI SAS", ("LSI_SAS",)),
    "mptspi": ("LSI Logic parallel SCSI", ("LSI_SCSI",)),
    "smartpqi": ("Microsemi Smart Storage", ("SmartSAMD",)),
    "hpsa": ("HP Smart Array", ("HpSAMD",)),
    "pm80xx": ("PMC-Sierra SAS", ("ADP80XX",)),
    "megaraid_sas": ("MegaRAID SAS", None),
    "mpt3sas": ("LSI/Broadcom SAS HBA", None), "mpt2sas": ("LSI SAS 2 HBA", None),
    "aacraid": ("Adaptec RAID", None),
    "usb-storage": ("USB", None), "uas": ("USB", None),
}


@dataclass
class Controller:
    """The target's storage controller: the inventory's ``transport``, the kernel
    ``driver`` found in sysfs (None: none known), ``name`` for people, ``windows``: the
    Windows drivers that drive it (None: not one that can be told)."""

    transport: str
    driver: str | None
    name: str
    windows: tuple[str, ...] | None
    why: str | None = None  # why ``windows`` is None


def driver_chain(name: str, sys_root: str = "/sys") -> list[str]:
    """The kernel drivers bound along disk ``name``'s device path, nearest first
    (``sd``, then ``ahci``...: each ancestor's ``driver`` link)."""
    try:
        d = os.path.realpath(os.path.join(sys_root, "block", name, "device"))
    except OSError:
        return []
    top = os.path.realpath(os.path.join(sys_root, "devices"))
    out = []
    while d.startswith(top + os.sep):
        link = os.path.join(d, "driver")
        if os.path.islink(link):
            out.append(os.path.basename(os.readlink(link)))
        d = os.path.dirname(d)
    return out


GENERIC = {"sd", "sr", "virtio-pci", "pcieport"}  # bound on every path: they name nothing
GENERATIONS = "it has one Windows driver per hardware generation: which one cannot be told " \
    "from here"
UNKNOWN = {"usb-storage": "a USB disk boots on the controller of the machine it goes into",
           "uas": "a USB disk boots on the controller of the machine it goes into"}


def controller(transport: str, chain: list[str]) -> Controller:
    """What :data:`LINUX` says of the first driver of ``chain`` it knows; else the nearest
    driver that is not :data:`GENERIC`, or the transport alone."""
    for drv in chain:
        known = LINUX.get(drv) or (("IDE", ("pciide",)) if drv.startswith("pata_") else None)
        if known:
            why = None if known[1] else UNKNOWN.get(drv, GENERATIONS)
            return Controller(transport, drv, known[0], known[1], why)
    other = next((d for d in chain if d not in GENERIC), None)
    if other:
        return Controller(transport, other, transport, None,
                          "no Windows driver is known here for it")
    return Controller(transport, None, {"loop": "a loop device (an image file)",
                                        "iscsi": "iSCSI"}.get(transport, transport), None,
                      "the disk will boot on another controller")


def target_controller(disk, sys_root: str = "/sys") -> Controller:
    """The controller of the inventory's ``disk`` (:class:`~toolkit.disks.inventory.Disk`):
    its transport, and the drivers sysfs shows along its device path."""
    return controller(disk.transport, driver_chain(disk.name, sys_root))


def decide(mode: str, system: System, target: Controller) -> tuple[bool, str]:
    """Whether to change the drivers, and why (``mode``: auto, on, off)."""
    if mode != "auto":
        return mode == "on", f"the Windows drivers option is {mode}"
    boot = system.boot_drivers()
    theirs = f"the target's controller is {target.name}" + \
        (f" ({target.driver})" if target.driver else "")
    if target.windows is None:
        return True, f"{theirs}: {target.why or 'the disk will boot on another controller'}"
    have = [d for d in boot if d.casefold() in {w.casefold() for w in target.windows}]
    if have:
        return False, f"the image already starts {', '.join(have)} at boot, and {theirs}"
    was = f"the image starts {', '.join(boot)} at boot" if boot else \
        "the image starts none of these storage drivers at boot"
    return True, f"{was}; {theirs}, which needs {' or '.join(target.windows)}"


@dataclass
class Outcome:
    """What was done on one Windows partition (its ``record()`` goes into the report)."""

    partition: int
    status: str = "unchanged"  # "changed", "unchanged", "skipped", "failed"
    message: str = ""
    hive: str | None = None
    system: dict = field(default_factory=dict)
    changes: list[dict] = field(default_factory=list)
    warn: bool = False  # the person should know (a warning in the report)

    def record(self) -> dict:
        d = asdict(self)
        d.pop("warn")
        return d


def _change_hive(node: str, path: str, data: bytes, work: str, mode: str,
                 target: Controller, hold, out: Outcome) -> None:
    copy = os.path.join(work, "SYSTEM")
    atomic.write_atomic(copy, data)  # a copy in our own temporary directory
    try:
        system = read_system(copy, DRIVERS)
    except hivex.HiveError as e:
        out.status, out.message, out.warn = "skipped", f"the hive cannot be parsed: {e}; " \
            "nothing changed", True
        return
    seq = hivex.header(copy)
    if seq is None or seq[0] != seq[1]:
        why = "it does not begin like a registry hive" if seq is None else \
            f"it was not saved cleanly (sequence numbers {seq[0]} and {seq[1]}: its " \
            "transaction logs hold changes Windows replays at boot; shut Windows down " \
            "cleanly before taking the image)"
        out.status, out.message, out.warn = "skipped", f"not changed: {why}", True
        return
    out.system = system.summary()
    if not system.control_sets:
        out.status, out.message = "skipped", "no ControlSetNNN key: not a SYSTEM hive"
        return
    act, why = decide(mode, system, target)
    edits, out.changes, notes = plan_changes(system)
    missing = [w for w in target.windows or () if not system.has(w)]
    if act and target.windows and len(missing) == len(target.windows):
        notes.append(f"the image has no {' or '.join(target.windows)}: Windows has no driver "
                     "for the target's controller (install it before taking the image)")
        out.warn = True
    if act and notes:  # a driver left as it is, and why: the person must know
        out.warn = True
    if not act or not edits:
        out.changes = []
        pending = act and any(not d.boot for d in system.drivers)
        if pending:  # none of them could be changed
            out.status = "failed"
        out.message = "; ".join([why, *(["every driver starts at boot already"] if act and
                                        not pending else []), *notes])
        return
    new = os.path.join(work, "SYSTEM.new")
    hivex.edit(copy, new, edits)
    problems = verify(system, read_system(new, DRIVERS), edits, new)
    if problems:
        out.status, out.changes, out.warn = "failed", [], True
        out.message = f"{why}; the changed hive did not check out ({'; '.join(problems)}): " \
                      "nothing written"
        return
    with open(new, "rb") as f:
        ntfs_file.rewrite(node, path, f.read(), was_sha256=hashlib.sha256(data).hexdigest(),
                          hold=hold)
    sets = {c["control_set"] for c in out.changes}
    out.status = "changed"
    out.message = "; ".join([f"{len(out.changes)} values changed in {len(sets)} control "
                             f"sets, because {why}", *notes])


def fix_partition(part: dict, mode: str, target: Controller, hold, tmpdir=None) -> Outcome:
    """Read, decide and (when needed) change the SYSTEM hive of the Windows partition
    ``part`` (a partition of :func:`toolkit.restore.contents.inspect_disk`)."""
    out = Outcome(part["number"])
    node = part["node"]
    path = ntfs_file.find(node, HIVE_PATH)
    if path is None:
        out.status, out.message = "skipped", "no Windows/System32/config/SYSTEM on it"
        return out
    out.hive = path
    work = tempfile.mkdtemp(prefix="rtk-hive-", dir=tmpdir)
    try:
        _change_hive(node, path, ntfs_file.read_out(node, path), work, mode, target, hold, out)
    except (ntfs_file.NtfsError, hivex.HiveError, tools.ToolError, OSError, ValueError) as e:
        out.status, out.changes, out.warn = "failed", [], True
        out.message = f"{e}" if isinstance(e, ntfs_file.NtfsError) else \
            f"the storage drivers could not be changed: {e}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _bitlocker(disk: str, part: dict, hold) -> bool:
    if part.get("encrypted") == "BitLocker":
        return True
    if part.get("fstype") not in (None, "ntfs"):
        return False
    try:
        return layout.encryption(fit.read_at(disk, part["start"], 4096, hold)) == "BitLocker"
    except OSError:
        return False


def run(plan, res, hold=None) -> dict | None:
    """The restore's step: every Windows partition of ``res.contents`` fixed as
    ``plan.options.windows_drivers`` says; the report's record (None: no Windows and no
    BitLocker volume on the disk). What the person must know goes to ``res.warnings``."""
    mode = getattr(plan.options, "windows_drivers", "auto")
    parts = (res.contents or {}).get("partitions", [])
    disk = plan.target.node
    locked = [p for p in parts if _bitlocker(disk, p, hold)]
    windows = [p for p in parts if p.get("os") == "Windows" and p not in locked]
    if not windows and not locked:
        return None
    if mode == "off":
        return {"mode": mode, "message": "not looked at: the Windows drivers option is off",
                "partitions": []}
    target = target_controller(plan.target.disk, plan.options.sys_root)
    outcomes = [Outcome(p["number"], "skipped", "BitLocker-encrypted: its Windows cannot be "
                        "read here; storage drivers not changed", warn=True) for p in locked]
    outcomes += [fix_partition(p, mode, target, hold, plan.options.tmpdir) for p in windows]
    for o in outcomes:
        if o.warn:
            res.warnings.append(f"Windows storage drivers, partition {o.partition}: "
                                f"{o.message}")
    return {"mode": mode, "target_controller": asdict(target),
            "partitions": [o.record() for o in outcomes]}


def change_text(c: dict) -> str:
    """``Services\\storahci\\Start: 3 -> 0`` (a change record of the report)."""
    new = "deleted" if c["new"] is None else c["new"]
    where = c["key"] + (f"\\{c['value']}" if c["value"] is not None else "")
    return f"{where}: {c['old']} -> {new}"


def report_rows(data: dict | None) -> list[tuple[str, str]]:
    """The report's "Windows storage drivers" rows."""
    if not data:
        return []
    rows = step_report.head_rows(data)
    for p in data.get("partitions", []):
        rows.append((f"partition {p['partition']}", f"{p['status']}: {p['message']}"))
        rows += [(c["control_set"], change_text(c)) for c in p.get("changes", [])]
    return rows


def summary(data: dict | None) -> list[str]:
    """One line per partition, for the command line."""
    return [f"partition {p['partition']}: {p['status']}: {p['message']}"
            for p in (data or {}).get("partitions", [])] or \
        ([data["message"]] if data and data.get("message") else [])


