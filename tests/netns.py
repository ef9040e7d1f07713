"""A private multicast LAN for tests and benches: network namespaces on one bridge.

:class:`Lan` makes a bridge in a namespace of its own (so nothing of it is on the
host's network), and one namespace per machine with a veth pair into the bridge,
an address in 10.213.0.0/24 (which exists only inside these namespaces) and a
multicast route (224.0.0.0/4) on its interface. :meth:`Lan.add_tap` puts a tap device
on the bridge (a QEMU guest's NIC, QEMU run in the bridge's namespace: :attr:`Lan.hub`);
:func:`inside` moves the calling thread (and the threads and processes it starts) into
a namespace for a while, for code under test that runs in the test's own process (the
menu). :meth:`Lan.close` removes all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import uuid

NET = "10.213.0"
CLONE_NEWNET = 0x40000000


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


class Lan:
    def __init__(self, tag: str | None = None):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.hub = f"rtkhub{self.tag}"
        self.spaces: list[str] = []
        sh("ip", "netns", "add", self.hub)
        self.spaces.append(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        # snooping off: every port gets the group's packets (a plain switch)
        sh("ip", "-n", self.hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")

    def add(self, index: int) -> str:
        """Namespace ``rtk<tag>m<index>`` with ``eth0`` at 10.213.0.<index+10>; its name."""
        ns = f"rtk{self.tag}m{index}"
        sh("ip", "netns", "add", ns)
        self.spaces.append(ns)
        port = f"p{self.tag}{index}"
        sh("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{NET}.{index + 10}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        return ns

    def add_tap(self, name: str) -> str:
        """A tap device ``name`` on the bridge, in the bridge's namespace (no address: the
        guest behind it has one of 10.213.0.0/24); its name."""
        sh("ip", "-n", self.hub, "tuntap", "add", "dev", name, "mode", "tap")
        sh("ip", "-n", self.hub, "link", "set", name, "master", "br0", "up")
        return name

    @staticmethod
    def tx_bytes(ns: str, dev: str = "eth0") -> int:
        out = sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/tx_bytes")
        return int(out.stdout.strip())

    @staticmethod
    def argv(ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def close(self) -> None:
        for ns in reversed(self.spaces):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:  # only processes inside a namespace made here
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", ns, check=False)
        self.spaces.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def inside(ns: str):
    """The calling thread in namespace ``ns`` (``ip netns``'s), then back where it was.
    Threads it starts meanwhile (and their processes) stay in ``ns``: let them end first.
    Leave before :meth:`Lan.close`, which kills every process whose main thread is in
    one of its namespaces."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace failed")
    finally:
        os.close(there)
        os.close(home)
