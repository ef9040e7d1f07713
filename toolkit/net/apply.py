"""Apply :class:`NetSettings` at once: networkd files in /run, reload, wait for the result.

The toolkit's settings of this boot are kept in /run/rtk/net.json (every
interface it configured, and each NIC's MTU before it was first touched);
every change re-renders all ``10-rtk-*`` files from it, so a NIC and its
VLANs always agree. Then networkd reloads (``networkctl reload`` and
``reconfigure``, or SIGHUP where there is no D-Bus, as in the image), and a
poll of the interface (``ip -j addr``, sysfs) until the address and MTU are
there, or a timeout with the reason. A NIC that ifupdown also manages (live-boot
writes the boot NIC into /etc/network/interfaces) is taken from it first.
/run is a tmpfs: all of it is gone at reboot, and the image's DHCP default is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolkit.net import networkd, nics, resolv
from toolkit.net.errors import NetError, NetRefused
from toolkit.net.settings import NetSettings, validate
from toolkit.system import tools

NETWORK_DIR = "run/systemd/network"
STATE_FILE = "run/rtk/net.json"
TIMEOUT_S = 30.0


@dataclass
class Observed:
    """What an interface has now (from :func:`observe`)."""

    exists: bool = False
    addresses: list[str] = field(default_factory=list)
    dhcp_addresses: list[str] = field(default_factory=list)
    mtu: int | None = None
    carrier: bool | None = None


@dataclass
class ApplyResult:
    """The outcome of :func:`apply_settings`: the interface as it now is."""

    iface: str
    settings: NetSettings
    addresses: list[str]
    mtu: int | None
    files: list[str]
    seconds: float
    dns_written: bool = False

    def to_dict(self) -> dict:
        return {"iface": self.iface, "settings": self.settings.to_dict(),
                "addresses": self.addresses, "mtu": self.mtu, "files": self.files,
                "seconds": round(self.seconds, 1), "dns_written": self.dns_written}


def observe(iface: str) -> Observed:
    """The interface's addresses, MTU and carrier, read now."""
    ip = nics.ip_json().get(iface)
    if ip is None:
        return Observed()
    nic = nics.nic_from(iface, ip, nics.read_sysfs(iface))
    return Observed(True, nic.addresses, nic.dhcp_addresses, nic.mtu, nic.carrier)


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """:func:`toolkit.system.tools.run` without check; a tool that is missing or does not
    answer is status 127 with the ToolError's message as stderr ("networkctl is not
    installed (systemd)"), so the fallbacks below get their turn."""
    try:
        return tools.run(cmd, check=False, timeout=timeout)
    except tools.ToolError as e:
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def reload_networkd(ifaces: list[str]) -> str:
    """Make networkd re-read its files and reconfigure ``ifaces``; returns how.

    ``networkctl reload`` + ``reconfigure`` need D-Bus, which the image does not
    have; then SIGHUP (systemd 257: reload, and reconfigure every link whose
    file changed) through systemctl, which needs no bus.
    """
    p = _run(["networkctl", "reload"])
    if p.returncode == 0:
        for iface in ifaces:
            _run(["networkctl", "reconfigure", iface])
        return "networkctl"
    p2 = _run(["systemctl", "kill", "--signal=SIGHUP", "--kill-whom=main",
               "systemd-networkd.service"])
    if p2.returncode == 0:
        return "sighup"
    msg = (p2.stderr or p.stderr or p.stdout).strip() or f"exit {p2.returncode}"
    raise NetError(f"cannot reload systemd-networkd: {msg} (is it running? "
                   "systemctl status systemd-networkd)")


def release_from_ifupdown(nic: str, run_dir: str = "/run/network") -> bool:
    """Take ``nic`` away from ifupdown (its dhcpcd would fight networkd); True if it had it.

    live-boot writes ``allow-hotplug NIC / iface NIC inet dhcp`` into
    /etc/network/interfaces for the boot NIC, so ifupdown runs dhcpcd on it
    next to networkd. ``ifdown`` stops that dhcpcd (releasing its lease).
    """
    try:
        up = Path(run_dir, f"ifstate.{nic}").read_text().strip()
    except OSError:
        return False
    if not up:
        return False
    p = _run(["ifdown", "--force", nic], timeout=60)
    if p.returncode:
        raise NetError(f"ifdown {nic} failed (ifupdown manages {nic} and its DHCP client "
                       f"would fight networkd): {(p.stderr or p.stdout).strip()}")
    return True


