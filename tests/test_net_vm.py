"""rtk net in the live system: one boot of the ISO on QEMU user networking
(10.0.2.0/24, gateway and host 10.0.2.2, DNS 10.0.2.3, DHCP gives 10.0.2.15)
carries every check: list, static address with gateway/DNS/MTU, ping and TCP
to the host, refusals that change nothing, a VLAN, and back to DHCP.

Only 10.0.2.x is ever targeted. QEMU's user network answers ICMP echo to
10.0.2.2, so the ping test is real; a TCP connect to an HTTP server on the
host's 127.0.0.1 (10.0.2.2 from the guest) checks the static route as well.

RTK_VM_DEV=1 pushes this source tree into the guest first (for an ISO built
before the network code); by default the ISO must contain it.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from vmlab.http import HttpServer
from vmlab.qemu import Guest

pytestmark = pytest.mark.vm

MAC = "52:54:00:12:34:56"  # QEMU's default for the first NIC


@pytest.fixture(scope="module")
def lab(tmp_path_factory, need_root):
    work = tmp_path_factory.mktemp("vmnet")
    served = work / "www"
    served.mkdir()
    (served / "hello.txt").write_text("hello from the host\n")
    http = HttpServer(served)
    yield {"work": work, "http": http, "served": served}
    http.stop()


def _rc(guest: Guest, command: str, timeout: float = 120) -> tuple[int, str]:
    out = guest.run(f"{command}; echo __rc=$?", timeout=timeout)
    m = re.search(r"__rc=(\d+)\s*$", out)
    return int(m.group(1)), out[: m.start()]


def _ipv4(guest: Guest, iface: str) -> list[str]:
    info = json.loads(guest.run(f"ip -j addr show dev {iface}"))[0]
    return [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet"]


def _mtu(guest: Guest, iface: str) -> int:
    return json.loads(guest.run(f"ip -j link show dev {iface}"))[0]["mtu"]


def _net_state(guest: Guest) -> str:
    """What a refused command must leave alone: networkd files, addresses, MTUs, resolv.conf."""
    return guest.run("md5sum /run/systemd/network/* /etc/resolv.conf; "
                     "ip -c=never -br addr; ip -c=never -br link")


def test_network_in_guest(iso, lab):
    guest = Guest(lab["work"], iso, name="net")
    try:
        guest.wait_menu(timeout=400)
        print(f"menu after {guest.elapsed():.0f} s")
        guest.open_shell()
        if os.environ.get("RTK_VM_DEV") == "1":
            guest.install_source_tree(lab["http"], lab["served"])

        # list: the virtio NIC with its MAC, driver, link and DHCP address
        listed = json.loads(guest.run("rtk net list --json"))
        nic = next(n for n in listed if n["mac"] == MAC)
        name = nic["name"]
        assert nic["driver"] == "virtio_net" and nic["physical"]
        assert nic["link_up"] and nic["carrier"] and nic["operstate"] == "up"
        assert "10.0.2.15/24" in nic["addresses"] and "10.0.2.15/24" in nic["dhcp_addresses"]
        assert nic["mtu"] == 1500
        text = guest.run("rtk net list")
        assert re.search(rf"^{name}\s+up .*{MAC}.*virtio_net.*10\.0\.2\.15/24 \(dhcp\)",
                         text, re.M), text

        # static address, gateway, DNS and MTU 1400, applied at once
        rc, out = _rc(guest, f"rtk net set {name} static --address 10.0.2.50/24 "
                             "--gateway 10.0.2.2 --dns 10.0.2.3 --mtu 1400 --json")
        assert rc == 0, out
        result = json.loads(out)
        assert result["addresses"][0] == "10.0.2.50/24" and result["mtu"] == 1400
        print(f"static applied in {result['seconds']} s")
        assert _ipv4(guest, name) == ["10.0.2.50/24"]  # the DHCP address is gone
        assert _mtu(guest, name) == 1400
        assert re.search(rf"default via 10\.0\.2\.2 dev {name}", guest.run("ip -c=never route"))
        assert "nameserver 10.0.2.3" in guest.run("cat /etc/resolv.conf")
        ping = json.loads(guest.run("rtk net ping 10.0.2.2 --count 2 --json"))
        assert ping["ok"] and ping["received"] == 2, ping
        url = lab["http"].url("hello.txt", host="10.0.2.2")
        assert "hello from the host" in guest.run(f"curl -sf --max-time 20 {url}")
        rc, out = _rc(guest, "rtk net ping 10.0.2.9 --count 1")  # nobody there
        assert rc == 1 and "0/1 replies, 100% loss" in out

        # bad input: a clear message, exit 5, nothing changed
        before = _net_state(guest)
        for args, message in [
            (f"{name} static --address 10.0.2.50/33", "bad prefix length /33"),
            (f"{name} static --address 10.0.2.50/24 --mtu 10000",
             "MTU 10000 is out of range 576..9216"),
            (f"{name} static --address 10.0.2.50/24 --gateway 10.0.3.1",
             "gateway 10.0.3.1 is outside the subnet 10.0.2.0/24"),
            (f"{name} static --address 10.0.2.60/24 --vlan 4095",
             "VLAN id 4095 is out of range 1..4094"),
            ("eth9 dhcp", "unknown NIC 'eth9'"),
        ]:
            rc, out = _rc(guest, f"rtk net set {args}")
            assert rc == 5 and message in out, (args, out)
        assert _net_state(guest) == before

        # a VLAN interface (tag 42) with its own address and MTU
        rc, out = _rc(guest, f"rtk net set {name} static --vlan 42 --address 10.0.42.10/24 "
                             "--mtu 1300")
        assert rc == 0, out
        vlan = f"{name}.42"
        link = guest.run(f"ip -c=never -d link show dev {vlan}")
        assert f"{vlan}@{name}" in link and "vlan protocol 802.1Q id 42" in link, link
        assert _mtu(guest, vlan) == 1300 and _ipv4(guest, vlan) == ["10.0.42.10/24"]
        listed = {n["name"]: n for n in json.loads(guest.run("rtk net list --json"))}
        assert (listed[vlan]["vlan_id"], listed[vlan]["vlan_parent"]) == (42, name)
        assert _ipv4(guest, name) == ["10.0.2.50/24"]  # the parent kept its settings
        rc, out = _rc(guest, f"rtk net del-vlan {vlan}")
        assert rc == 0, out
        assert vlan not in guest.run("ip -c=never -br link")

        # back to DHCP: the lease address and the NIC's own MTU again
        rc, out = _rc(guest, f"rtk net set {name} dhcp --json")
        assert rc == 0, out
        assert _ipv4(guest, name) == ["10.0.2.15/24"] and _mtu(guest, name) == 1500
        assert json.loads(guest.run("rtk net ping 10.0.2.2 --count 1 --json"))["ok"]
        assert "nameserver 10.0.2.3" in guest.run("cat /etc/resolv.conf")

        guest.close_shell()
        guest.wait_menu(timeout=60)
    finally:
        guest.stop()
