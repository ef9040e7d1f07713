"""``rtk net``: list NICs, configure one (DHCP or static, MTU, VLAN), ping.

    rtk net list [--json]
    rtk net set NIC dhcp|static [--address A/P] [--gateway G] [--dns D ...]
                                [--mtu N] [--vlan ID] [--timeout S] [--json]
    rtk net del-vlan IFACE
    rtk net ping HOST [--count N] [--json]

Exit codes: 0 ok; 1 failed (networkd error, no address within the timeout,
no ping reply); 2 usage; 5 refused (bad input, nothing was changed). The
messages are the ones the menu shows (toolkit.net raises them).
"""

from __future__ import annotations

import argparse
import json
import sys

from toolkit.cli.common import subcommands
from toolkit.exitcodes import EXIT_FAILED, EXIT_OK
from toolkit.net import apply as applymod
from toolkit.net import nics as nicsmod
from toolkit.net import ping as pingmod
from toolkit.net.errors import NetError
from toolkit.net.settings import NetSettings


def _err(msg: str) -> None:
    print(f"rtk: {msg}", file=sys.stderr)


def nic_line(n: nicsmod.Nic) -> str:
    """One line per NIC, as ``rtk net list`` prints it."""
    link = "up" if n.link_up else ("no-carrier" if n.carrier is False else n.operstate)
    speed = f"{n.speed_mbps}Mb/s" if n.speed_mbps else "-"
    what = n.driver or n.kind or "-"
    if n.vlan_id is not None:
        what = f"vlan {n.vlan_id} on {n.vlan_parent}"
    addrs = ", ".join(a + (" (dhcp)" if a in n.dhcp_addresses else "")
                      for a in n.addresses) or "-"
    return (f"{n.name:<15} {link:<10} {speed:>9}  {n.mac or '-':<17}  mtu {n.mtu or '-':<5} "
            f"{what:<16} {addrs}")


def cmd_list(args: argparse.Namespace) -> int:
    found = nicsmod.list_nics()
    if args.json:
        json.dump([n.to_dict() for n in found], sys.stdout, indent=1)
        print()
    else:
        for n in found:
            print(nic_line(n))
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    s = NetSettings(nic=args.nic, mode=args.mode, address=args.address,
                    gateway=args.gateway, dns=tuple(args.dns or ()), mtu=args.mtu,
                    vlan=args.vlan)
    try:
        r = applymod.apply_settings(s, timeout=args.timeout)
    except NetError as e:
        _err(str(e))
        return e.exit_code
    if args.json:
        json.dump(r.to_dict(), sys.stdout, indent=1)
        print()
    else:
        print(f"{r.iface}: {', '.join(r.addresses) or 'no address'}, mtu {r.mtu} "
              f"({r.seconds:.1f} s)")
    return EXIT_OK


def cmd_del_vlan(args: argparse.Namespace) -> int:
    try:
        applymod.remove_vlan(args.iface)
    except NetError as e:
        _err(str(e))
        return e.exit_code
    print(f"{args.iface}: removed")
    return EXIT_OK


def cmd_ping(args: argparse.Namespace) -> int:
    r = pingmod.ping(args.host, count=args.count)
    if args.json:
        json.dump(r.to_dict(), sys.stdout, indent=1)
        print()
    else:
        print(r.line(), file=sys.stdout if r.ok else sys.stderr)
    return EXIT_OK if r.ok else EXIT_FAILED


MAX_PINGS = 10000


def _positive(text: str) -> int:
    t = text.strip()
    if not (t.isascii() and t.removeprefix("-").isdigit()):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if len(t) > 9 or not 1 <= int(t) <= MAX_PINGS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_PINGS}: {t[:30]}")
    n = int(t)
    return n


def register(sub) -> None:
    """Add ``net`` to ``rtk``'s subcommands."""
    p = sub.add_parser("net", help="network: list NICs, set DHCP/static, MTU, VLAN, ping",
                       description="Network settings through systemd-networkd (files in "
                                   "/run/systemd/network: gone at reboot).")
    nsub = subcommands(p, "net_command", "rtk net")
    ls = nsub.add_parser("list", help="NICs with link, speed, MAC, driver, MTU, addresses")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)

    st = nsub.add_parser("set", help="configure a NIC (or a VLAN on it) and apply at once")
    st.add_argument("nic", metavar="NIC")
    st.add_argument("mode", choices=("dhcp", "static"))
    st.add_argument("--address", metavar="ADDRESS/PREFIX", help="static: e.g. 192.168.1.20/24")
    st.add_argument("--gateway", metavar="ADDRESS", help="static: default gateway (in the subnet)")
    st.add_argument("--dns", metavar="ADDRESS", nargs="+", action="extend",
                    help="DNS server(s); written to /etc/resolv.conf")
    st.add_argument("--mtu", type=int, metavar="N", help="576..9216 (9000 for jumbo frames)")
    st.add_argument("--vlan", type=int, metavar="ID",
                    help="1..4094: configure VLAN interface NIC.ID (tagged) instead of NIC")
    st.add_argument("--timeout", type=float, default=applymod.TIMEOUT_S,
                    help="seconds to wait for the address (default: %(default)s)")
    st.add_argument("--json", action="store_true", help="machine-readable result")
    st.set_defaults(func=cmd_set)

    dv = nsub.add_parser("del-vlan", help="remove a VLAN interface made by rtk net set --vlan")
    dv.add_argument("iface", metavar="IFACE")
    dv.set_defaults(func=cmd_del_vlan)

    pg = nsub.add_parser("ping", help="ping a host (exit 0 if it answered)")
    pg.add_argument("host", metavar="HOST")
    pg.add_argument("--count", "-c", type=_positive, default=3)
    pg.add_argument("--json", action="store_true", help="machine-readable result")
    pg.set_defaults(func=cmd_ping)
