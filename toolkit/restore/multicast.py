"""Multicast images with udpcast (Debian's ``udpcast``: udp-sender, udp-receiver).

One syntax names a multicast image source (the menu, ``rtk restore``,
``rtk.image=`` and the plan's ``image``)::

    udpcast://[INTERFACE@]PORTBASE[?sha256=HEX][&start_timeout=S][&receive_timeout=S]
              [&rdv=ADDRESS][&spool=auto|always|never][&size=BYTES]

``spool=`` and ``size=`` say whether the stream is held first, before anything is
written (:mod:`toolkit.restore.spool`); ``size=`` is the image file's size (the most the
stream may be). :class:`UdpcastSource` runs ``udp-receiver`` and hands out its stdout as a
:class:`~toolkit.restore.source.Source` (size unknown, read once). A receiver
that hears no sender (or a sender that does not start) within ``start_timeout``
seconds fails with "no multicast sender on PORTBASE within N s"; a stream that
stops (no packet for ``receive_timeout`` seconds, the sender gone) fails with
"the multicast stream stopped at byte N". Both are :class:`MulticastError`.
``sender`` is the sender's address once udp-receiver joined it (it may still wait for
its other machines). :func:`watch` is for a front end with a cancel key (the menu): a
set ``cancel`` stops the receivers its thread started, whose read then raises
:class:`~toolkit.restore.target.Failed` ("cancelled"; nothing written while it waited).

:func:`sender_argv` is the server side (``rtk fleet serve``): udp-sender with the
settings FOG and Clonezilla SE use: ``--min-receivers``, ``--max-wait``,
``--full-duplex`` (a switched network), ``--max-bitrate``, ``--ttl``, ``--nokbd``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from toolkit.restore.source import Source, SourceError
from toolkit.restore.target import Failed
from toolkit.system import tools

SCHEME = "udpcast://"
DEFAULT_PORTBASE = 9000
START_TIMEOUT = 600  # seconds a receiver waits for the sender to start
RECEIVE_TIMEOUT = 30  # seconds without a packet once the stream runs
_SPEC = re.compile(r"(?:(?P<iface>[A-Za-z0-9_.:-]{1,15})@)?(?P<port>[0-9]{1,5})")
_QUERY = ("sha256", "start_timeout", "receive_timeout", "rdv", "spool", "size")
SPOOL_MODES = ("auto", "always", "never")  # ?spool=: held first when it fits, always, never
# where sender and receivers find each other: the all-hosts group on both sides (udpcast's
# defaults differ: the receiver broadcasts, the sender listens on 224.0.0.1); ?rdv=ADDRESS
# (the sender's address, as FOG gives its clients) for a network that drops it
RDV = "224.0.0.1"
# udp-receiver's line once the sender answered: "Connected as #0 to 10.213.0.10"
_CONNECTED = re.compile(r"Connected as #\d+ to (\S+)")
_LIVE: weakref.WeakSet = weakref.WeakSet()  # the receivers of this process, until closed
_LIVE_LOCK = threading.Lock()  # added to and listed from several threads


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
    spool: str = "auto"
    size: int | None = None  # the image file's size, when the plan gives it


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
            if not re.fullmatch(r"[0-9]{1,5}", v) or not 1 <= int(v) <= 86400:
                raise ValueError(f"{location}: {key}= expects seconds, 1 to 86400")
            times[key] = int(v)
    rdv = q.get("rdv", [RDV])[0]
    try:
        ipaddress.IPv4Address(rdv)
    except ValueError:
        raise ValueError(f"{location}: rdv= expects an IPv4 address (the sender's)") from None
    spool = q.get("spool", ["auto"])[0]
    if spool not in SPOOL_MODES:
        raise ValueError(f"{location}: spool= expects {', '.join(SPOOL_MODES)}")
    size = q.get("size", [None])[0]
    if size is not None and not (re.fullmatch(r"[0-9]{1,19}", size)
                                 and 0 < int(size) < 1 << 62):
        raise ValueError(f"{location}: size= expects the image file's size in bytes")
    return Spec(port, m.group("iface"), sha and sha.lower(), **times, rdv=rdv, spool=spool,
                size=size and int(size))


def location(portbase: int, *, interface: str | None = None, sha256: str | None = None,
             start_timeout: int | None = None, size: int | None = None) -> str:
    """The ``udpcast://`` location of these settings (what the menu's form builds)."""
    query = [f"sha256={sha256.lower()}"] if sha256 else []
    if start_timeout is not None:
        query.append(f"start_timeout={start_timeout}")
    if size is not None:
        query.append(f"size={size}")
    where = f"{interface}@" if interface else ""
    return f"{SCHEME}{where}{portbase}" + ("?" + "&".join(query) if query else "")


def interfaces() -> list[str]:
    """The NICs udp-receiver can use here (this network namespace's, but loopback)."""
    try:
        return sorted(name for _i, name in socket.if_nameindex() if name != "lo")
    except OSError:
        return []


