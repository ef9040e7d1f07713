"""``rtk fleet serve``: send one image to a fleet over multicast (udpcast's udp-sender).

    rtk fleet serve IMAGE --receivers N [--max-wait S] [--rate 600m] [--ttl 1]
                    [--interface IF] [--portbase P]

Prints the image file's SHA-256 and the ``rtk.image=udpcast://...?sha256=...&size=...``
to put in each machine's plan, then runs udp-sender (docs/fleet.md) until the stream is
sent once.
Exit codes: 0 sent, 1 udp-sender failed, 2 usage, 5 refused (no such image file).
"""

from __future__ import annotations

import os
import subprocess
import sys

from toolkit.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE


def cmd_serve(args) -> int:
    from toolkit.restore import multicast
    from toolkit.system import tools
    if not os.path.isfile(args.image):
        print(f"rtk fleet serve: {args.image} is not a file", file=sys.stderr)
        return EXIT_REFUSED
    try:
        argv = multicast.sender_argv(args.image, receivers=args.receivers,
                                     max_wait=args.max_wait, rate=args.rate, ttl=args.ttl,
                                     interface=args.interface, portbase=args.portbase)
    except ValueError as e:
        print(f"rtk fleet serve: {e}", file=sys.stderr)
        return EXIT_USAGE
    digest = multicast.file_sha256(args.image)
    print(f"sha256 {digest}")
    # --interface is this server's NIC, not the machines': theirs goes before the port
    # size=: how large the stream is, so that a machine holds it whole first when it has
    # the room (toolkit.restore.spool), instead of needing room for its whole disk
    size = os.path.getsize(args.image)
    print(f"plan image: udpcast://{args.portbase}?sha256={digest}&size={size}"
          f" (or udpcast://NIC@{args.portbase}?sha256=...: the machine's NIC, if not its "
          "first)")
    print("$ " + " ".join(argv), flush=True)
    try:
        p = tools.popen(argv, stdin=subprocess.DEVNULL)
    except tools.ToolNotInstalled as e:
        print(f"rtk fleet serve: {e}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if p.wait() == 0 else EXIT_FAILED


def register(sub) -> None:
    """Add ``fleet`` to ``rtk``'s subcommands."""
    from toolkit.cli.common import subcommands
    p = sub.add_parser("fleet", help="send one image to many machines over multicast")
    fsub = subcommands(p, "fleet_command", "rtk fleet")
    s = fsub.add_parser("serve", help="run udp-sender for IMAGE (docs/fleet.md)")
    s.add_argument("image", metavar="IMAGE", help="the image file, as the machines restore it")
    s.add_argument("--receivers", type=int, required=True, metavar="N",
                   help="start once N machines joined (udp-sender --min-receivers)")
    s.add_argument("--max-wait", type=int, metavar="S",
                   help="or S seconds after the first joined (--max-wait)")
    s.add_argument("--rate", metavar="BPS",
                   help="cap, bits per second: 600m (--max-bitrate); a cap near what the "
                        "slowest machine writes cuts re-sends (docs/fleet.md, Measured)")
    s.add_argument("--ttl", type=int, default=1, help="multicast TTL (default 1: this LAN)")
    s.add_argument("--interface", metavar="IF", help="the NIC to send on")
    s.add_argument("--portbase", type=int, default=9000, metavar="P",
                   help="even port; P and P+1 are used (default 9000)")
    s.set_defaults(func=cmd_serve)
