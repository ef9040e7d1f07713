"""Multicast images with udpcast (Debian's ``udpcast``: udp-sender, udp-receiver).

One syntax names a multicast image source (the menu, ``rtk restore``,
``rtk.image=`` and the plan's ``image``)::

    udpcast://[INTERFACE@]PORTBASE[?sha256=HEX][&start_timeout=S][&receive_timeout=S]

:class:`UdpcastSource` runs ``udp-receiver`` and hands out its stdout as a
:class:`~toolkit.restore.source.Source` (size unknown, read once). A receiver
that hears no sender (or a sender that does not start) within ``start_timeout``
seconds fails with "no multicast sender on PORTBASE within N s"; a stream that
stops (no packet for ``receive_timeout`` seconds, the sender gone) fails with
"the multicast stream stopped at byte N". Both are :class:`MulticastError`.

:func:`sender_argv` is the server side (``rtk fleet serve``): udp-sender with the
settings FOG and Clonezilla SE use: ``--min-receivers``, ``--max-wait``,
``--full-duplex`` (a switched network), ``--max-bitrate``, ``--ttl``, ``--nokbd``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs

from toolkit.restore.source import Source, SourceError
from toolkit.system import tools

SCHEME = "udpcast://"
DEFAULT_PORTBASE = 9000
START_TIMEOUT = 600  # seconds a receiver waits for the sender to start
RECEIVE_TIMEOUT = 30  # seconds without a packet once the stream runs
_SPEC = re.compile(r"(?:(?P<iface>[A-Za-z0-9_.:-]{1,15})@)?(?P<port>\d{1,5})")
_QUERY = ("sha256", "start_timeout", "receive_timeout", "rdv")
# where sender and receivers find each other: the all-hosts group on both sides (udpcast's
# defaults differ: the receiver broadcasts, the sender listens on 224.0.0.1); ?rdv=ADDRESS
# (the sender's address, as FOG gives its clients) for a network that drops it
RDV = "224.0.0.1"


class MulticastError(SourceError):
    """The multicast stream could not be received: no sender, or it stopped."""


@dataclass(frozen=True)
class Spec:
    portbase: int
    interface: str | None = None
    sha256: str | None = None
    start_timeout: int = START_TIMEOUT
    receive_timeout: int = RECEIVE_TIMEOUT
    rdv: str = RDV


def is_multicast(location: str) -> bool:
    return isinstance(location, str) and location.startswith(SCHEME)


def parse(location: str) -> Spec:
    """The :class:`Spec` of ``udpcast://[IF@]PORTBASE[?sha256=HEX...]``; ValueError if not."""
    if not is_multicast(location):
        raise ValueError(f"{location}: not a udpcast:// image")
    rest = location[len(SCHEME):]
    body, _, query = rest.partition("?")
    m = _SPEC.fullmatch(body)
    if not m:
        raise ValueError(f"{location}: expected udpcast://[INTERFACE@]PORTBASE[?sha256=HEX]")
    port = int(m.group("port"))
    if port % 2 or not 1024 <= port <= 65534:
        raise ValueError(f"{location}: the port base must be even, from 1024 to 65534 "
                         "(udpcast uses it and the next one)")
    try:
        q = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"{location}: cannot read the part after ?") from None
    unknown = [k for k in q if k not in _QUERY]
    if unknown or any(len(v) > 1 for v in q.values()):
        raise ValueError(f"{location}: unknown or repeated {', '.join(unknown) or 'key'}; "
                         f"known: {', '.join(_QUERY)}")
    sha = q.get("sha256", [None])[0]
    if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise ValueError(f"{location}: sha256= expects 64 hexadecimal digits")
    times = {}
    for key in ("start_timeout", "receive_timeout"):
        if key in q:
            v = q[key][0]
            if not v.isdigit() or not 1 <= int(v) <= 86400:
                raise ValueError(f"{location}: {key}= expects seconds, 1 to 86400")
            times[key] = int(v)
    rdv = q.get("rdv", [RDV])[0]
    if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", rdv):
        raise ValueError(f"{location}: rdv= expects an IPv4 address (the sender's)")
    return Spec(port, m.group("iface"), sha and sha.lower(), **times, rdv=rdv)


