"""This machine: host name, addresses, power actions."""

from __future__ import annotations

import socket

from toolkit.system import systemctl


def hostname() -> str:
    return socket.gethostname()


def ip_addresses() -> list[tuple[str, str]]:
    """(interface, address/prefix) for every non-loopback IPv4 and global IPv6 address."""
    import psutil  # here: only the menu header asks, and every report imports this module

    out = []
    for nic, addrs in sorted(psutil.net_if_addrs().items()):
        if nic == "lo":
            continue
        for a in addrs:
            if a.family == socket.AF_INET:
                prefix = sum(bin(int(x)).count("1") for x in (a.netmask or "0.0.0.0").split("."))
                out.append((nic, f"{a.address}/{prefix}"))
            elif a.family == socket.AF_INET6 and not a.address.startswith("fe80"):
                out.append((nic, a.address))
    return out


def power(action: str) -> None:
    """Reboot or power off now (``action`` is "reboot" or "poweroff"); ToolError if
    systemctl fails."""
    systemctl.power(action)
