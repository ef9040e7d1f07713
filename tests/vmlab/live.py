"""Checks of the live system itself, made in whichever boot runs first under each firmware
(tests/test_boot_vm.py under BIOS, tests/test_restore_vm.py under UEFI: one boot each
carries them, as boots are expensive under software emulation)."""

from __future__ import annotations

import re

# The menu within 6 minutes of emulated boot: a boot that hangs (a boot loader waiting
# for a key, a unit waiting forever) fails here. Not a speed measurement: TCG on a loaded
# 2-core machine takes 120-250 s (a CI run failed at 180 s with the menu on screen).
BOOT_LIMIT_S = 360
INITIATORS: dict[str, str] = {}  # firmware -> the initiator name its boot generated


def check_live_system(guest, firmware: str) -> None:
    """The consoles, the root shell on tty2, the firmware mode and a fresh iSCSI initiator
    name (never the one of another boot); leaves the guest's shell open."""
    guest.open_shell()
    cmdline = guest.run("cat /proc/cmdline")
    assert "console=ttyS0" in cmdline and "console=tty0" in cmdline
    # the menu runs on tty1 (VGA) as well as on this serial line
    assert guest.run("pgrep -f -t tty1 rtk-menu").strip()
    assert guest.run("pgrep -f -t ttyS0 rtk-menu").strip()
    assert guest.run("cat /proc/sys/kernel/printk").split()[0] == "3"
    # Alt+F2: a root shell on tty2, no login asked
    guest.run("chvt 2")
    root_bash = guest.run("for i in $(seq 30); do pgrep -t tty2 -x bash >/dev/null && break; "
                          "sleep 1; done; pgrep -u root -t tty2 -x bash")
    guest.run("chvt 1")
    assert root_bash.strip().isdigit(), root_bash
    efi = guest.run("test -d /sys/firmware/efi && echo uefi || echo bios").strip()
    assert efi == firmware
    name = guest.run("cat /etc/iscsi/initiatorname.iscsi").strip()
    assert re.fullmatch(r"InitiatorName=iqn\.\d{4}-\d{2}\.[\w.-]+:\w+", name), name
    assert name not in INITIATORS.values(), "initiator name reused across boots"
    INITIATORS[firmware] = name