def receiver_argv(spec: Spec) -> list[str]:
    argv = ["udp-receiver", "--nokbd", "--portbase", str(spec.portbase),
            "--start-timeout", str(spec.start_timeout),
            "--receive-timeout", str(spec.receive_timeout), "--stat-period", "2000",
            "--mcast-rdv-address", spec.rdv]
    if spec.interface:
        argv += ["--interface", spec.interface]
    return argv


def sender_argv(image: str, *, receivers: int, max_wait: int | None = None,
                rate: str | None = None, ttl: int = 1, interface: str | None = None,
                portbase: int = DEFAULT_PORTBASE, full_duplex: bool = True) -> list[str]:
    """udp-sender for ``image`` as FOG and Clonezilla SE start it: it waits for
    ``receivers`` machines (``--min-receivers``), or ``max_wait`` seconds after the first
    one joined (``--max-wait``), then sends once; ``rate`` caps it (``600m``)."""
    if receivers < 1:
        raise ValueError("--receivers: at least 1")
    if portbase % 2 or not 1024 <= portbase <= 65534:
        raise ValueError("--portbase: even, from 1024 to 65534")
    if rate is not None and not re.fullmatch(r"\d+(\.\d+)?[kKmMgG]?", rate):
        raise ValueError(f"--rate {rate}: expected bits per second, as 600m or 1g")
    if not 1 <= ttl <= 255:
        raise ValueError("--ttl: 1 to 255")
    argv = ["udp-sender", "--file", image, "--nokbd", "--portbase", str(portbase),
            "--min-receivers", str(receivers), "--ttl", str(ttl), "--mcast-rdv-address", RDV]
    if max_wait is not None:
        argv += ["--max-wait", str(max_wait)]
    if full_duplex:
        argv.append("--full-duplex")
    if rate:
        argv += ["--max-bitrate", rate]
    if interface:
        argv += ["--interface", interface]
    return argv


def file_sha256(path: str, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            h.update(data)
    return h.hexdigest()


class UdpcastSource(Source):
    """udp-receiver's stdout, read once; ``size`` is unknown (None). ``stderr``: its last
    lines (statistics, errors), for the failure's message."""

    def __init__(self, location: str):
        self.location = location
        try:
            self.spec = parse(location)
        except ValueError as e:
            raise SourceError(str(e)) from None
        self.size = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.argv = receiver_argv(self.spec)
        self.proc = tools.popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._err = threading.Thread(target=self._drain, daemon=True, name="udp-receiver")
        self._err.start()
        self.ended = False

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            text = line.decode(errors="replace").strip()
            if text:
                self.stderr.append(text)

    def read(self, n: int = 1 << 20) -> bytes:
        if self.ended:
            return b""
        data = os.read(self.proc.stdout.fileno(), n)
        if data:
            self.pos += len(data)
            return data
        status = self.proc.wait()
        self._err.join(2)
        self.ended = True
        if status != 0:
            raise self._failure(status)
        if self.pos == 0:
            raise MulticastError(f"{self.location}: the multicast sender on port "
                                 f"{self.spec.portbase} sent no data")
        return b""

    def _failure(self, status: int) -> MulticastError:
        last = next((x for x in reversed(self.stderr) if "bytes=" not in x), "")
        why = f" (udp-receiver: {last}, exit {status})" if last else f" (exit {status})"
        if self.pos == 0:
            return MulticastError(
                f"no multicast sender on {self.spec.portbase} within "
                f"{self.spec.start_timeout} s{why}: it is not running, started before this "
                "machine joined, or does not reach this network (nothing was written)")
        return MulticastError(f"the multicast stream stopped at byte {self.pos}{why}: the "
                              "sender stopped or the network lost it")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._err.join(2)
        self.proc.stderr.close()
