"""Apply :class:`NetSettings` at once: networkd files in /run, reload, wait for the result.

The toolkit's settings of this boot are kept in /run/rtk/net.json (every
interface it configured, and each NIC's MTU before it was first touched);
every change re-renders all ``10-rtk-*`` files from it, so a NIC and its
VLANs always agree. Then networkd reloads (``networkctl reload`` and
``reconfigure``, or SIGHUP where there is no D-Bus, as in the image), and a
poll of the interface (``ip -j addr``, sysfs) until the address and MTU are
there, or a timeout with the reason; a failed apply puts the files back as they were.
A NIC that ifupdown also manages (live-boot writes the boot NIC into
/etc/network/interfaces) is taken from it first.
/run is a tmpfs: all of it is gone at reboot, and the image's DHCP default is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolkit.atomic import write_atomic
from toolkit.net import networkd, nics, resolv
from toolkit.net.errors import NetError, NetRefused
from toolkit.net.settings import NetSettings, validate
from toolkit.system import systemctl, tools

NETWORK_DIR = "run/systemd/network"
STATE_FILE = "run/rtk/net.json"
TIMEOUT_S = 30.0
NETWORKD = "systemd-networkd.service"

log = logging.getLogger("toolkit.net")


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


def reload_networkd(ifaces: list[str]) -> str:
    """Make networkd re-read its files and reconfigure ``ifaces``; returns how.

    ``networkctl reload`` + ``reconfigure`` need D-Bus, which the image does not
    have; then SIGHUP (systemd 257: reload, and reconfigure every link whose
    file changed) through systemctl, which needs no bus.
    """
    try:
        tools.run(["networkctl", "reload"], timeout=30)
    except tools.ToolError:  # no D-Bus (the image), or no networkctl: logged
        pass
    else:
        for iface in ifaces:  # a failure is logged; the wait says what did not happen
            with contextlib.suppress(tools.ToolError):
                tools.run(["networkctl", "reconfigure", iface], timeout=30)
        return "networkctl"
    try:
        systemctl.signal(NETWORKD, "SIGHUP")
    except tools.ToolNotInstalled as e:
        raise NetError(f"cannot reload systemd-networkd: {e}") from e
    except tools.ToolError as e:
        raise NetError(f"cannot reload systemd-networkd: {e} (is it running? "
                       "systemctl status systemd-networkd)") from e
    return "sighup"


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
    try:
        tools.run(["ifdown", "--force", nic], timeout=60)
    except tools.ToolError as e:
        raise NetError(f"ifdown {nic} failed (ifupdown manages {nic} and its DHCP client "
                       f"would fight networkd): {e.last_line or e}") from e
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
    write_atomic(str(path), json.dumps({"configs": [c.to_dict() for c in configs],
                                        "orig_mtu": orig_mtu}, indent=1))


def write_files(netdir: Path, files: dict[str, str]) -> list[str]:
    """Write ``files`` into ``netdir`` (atomically each), remove stale ``10-rtk-*`` ones."""
    netdir.mkdir(parents=True, exist_ok=True)
    for old in netdir.glob(f"{networkd.PREFIX}*"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        write_atomic(str(netdir / name), text)
    return sorted(str(netdir / n) for n in files)


class _Undo:
    """What an apply is about to change, to put back when it fails: the ``10-rtk-*``
    files of ``netdir`` and each of ``files`` as they are now. :meth:`restore` removes
    what was not there (files, and the directories made for them) and gives the others
    their old text back."""

    def __init__(self, base: Path, netdir: Path, files: list[Path]):
        self.netdir = netdir
        self.old: dict[Path, bytes | None] = {}
        if netdir.is_dir():
            self.old = {f: f.read_bytes() for f in netdir.glob(f"{networkd.PREFIX}*")}
        for f in files:
            if not f.is_symlink():  # resolved's resolv.conf: never written
                self.old[f] = f.read_bytes() if f.exists() else None
        self.dirs = []  # missing now, to remove again
        for d in [netdir, *(f.parent for f in files)]:
            while d != base and not d.exists() and d not in self.dirs:
                self.dirs.append(d)
                d = d.parent

    def restore(self) -> None:
        try:
            if self.netdir.is_dir():
                for f in self.netdir.glob(f"{networkd.PREFIX}*"):
                    if f not in self.old:
                        f.unlink()
                for f in self.netdir.glob(f".{networkd.PREFIX}*.tmp"):
                    f.unlink()
            for f, data in self.old.items():
                if data is None:
                    f.unlink(missing_ok=True)
                elif not f.exists() or f.read_bytes() != data:
                    write_atomic(str(f), data)
            for d in sorted(self.dirs, key=lambda d: len(d.parts), reverse=True):
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
        except OSError as e:  # logged; the apply's own error is the one to report
            log.warning("could not put back the network files: %s", e)


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
    networkd failed or the result did not show within ``timeout`` seconds; then the
    files it wrote are taken back (the earlier ones put back, networkd told again if it
    had read the new ones), so that a failed apply leaves no file that was not there.
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
    undo = _Undo(base, base / NETWORK_DIR, [state_path, base / resolv.RESOLV_CONF])
    reloaded = False
    try:
        written = write_files(base / NETWORK_DIR, files)
        _save_state(state_path, configs, orig_mtu)
        dns_written = False
        if s.dns:
            resolv.write(base / resolv.RESOLV_CONF, s.dns)
            dns_written = True
        start = time.monotonic()
        reload([s.nic] + ([s.iface] if s.vlan is not None and look(s.iface).exists else []))
        reloaded = True
        want_mtu = s.mtu or (orig_mtu.get(s.nic) if s.vlan is None else None)
        while True:
            o = look(s.iface)
            waited = time.monotonic() - start
            if _reached(s, o, want_mtu):
                break
            if waited >= timeout:
                raise NetError(_timeout_reason(s, o, want_mtu, waited))
            sleep(0.5)
    except BaseException:
        undo.restore()
        if reloaded:  # networkd has the new files: let it re-read the old ones
            try:
                reload([s.nic])
            except NetError as e:
                log.info("after a failed apply of %s: %s", s.iface, e)
        raise
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
    try:
        tools.run(["ip", "link", "delete", iface], timeout=30)
    except tools.ToolError as e:
        if Path(f"/sys/class/net/{iface}").exists():
            raise NetError(f"ip link delete {iface} failed: {e.last_line or e}") from e
