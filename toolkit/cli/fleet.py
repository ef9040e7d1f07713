"""``rtk fleet serve``: send one image to a fleet over multicast (udpcast's udp-sender).

    rtk fleet serve IMAGE --receivers N [--max-wait S] [--retries-until-drop N]
                    [--rate 600m] [--ttl 1] [--interface IF] [--portbase P]

Prints the image file's SHA-256 and the ``rtk.image=udpcast://...?sha256=...&size=...``
to put in each machine's plan, then runs udp-sender (docs/fleet.md) until the stream is
sent once.
Exit codes: 0 sent (at least one machine was still receiving at its end: each
machine's own report says whether its restore succeeded), 1 udp-sender failed or no
machine was left at the end, 2 usage, 5 refused (no such image file).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

from toolkit.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE

MAX_WAIT = 300  # s after the first machine joined; under the receivers' 600 s start_timeout
# udp-sender's lines (udpcast 20120424): a receiver joins, leaves (Esc, Ctrl-C: before
# "Transfer complete."; one that got it all leaves after it), or is dropped
_JOINED = re.compile(r"New connection from (\S+)\s+\(#(\d+)\)")
_LEFT = re.compile(r"(?:Disconnecting #(\d+)|[Dd]ropp(?:ing|ed) client #(\d+))")
_DONE = "Transfer complete."


def address_of(interface: str) -> str | None:
    """The IPv4 address of ``interface`` here (SIOCGIFADDR), or None."""
    import fcntl
    import socket
    import struct
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15]))
        return socket.inet_ntoa(got[20:24])
    return None


class Tally:
    """The receivers udp-sender has, from its output: ``at_end`` is how many were still
    connected when it printed "Transfer complete." (None until then)."""

    def __init__(self):
        self.now: set[str] = set()
        self.at_end: int | None = None
        self._part = ""

    def feed(self, text: str) -> None:
        *lines, self._part = (self._part + text).replace("\r", "\n").split("\n")
        for line in lines:
            if m := _JOINED.search(line):
                self.now.add(m.group(2))
            elif m := _LEFT.search(line):
                self.now.discard(m.group(1) or m.group(2))
            elif _DONE in line and self.at_end is None:
                self.at_end = len(self.now)


def _run(argv: list[str]) -> tuple[int, Tally]:
    """Run udp-sender, its output passed on and read; SIGTERM, SIGHUP and SIGINT are
    passed to it, and it never outlives us."""
    from toolkit.system import tools
    p = tools.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT)
    tally, old = Tally(), {}

    def forward(signum, _frame):
        if p.poll() is None:
            p.send_signal(signum)
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            old[sig] = signal.signal(sig, forward)
        while data := os.read(p.stdout.fileno(), 65536):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            tally.feed(data.decode(errors="replace"))
        return p.wait(), tally
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        p.stdout.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _plan_line(args, digest: str, size: int) -> str:
    # --interface is this server's NIC, not the machines': theirs goes before the port.
    # size=: how large the stream is, so that a machine holds it whole first when it has
    # the room (toolkit.restore.spool); rdv=: this sender's address, so that a machine
    # joins this sender, not another one on the same port base
    rdv = args.interface and address_of(args.interface)
    line = (f"plan image: udpcast://{args.portbase}?sha256={digest}&size={size}"
            + (f"&rdv={rdv}" if rdv else ""))
    return line + (f" (or udpcast://NIC@{args.portbase}?...: the machine's NIC, if not its "
                   "first)" + ("" if rdv else "; add &rdv=THIS-SERVER'S-ADDRESS when "
                           "another sender may use the same port base"))


def cmd_serve(args) -> int:
    from toolkit.restore import multicast
    from toolkit.system import tools
    if not os.path.isfile(args.image):
        print(f"rtk fleet serve: {args.image} is not a file", file=sys.stderr)
        return EXIT_REFUSED
    if args.interface and args.interface not in multicast.interfaces():
        print(f"rtk fleet serve: --interface {args.interface}: no such NIC here (the NICs: "
              f"{', '.join(multicast.interfaces()) or 'none'})", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.max_wait < 1:
            raise ValueError("--max-wait: seconds, at least 1")
        argv = multicast.sender_argv(args.image, receivers=args.receivers,
                                     max_wait=args.max_wait, rate=args.rate, ttl=args.ttl,
                                     interface=args.interface, portbase=args.portbase,
                                     retries_until_drop=args.retries_until_drop)
    except ValueError as e:
        print(f"rtk fleet serve: {e}", file=sys.stderr)
        return EXIT_USAGE
    digest = multicast.file_sha256(args.image)
    print(f"sha256 {digest}")
    print(_plan_line(args, digest, os.path.getsize(args.image)))
    print("$ " + " ".join(argv), flush=True)
    try:
        status, tally = _run(argv)
    except tools.ToolNotInstalled as e:
        print(f"rtk fleet serve: {e}", file=sys.stderr)
        return EXIT_FAILED
    if status != 0:
        print(f"rtk fleet serve: udp-sender failed (exit {status})", file=sys.stderr)
        return EXIT_FAILED
    if not tally.at_end:
        print("rtk fleet serve: no machine was still receiving at the end of the stream "
              "(they left or were dropped): none has the image", file=sys.stderr)
        return EXIT_FAILED
    print(f"rtk fleet serve: sent; {tally.at_end} machine(s) received it to the end "
          "(their own reports say whether each restore succeeded)")
    return EXIT_OK


def register(sub) -> None:
    """Add ``fleet`` to ``rtk``'s subcommands."""
    from toolkit.cli.common import subcommands
    p = sub.add_parser("fleet", help="send one image to many machines over multicast")
    fsub = subcommands(p, "fleet_command", "rtk fleet")
    s = fsub.add_parser("serve", help="run udp-sender for IMAGE (docs/fleet.md)")
    s.add_argument("image", metavar="IMAGE", help="the image file, as the machines restore it")
    s.add_argument("--receivers", type=int, required=True, metavar="N",
                   help="start once N machines joined (udp-sender --min-receivers)")
    s.add_argument("--max-wait", type=int, default=MAX_WAIT, metavar="S",
                   help="or S seconds after the first joined (--max-wait; default "
                        f"{MAX_WAIT}, under the machines' 600 s wait for the sender)")
    s.add_argument("--retries-until-drop", type=int, metavar="N",
                   help="drop a machine that does not answer N times (udp-sender's "
                        "default 200): one dead machine stalls the others until then")
    s.add_argument("--rate", metavar="BPS",
                   help="cap, bits per second: 600m (--max-bitrate); a cap near what the "
                        "slowest machine writes cuts re-sends (docs/fleet.md, Measured)")
    s.add_argument("--ttl", type=int, default=1, help="multicast TTL (default 1: this LAN)")
    s.add_argument("--interface", metavar="IF", help="the NIC to send on")
    s.add_argument("--portbase", type=int, default=9000, metavar="P",
                   help="even port; P and P+1 are used (default 9000)")
    s.set_defaults(func=cmd_serve)
