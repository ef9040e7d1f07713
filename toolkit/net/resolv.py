"""DNS servers for the live system: /etc/resolv.conf, written by the toolkit.

The image has no systemd-resolved (a separate package in trixie), so nothing
turns networkd's DNS servers into /etc/resolv.conf: the toolkit writes it,
from the servers the technician gave, or after DHCP from the lease that
networkd records in /run/systemd/netif/links/IFINDEX (``DNS=`` line). If
resolv.conf is a symlink (systemd-resolved installed after all), it is left
alone: resolved gets the servers from networkd itself.
"""

from __future__ import annotations

import os
from pathlib import Path

RESOLV_CONF = "etc/resolv.conf"
LINKS_DIR = "/run/systemd/netif/links"
HEADER = "# Written by the Recovery Toolkit (rtk net)\n"


def render(servers: list[str] | tuple[str, ...], search: list[str] = ()) -> str:
    """resolv.conf text: at most 3 name servers (the resolver's limit)."""
    lines = [HEADER]
    if search:
        lines.append(f"search {' '.join(search)}\n")
    lines += [f"nameserver {s}\n" for s in list(servers)[:3]]
    return "".join(lines)


def parse_link_state(text: str) -> tuple[list[str], list[str]]:
    """(DNS servers, search domains) from a networkd link state file."""
    dns: list[str] = []
    domains: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DNS":
            dns += value.split()
        elif key == "DOMAINS":
            domains += value.split()
    return dns, domains


def write(path: Path, servers, search=()) -> bool:
    """Write resolv.conf (atomically); False when it is a symlink (resolved's)."""
    if path.is_symlink():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.rtk")
    tmp.write_text(render(servers, search))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def update_from_networkd(path: Path, iface: str, links_dir: str = LINKS_DIR) -> bool:
    """After DHCP: write the lease's DNS servers, if networkd recorded any."""
    try:
        ifindex = Path(f"/sys/class/net/{iface}/ifindex").read_text().strip()
        dns, domains = parse_link_state((Path(links_dir) / ifindex).read_text())
    except OSError:
        return False
    return bool(dns) and write(path, dns, domains)
