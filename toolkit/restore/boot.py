"""Making the restored disk boot.

UEFI (``/sys/firmware/efi`` exists: :func:`toolkit.restore.bootmode.firmware_mode`): the
loader is chosen from the files in the image's ESP (read with mtools,
:func:`toolkit.restore.contents.esp_loaders`): Windows Boot Manager
(``\\EFI\\Microsoft\\Boot\\bootmgfw.efi``) for Windows, else a distribution's
``shimx64.efi`` or ``grubx64.efi`` (shim first, for Secure Boot), and an entry is created
with ``efibootmgr --create``. With only the removable-media fallback
``\\EFI\\BOOT\\BOOTX64.EFI``, no entry is needed: the firmware boots it from the disk.
BIOS: the image's own boot code (its MBR and boot sectors, restored as they were) is
used; nothing to do. Whether the image boots in the machine's mode at all is checked
before writing (:mod:`toolkit.restore.bootmode`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.restore.bootmode import firmware_mode, image_boot
from toolkit.restore.layout import Layout
from toolkit.system import tools

FALLBACK = "\\EFI\\BOOT\\BOOTX64.EFI"
WINDOWS = "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"


@dataclass
class BootPlan:
    mode: str  # "uefi" or "bios"
    action: str  # "create entry", "fallback", "none"
    message: str
    loader: str | None = None
    label: str | None = None
    esp: int | None = None  # partition number
    command: list[str] | None = None
    done: bool = False
    partuuid: str | None = None  # the ESP's partition GUID (what the entry's path names)
    replaced: list[str] | None = None  # the entries for the same loader removed first


def choose_loader(loaders: list[str]) -> tuple[str, str] | None:
    """``(loader, label)`` from the ESP's ``.efi`` files, or None for the fallback only."""
    by_lower = {p.lower(): p for p in loaders}
    if WINDOWS.lower() in by_lower:
        return by_lower[WINDOWS.lower()], "Windows Boot Manager"
    for name in ("shimx64.efi", "grubx64.efi"):
        for low, path in sorted(by_lower.items()):
            parts = low.split("\\")
            if len(parts) == 4 and parts[1] == "efi" and parts[2] != "boot" and \
                    parts[3] == name:
                return path, path.split("\\")[2]
    return None


def _bios_line(lay: Layout | None) -> str | None:
    """The boot line in BIOS mode of an image laid out as ``lay`` (its first MiB) that
    does not boot so, or has no partition table; None: its own boot code is used."""
    if lay is None:
        return None
    if lay.table is None and not lay.boot_code:
        return "BIOS, but the image has no partition table and no boot code in its first " \
            "sector: it will not boot on this machine in BIOS mode"
    if lay.table is None:
        return "BIOS boot: the image has no partition table; its first sector (restored as " \
            "it was) is what the firmware starts"
    image = image_boot(lay)
    if image is not None and image.bios is False:
        return f"BIOS, but the image does not boot in legacy BIOS mode ({image.bios_why}): " \
            "it will not boot on this machine in BIOS mode"
    return None


def plan_boot(disk: str, inspected: dict, mode: str | None = None,
              layout: Layout | None = None) -> BootPlan:
    """What to do for the restored disk ``disk`` (``inspected``: contents.inspect_disk);
    ``mode``: "uefi" or "bios" (default: the running system's, :func:`firmware_mode`);
    ``layout``: the image's, from its first MiB (what the plan said of its boot modes)."""
    mode = mode or firmware_mode()
    if mode == "bios" and (line := _bios_line(layout)):
        return BootPlan("bios", "none", line)
    if mode == "bios":
        return BootPlan("bios", "none", "BIOS boot: the image's own boot code (MBR and boot "
                        "sectors, restored as they were) is used")
    esp = next((p for p in inspected["partitions"] if p.get("efi_loaders") is not None), None)
    if esp is None:
        return BootPlan("uefi", "none", "UEFI, but the image has no EFI system partition: it "
                        "will not boot on this machine in UEFI mode")
    loaders = esp["efi_loaders"]
    choice = choose_loader(loaders)
    if choice is None:
        if any(p.lower() == FALLBACK.lower() for p in loaders):
            return BootPlan("uefi", "fallback", f"UEFI: the firmware boots the fallback "
                            f"loader {FALLBACK} from the ESP; no boot entry needed",
                            loader=FALLBACK, esp=esp["number"])
        return BootPlan("uefi", "none", "UEFI, but the ESP holds no boot loader",
                        esp=esp["number"])
    loader, label = choice
    cmd = ["efibootmgr", "--create", "--disk", disk, "--part", str(esp["number"]),
           "--label", label, "--loader", loader]
    return BootPlan("uefi", "create entry", f"UEFI: boot entry \"{label}\" for {loader} on "
                    f"partition {esp['number']}", loader=loader, label=label,
                    esp=esp["number"], command=cmd, partuuid=esp.get("uuid"))


def same_entries(listing: str, partuuid: str | None, loader: str) -> list[str]:
    """The boot numbers (``0003``) of ``efibootmgr -v``'s entries that boot ``loader``
    from the partition ``partuuid``: what an earlier restore of the same image made (or
    Windows itself), which the new entry replaces rather than sits beside. Matched on
    the partition GUID and the loader's path, case-insensitively (efibootmgr 17 prints
    ``HD(1,GPT,GUID,...)/File(\\EFI\\...)``, 18 the path alone)."""
    if not partuuid:
        return []
    path = loader.casefold().replace("/", "\\")
    found = []
    for line in listing.splitlines():
        m = re.match(r"Boot([0-9A-Fa-f]{4})\*? ", line)
        low = line.casefold().replace("/", "\\")
        if m and f",gpt,{partuuid.casefold()}," in low and path in low:
            found.append(m.group(1))
    return found


def apply_boot(plan: BootPlan) -> BootPlan:
    """Run the plan's efibootmgr command (only in UEFI mode), after removing the entries
    for the same loader on the same partition; errors land in the message."""
    if not plan.command:
        return plan
    try:
        listing = tools.run(["efibootmgr", "-v"], timeout=60).stdout
        plan.replaced = same_entries(listing, plan.partuuid, plan.loader or "")
        for num in plan.replaced:
            tools.run(["efibootmgr", "--bootnum", num, "--delete-bootnum"], timeout=60)
        tools.run(plan.command, timeout=60)
    except tools.ToolError as e:  # "efibootmgr is not installed (efibootmgr)", "... (exit 5)"
        plan.message += f"; {e}"
    else:
        plan.done = True
        plan.message += " created" + (
            f", replacing Boot{', Boot'.join(plan.replaced)} (the same loader on a "
            "partition of the same GUID: an earlier restore of this image, which the "
            "firmware cannot tell from this one)" if plan.replaced else "")
    return plan