def load_state(path: Path) -> tuple[list[NetSettings], dict[str, int]]:
    """The configured interfaces and original MTUs saved by earlier changes of this boot."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return [], {}
    return [NetSettings.from_dict(c) for c in d.get("configs", [])], d.get("orig_mtu", {})


def _save_state(path: Path, configs: list[NetSettings], orig_mtu: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"configs": [c.to_dict() for c in configs],
                               "orig_mtu": orig_mtu}, indent=1))
    os.replace(tmp, path)


def write_files(netdir: Path, files: dict[str, str]) -> list[str]:
    """Write ``files`` into ``netdir`` (atomically each), remove stale ``10-rtk-*`` ones."""
    netdir.mkdir(parents=True, exist_ok=True)
    for old in netdir.glob(f"{networkd.PREFIX}*"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        tmp = netdir / f".{name}.tmp"
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, netdir / name)
    return sorted(str(netdir / n) for n in files)


def _reached(s: NetSettings, o: Observed, mtu: int | None) -> bool:
    if not o.exists or (mtu and o.mtu != mtu):
        return False
    if s.mode == "static":
        others = [a for a in o.dhcp_addresses if ":" not in a]
        return s.address in o.addresses and not others
    return any(":" not in a for a in o.dhcp_addresses)


def _timeout_reason(s: NetSettings, o: Observed, mtu: int | None, waited: float) -> str:
    iface = s.iface
    if not o.exists:
        return f"{iface} did not appear within {waited:.0f} s (see journalctl -u systemd-networkd)"
    if mtu and o.mtu != mtu:
        return (f"{iface} has MTU {o.mtu}, not {mtu}, after {waited:.0f} s: the NIC or "
                "its driver may not support it (see journalctl -u systemd-networkd)")
    if o.carrier is False:
        return f"{iface} has no link (no carrier): check the cable and the switch port"
    if s.mode == "dhcp":
        return (f"no DHCP lease on {iface} after {waited:.0f} s: is there a DHCP server "
                "on this network (and VLAN)? Use static to set an address")
    return (f"{iface} does not show {s.address} after {waited:.0f} s (it has "
            f"{', '.join(o.addresses) or 'no address'})")


def apply_settings(s: NetSettings, *, root: str = "/", timeout: float = TIMEOUT_S,
                   known_nics: list[str] | None = None,
                   reload: Callable[[list[str]], str] = reload_networkd,
                   release: Callable[[str], bool] = release_from_ifupdown,
                   look: Callable[[str], Observed] = observe,
                   sleep: Callable[[float], None] = time.sleep) -> ApplyResult:
    """Validate ``s``, write the networkd files, reload, and wait until it took effect.

    Raises NetRefused (nothing changed) for invalid settings, NetError when
    networkd failed or the result did not show within ``timeout`` seconds.
    """
    base = Path(root)
    known = nics.nic_names() if known_nics is None else known_nics
    state_path = base / STATE_FILE
    configs, orig_mtu = load_state(state_path)
    made = {c.iface: c for c in configs if c.vlan is not None}
    if s.vlan is None and s.nic in made:  # new settings for a VLAN interface rtk made
        s = replace(s, nic=made[s.nic].nic, vlan=made[s.nic].vlan)
    s = validate(s, known)
    if s.vlan is not None and (s.nic in made or _is_vlan_name(s.nic, known)):
        raise NetRefused(f"{s.nic} is itself a VLAN interface: put VLAN {s.vlan} on "
                         "its parent NIC")
    if s.nic not in orig_mtu:
        now = look(s.nic).mtu
        if now:
            orig_mtu[s.nic] = now
    release(s.nic)
    configs = [c for c in configs if c.iface != s.iface] + [s]
    files = networkd.render(configs, orig_mtu)
    written = write_files(base / NETWORK_DIR, files)
    _save_state(state_path, configs, orig_mtu)
    dns_written = False
    if s.dns:
        resolv.write(base / resolv.RESOLV_CONF, s.dns)
        dns_written = True
    start = time.monotonic()
    reload([s.nic] + ([s.iface] if s.vlan is not None and look(s.iface).exists else []))
    want_mtu = s.mtu or (orig_mtu.get(s.nic) if s.vlan is None else None)
    while True:
        o = look(s.iface)
        waited = time.monotonic() - start
        if _reached(s, o, want_mtu):
            break
        if waited >= timeout:
            raise NetError(_timeout_reason(s, o, want_mtu, waited))
        sleep(0.5)
    if s.mode == "dhcp" and not s.dns:
        dns_written = resolv.update_from_networkd(base / resolv.RESOLV_CONF, s.iface)
    return ApplyResult(s.iface, s, o.addresses, o.mtu, written, waited, dns_written)


def _is_vlan_name(name: str, known: list[str]) -> bool:
    base, dot, vid = name.rpartition(".")
    return bool(dot) and vid.isdigit() and base in known


def remove_vlan(iface: str, *, root: str = "/",
                reload: Callable[[list[str]], str] = reload_networkd,
                delete: Callable[[str], None] | None = None) -> list[str]:
    """Delete a VLAN interface the toolkit created; returns the files now in place."""
    base = Path(root)
    configs, orig_mtu = load_state(base / STATE_FILE)
    gone = [c for c in configs if c.iface == iface and c.vlan is not None]
    if not gone:
        made = ", ".join(c.iface for c in configs if c.vlan is not None) or "none"
        raise NetRefused(f"{iface} is not a VLAN interface made by rtk net (those are: {made})")
    configs = [c for c in configs if c.iface != iface]
    parent = gone[0].nic
    if not any(c.nic == parent for c in configs):  # keep DHCP and the original MTU
        configs.append(NetSettings(parent, "dhcp"))
    written = write_files(base / NETWORK_DIR, networkd.render(configs, orig_mtu))
    _save_state(base / STATE_FILE, configs, orig_mtu)
    (delete or _delete_link)(iface)
    reload([parent])
    return written


def _delete_link(iface: str) -> None:
    """Delete a virtual link (networkd leaves netdevs in place when their file goes)."""
    p = _run(["ip", "link", "delete", iface])
    if p.returncode and Path(f"/sys/class/net/{iface}").exists():
        raise NetError(f"ip link delete {iface} failed: {(p.stderr or p.stdout).strip()}")
