"""Which firmware mode an image boots in, checked against the machine's before writing.

How the image's mode is told (:func:`image_boot`, from a :class:`~toolkit.restore.layout.Layout`):

- UEFI: an EFI system partition (GPT type ``C12A7328-F81F-11D2-BA4B-00A0C93EC93B``, MBR
  type ``0xEF``; on an MBR disk also a FAT partition) holding a boot loader: the
  fallback ``\\EFI\\BOOT\\BOOTX64.EFI``, Windows Boot Manager or a distribution's shim or
  GRUB. When the ESP's files cannot be read before writing (a compressed or downloaded
  image: only its first MiB is known), an ESP is taken to boot; the restore checks its
  loaders afterwards (:mod:`toolkit.restore.boot`).
- BIOS: on an MBR disk, boot code in the MBR (its first 440 bytes not all zero: Windows'
  code needs an active partition, GRUB's does not); on a GPT disk, boot code in the
  protective MBR *and* a BIOS boot partition (``EF02``, where GRUB keeps its core) or a
  partition marked "legacy BIOS bootable" (syslinux's ``gptmbr.bin``). Windows never
  boots from GPT in BIOS mode: its protective MBR alone does not count.

The machine's mode is the live system's (:func:`firmware_mode`: ``SYS/firmware/efi``
exists in UEFI mode; ``sys_root`` points it at a captured sysfs in tests), unless a plan
requires one (``RestoreOptions.boot_mode``: "uefi" or "bios"; "any" by default). A
mismatch is a warning in the plan ("this image boots only in legacy BIOS mode ...:
enable CSM"), or, when the mode is required, a refusal before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from toolkit.restore.layout import FAT_MBR, Layout

MODES = ("any", "uefi", "bios")
NAMES = {"uefi": "UEFI mode", "bios": "legacy BIOS mode"}


def firmware_mode(sys_root: str = "/sys") -> str:
    """``"uefi"`` when the running system was started by UEFI firmware, else ``"bios"``."""
    return "uefi" if os.path.isdir(os.path.join(sys_root, "firmware", "efi")) else "bios"


@dataclass
class ImageBoot:
    """Whether the image boots in each mode (None: cannot be told before writing) and
    why, in words for the messages."""

    uefi: bool | None
    bios: bool | None
    uefi_why: str
    bios_why: str


def _numbers(parts: list[dict]) -> str:
    return ", ".join(str(p["number"]) for p in parts)


def _uefi(lay: Layout) -> tuple[bool | None, str]:
    esps = lay.with_role("esp")
    fats = [p for p in lay.partitions if lay.table == "dos" and p["role"] is None
            and p["type"] in FAT_MBR]  # UEFI boots a FAT partition of an MBR disk too
    for p in esps + fats:
        if p["loaders"]:  # any \\EFI\\...\\*.efi: the boot entry is chosen afterwards
            what = "an EFI system partition" if p in esps else "a FAT partition"
            return True, f"{what} with a boot loader (partition {p['number']})"
    if esps and any(p["loaders"] is None for p in esps):
        return True, (f"an EFI system partition (partition {_numbers(esps)}; its loaders are "
                      "checked after the restore)")
    if any(p["loaders"] is None for p in fats):  # not read: it may hold \\EFI\\BOOT
        return None, (f"no EFI system partition; FAT partition {_numbers(fats)} may hold "
                      "UEFI loaders (seen after the restore)")
    if esps:
        return False, (f"its EFI system partition (partition {_numbers(esps)}) holds no boot "
                       "loader (no .efi file under \\EFI)")
    return False, "no EFI system partition"


def _bios(lay: Layout) -> tuple[bool, str]:
    if lay.table == "dos":
        if not lay.boot_code:
            return False, "no boot code in its MBR"
        active = [p for p in lay.partitions if p["active"]]
        return True, "boot code in its MBR" + (
            f", partition {_numbers(active)} active" if active else "")
    bios_boot = lay.with_role("bios boot")
    legacy = [p for p in lay.partitions if p["active"]]
    if not lay.boot_code:
        return False, "no boot code in its protective MBR"
    if bios_boot:
        return True, (f"a BIOS boot partition (partition {_numbers(bios_boot)}) and boot code "
                      "in its protective MBR")
    if legacy:
        return True, (f"partition {_numbers(legacy)} marked legacy BIOS bootable and boot "
                      "code in its protective MBR")
    return False, "no BIOS boot partition"


def image_boot(lay: Layout | None) -> ImageBoot | None:
    """The modes ``lay`` boots in; None without a partition table (nothing to tell)."""
    if lay is None or lay.table not in ("gpt", "dos"):
        return None
    uefi, uefi_why = _uefi(lay)
    bios, bios_why = _bios(lay)
    return ImageBoot(uefi, bios, uefi_why, bios_why)


def _mismatch(ib: ImageBoot, mode: str) -> tuple[str, str | None, str] | None:
    """Why an image does not boot in ``mode``: (what it boots in, the advice on this
    machine, the advice for a plan); None when it does (or cannot be told)."""
    neither = (f"this image does not boot in UEFI mode ({ib.uefi_why}) nor in legacy BIOS "
               f"mode ({ib.bios_why}): a data disk, or a system whose boot loader is "
               "elsewhere")
    if mode == "uefi" and ib.uefi is False:
        if not ib.bios:
            return neither, None, ""
        return (f"this image boots only in legacy BIOS mode ({ib.bios_why}; {ib.uefi_why})",
                "enable CSM (legacy boot) in the firmware setup",
                " (restore an image made for UEFI, or plan boot_mode: bios and enable CSM)")
    if mode == "bios" and ib.bios is False:
        if ib.uefi is False:
            return neither, None, ""
        if ib.uefi is None:
            return (f"this image does not boot in legacy BIOS mode ({ib.bios_why}; "
                    f"{ib.uefi_why})", "boot it in UEFI mode if it can", "")
        return (f"this image boots only in UEFI mode ({ib.uefi_why}; {ib.bios_why})",
                "switch the firmware setup to UEFI boot (not legacy or CSM only)",
                " (restore an image made for BIOS, or plan boot_mode: uefi)")
    return None


def check(lay: Layout | None, required: str = "any", sys_root: str = "/sys", *,
          known: bool = True) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of restoring an image laid out as ``lay`` here.
    ``required``: the mode a plan requires ("uefi", "bios", or "any": this machine's).
    ``known=False``: the image's first MiB is not known yet (a container that is
    downloaded or unpacked first: checked again then, still before writing)."""
    if required not in MODES:
        return [f"boot mode {required!r}: expected one of {', '.join(MODES)}"], []
    firmware = firmware_mode(sys_root)
    warnings = []
    if required == "uefi" and firmware == "bios":
        warnings.append("the plan requires UEFI mode, but this system was started in legacy "
                        "BIOS mode: no UEFI boot entry can be made from here (the firmware "
                        "boots \\EFI\\BOOT\\BOOTX64.EFI from the disk if the image has it)")
    ib = image_boot(lay) if known else None
    if not known or (ib is None and required == "any"):
        return [], warnings
    if ib is None:
        return [f"the plan requires {NAMES[required]} (boot_mode: {required}), but the image "
                "has no partition table: which mode it boots in cannot be told; nothing was "
                "written"], warnings
    mode = firmware if required == "any" else required
    found = _mismatch(ib, mode)
    if found is None:
        return [], warnings
    what, advice, plan_advice = found
    if required != "any":
        return [f"the plan requires {NAMES[required]} (boot_mode: {required}), but {what}; "
                f"nothing was written{plan_advice}"], warnings
    where = "/sys/firmware/efi exists" if mode == "uefi" else "no /sys/firmware/efi"
    tail = f": {advice}, or the restored disk will not boot" if advice else \
        ": the restored disk will not boot by itself"
    return [], [*warnings, f"{what}, and this machine runs in {NAMES[mode]} ({where}){tail}"]