def missing_interface(spec: Spec) -> str | None:
    """What is wrong when ``spec``'s NIC is not on this machine (a typo: udp-receiver
    would fail at once with "No suitable network interface found"), or None."""
    if spec.interface is None or spec.interface in interfaces():
        return None
    return (f"udpcast://{spec.interface}@{spec.portbase}: no NIC named {spec.interface} "
            f"here (the NICs: {', '.join(interfaces()) or 'none'}); nothing was written")


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
                portbase: int = DEFAULT_PORTBASE, full_duplex: bool = True,
                retries_until_drop: int | None = None) -> list[str]:
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
        if max_wait < 1:
            raise ValueError("--max-wait: seconds, at least 1")
        argv += ["--max-wait", str(max_wait)]
    if retries_until_drop is not None:
        if not 1 <= retries_until_drop <= 100000:
            raise ValueError("--retries-until-drop: 1 to 100000")
        argv += ["--retries-until-drop", str(retries_until_drop)]
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
        self.sender: str | None = None  # the sender's address, once joined
        self.stopped = False  # stop() was called: a cancel, not a failure
        self.thread = threading.get_ident()  # who started it (watch() stops only its own)
        why = missing_interface(self.spec)
        if why:
            raise MulticastError(why)
        self.argv = receiver_argv(self.spec)
        self.t0 = time.monotonic()
        self.proc = tools.popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._err = threading.Thread(target=self._drain, daemon=True, name="udp-receiver")
        self._err.start()
        self.ended = False
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            # its statistics end in a carriage return, not a newline
            for text in line.decode(errors="replace").replace("\r", "\n").splitlines():
                text = text.strip()
                m = _CONNECTED.search(text)
                if m:
                    self.sender = m.group(1)
                if text:
                    self.stderr.append(text)

    def where(self) -> str:
        """``port 9000 on eth0`` (what a person reads about this receiver)."""
        nic = f" on {self.spec.interface}" if self.spec.interface else ""
        return f"port {self.spec.portbase}{nic}"

    def stop(self) -> None:
        """Stop receiving (from another thread): :meth:`read` then raises Failed
        ("cancelled")."""
        self.stopped = True
        self._leave()

    def _leave(self) -> None:
        """Stop udp-receiver with SIGINT: it then tells the sender it leaves, and the
        others go on at full speed (with SIGTERM the sender waits for it, re-sending,
        until its --retries-until-drop: minutes at a crawl for the whole fleet)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def read(self, n: int = 1 << 20) -> bytes:
        if self.ended:
            return b""
        data = os.read(self.proc.stdout.fileno(), n)
        if data and not self.stopped:
            self.pos += len(data)
            return data
        status = self.proc.wait()
        self._err.join(2)
        self.ended = True
        if self.stopped or self._cancelled(status):
            raise Failed(f"cancelled while waiting for the multicast sender ({self.where()}): "
                         "nothing was written" if self.pos == 0 else
                         f"cancelled at byte {self.pos} of the multicast stream", "cancelled")
        if status != 0:
            raise self._failure(status)
        if self.pos == 0:
            raise MulticastError(f"{self.location}: the multicast sender on port "
                                 f"{self.spec.portbase} sent no data{self._joined()}")
        return b""

    def _cancelled(self, status: int) -> bool:
        """udp-receiver stopped by SIGINT (Ctrl-C at the terminal): a cancel."""
        return status in (-signal.SIGINT, 254) or any(
            "Cancelled by user" in x for x in self.stderr)

    def _joined(self) -> str:
        if not self.sender:
            return ""
        return (f" (it joined the sender {self.sender}, which sent nothing: most likely "
                "that sender waited for more machines, its --receivers, and gave up or was "
                "stopped; nothing was written)")

    def _failure(self, status: int) -> MulticastError:
        last = next((x for x in reversed(self.stderr) if "bytes=" not in x), "")
        why = f" (udp-receiver: {last}, exit {status})" if last else f" (exit {status})"
        took = f"{time.monotonic() - self.t0:.0f} s"
        said = " ".join(self.stderr)
        if "No suitable network interface found" in said or "Bad address" in said:
            return MulticastError(f"udp-receiver cannot use {self.where()}{why}: a NIC or "
                                  "address udp-receiver does not accept (nothing was written)")
        if self.pos == 0 and self.sender:
            return MulticastError(f"{self.location}: the multicast sender {self.sender} "
                                  f"sent no data after {took}{why}{self._joined()}")
        if self.pos == 0:
            return MulticastError(
                f"no multicast sender on {self.spec.portbase} within "
                f"{self.spec.start_timeout} s (waited {took}){why}: it is not "
                "running, started before this machine joined, or does not reach this "
                "network (nothing was written)")
        return MulticastError(f"the multicast stream stopped at byte {self.pos} after "
                              f"{took}{why}: the sender stopped or the network lost it")

    def close(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self.proc.poll() is None:
            self._leave()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._err.join(2)
        self.proc.stderr.close()


@contextlib.contextmanager
def watch(cancel: threading.Event, on_sender: Callable[[str], None] | None = None,
          interval: float = 0.2):
    """While inside, in this thread: a set ``cancel`` stops the udp-receivers this thread
    starts (a restore waiting for its sender ends "cancelled", nothing written), and
    ``on_sender(address)`` is called (from another thread) when one joins its sender."""
    me, done, told = threading.get_ident(), threading.Event(), set()

    def run() -> None:
        while not done.wait(interval):
            with _LIVE_LOCK:
                mine = [s for s in _LIVE if s.thread == me]
            if cancel.is_set():
                for s in mine:
                    s.stop()
                return
            for s in mine:
                if s.sender and on_sender and id(s) not in told:
                    told.add(id(s))
                    on_sender(s.sender)

    t = threading.Thread(target=run, daemon=True, name="udp-receiver-watch")
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(2)
