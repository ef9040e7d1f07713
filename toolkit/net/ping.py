"""Reachability test with the ``ping`` binary (iputils-ping, in the image).

:func:`parse_ping` reads ping's summary (pure, tested on real output);
:func:`ping` runs it. ping's exit status: 0 some reply, 1 no reply, 2 other
error (unknown host, no route, bad option).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from toolkit.system import tools

_STATS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max/(?:mdev|stddev) = "
                  r"([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_REPLY_FROM = re.compile(r"^PING \S+ \(([^)]+)\)", re.M)


@dataclass
class PingResult:
    """What a ping run showed. ``ok`` is True when at least one reply came back."""

    host: str
    address: str | None = None  # what the host name resolved to
    transmitted: int = 0
    received: int = 0
    rtt_min_ms: float | None = None
    rtt_avg_ms: float | None = None
    rtt_max_ms: float | None = None
    error: str | None = None  # ping's own message when it could not even start

    @property
    def ok(self) -> bool:
        return self.received > 0

    @property
    def loss_percent(self) -> float:
        if not self.transmitted:
            return 100.0
        return round(100.0 * (self.transmitted - self.received) / self.transmitted, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, loss_percent=self.loss_percent)
        return d

    def line(self) -> str:
        """One line for the menu and the command line."""
        if self.error:
            return f"{self.host}: {self.error}"
        where = f"{self.host} ({self.address})" if self.address and self.address != self.host \
            else self.host
        text = (f"{where}: {self.received}/{self.transmitted} replies, "
                f"{self.loss_percent:g}% loss")
        if self.rtt_avg_ms is not None:
            text += f", rtt min/avg/max {self.rtt_min_ms}/{self.rtt_avg_ms}/{self.rtt_max_ms} ms"
        return text


def parse_ping(host: str, output: str, returncode: int) -> PingResult:
    """Parse ping's output (stdout and stderr together) and exit status."""
    r = PingResult(host=host)
    m = _REPLY_FROM.search(output)
    if m:
        r.address = m.group(1)
    m = _STATS.search(output)
    if m:
        r.transmitted, r.received = int(m.group(1)), int(m.group(2))
    m = _RTT.search(output)
    if m:
        r.rtt_min_ms, r.rtt_avg_ms, r.rtt_max_ms = (float(m.group(i)) for i in (1, 2, 3))
    if returncode not in (0, 1) or not m and not r.transmitted:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        msg = lines[-1] if lines else f"ping failed (exit {returncode})"
        r.error = msg.removeprefix("ping: ")
    return r


def ping(host: str, count: int = 3, timeout_s: int = 2, iface: str | None = None
         ) -> PingResult:
    """Ping ``host`` ``count`` times (waiting ``timeout_s`` per reply)."""
    if not host or host.startswith("-"):
        return PingResult(host=host, error="bad host name")
    cmd = ["ping", "-n", "-c", str(count), "-W", str(timeout_s)]
    if iface:
        cmd += ["-I", iface]
    try:
        p = tools.run(cmd + [host], check=False, timeout=count * (timeout_s + 1) + 10)
    except tools.ToolNotInstalled as e:  # "ping is not installed (iputils-ping)"
        return PingResult(host=host, error=str(e))
    except tools.ToolError:
        return PingResult(host=host, error="ping did not finish in time")
    return parse_ping(host, p.stdout + p.stderr, p.returncode)
