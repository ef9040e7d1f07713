"""A private multicast LAN for tests and benches: network namespaces on one bridge.

:class:`Lan` makes a bridge in a namespace of its own (so nothing of it is on the
host's network), and one namespace per machine with a veth pair into the bridge,
an address in 10.213.0.0/24 (which exists only inside these namespaces) and a
multicast route (224.0.0.0/4) on its interface. :meth:`Lan.close` removes all.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

NET = "10.213.0"


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
