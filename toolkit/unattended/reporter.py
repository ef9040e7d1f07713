"""Reports of an unattended run to a server (``rtk.report=URL``): JSON over HTTP POST.

:class:`ReportClient` posts one JSON body with bounded retries (count *and*
time) and never raises. :class:`RunReporter` builds the bodies of one run
(schema :data:`SCHEMA`, documented in docs/unattended.md, "Runner"): a
``start`` event, ``progress`` events at most one per ``interval`` seconds
(sent from a background thread, so a slow server never slows the write), and
an ``end`` event. Every body is scrubbed of the run's secrets (CHAP
passwords) before it leaves, and URLs lose their ``user:password@`` and query.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import requests

from toolkit.iscsi.adm import redact
from toolkit.jobs.progress import Progress
from toolkit.jobs.report import iso_time
from toolkit.net.http import http_failure
from toolkit.system import machine, remote

SCHEMA = "rtk-unattended/1"


def scrub(value, secrets: Iterable[str]):
    """``value`` (JSON-able) with every secret replaced by ``********``, in values and in
    keys. A secret of fewer than 4 characters is replaced in a key only when it is the
    whole key: it must not rename the report's own fields (``phase`` holds an "a")."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return value

    def text(s: str) -> str:
        return redact(s, secrets)

    def key(k: str) -> str:
        return "********" if k in secrets else redact(k, [s for s in secrets if len(s) >= 4])

    def walk(v):
        if isinstance(v, str):
            return text(v)
        if isinstance(v, dict):
            return {key(str(k)): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v
    return walk(value)


def mac_addresses(root: str = "/sys/class/net") -> list[str]:
    """The MAC addresses of this machine's NICs (not lo, not all-zero), sorted."""
    out = set()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(root, name, "address")) as f:
                mac = f.read().strip().lower()
        except OSError:
            continue
        if name != "lo" and mac and mac != "00:00:00:00:00:00":
            out.add(mac)
    return sorted(out)


class ReportClient:
    """POSTs JSON to ``url``. ``post`` tries at most ``1 + retries`` times, waiting
    ``backoff``, ``2*backoff``, ... between tries, and gives up when ``max_time``
    seconds have passed since it started: it returns False then, it never raises."""

    def __init__(self, url: str, *, timeout: float = 5.0, retries: int = 3,
                 backoff: float = 1.0, max_time: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.url, self.timeout, self.retries = url, timeout, retries
        self.backoff, self.max_time, self.sleep = backoff, max_time, sleep
        self.session = requests.Session()
        self.sent = self.failed = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def post(self, body: dict, *, retries: int | None = None) -> bool:
        data = json.dumps(body).encode()
        tries = 1 + (self.retries if retries is None else retries)
        deadline = time.monotonic() + self.max_time
        for attempt in range(tries):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                with self._lock:  # one requests.Session is not for several threads at once
                    r = self.session.post(self.url, data=data, timeout=min(self.timeout, left),
                                          headers={"Content-Type": "application/json"})
                if r.status_code < 300:
                    self.sent += 1
                    return True
                self.last_error = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                self.last_error = http_failure(e)
            except Exception as e:  # noqa: BLE001 - a report must never stop the job
                self.last_error = f"{type(e).__name__}: {e}"
            if attempt + 1 < tries:
                wait = min(self.backoff * (2 ** attempt), deadline - time.monotonic())
                if wait > 0:
                    self.sleep(wait)
        self.failed += 1
        return False


class RunReporter:
    """The events of one run. ``client`` None: events are only built (for the local
    report), nothing is sent. Thread-safe; never raises."""

    def __init__(self, client: ReportClient | None = None, *, interval: float = 5.0,
                 secrets: Iterable[str] = (), run_id: str | None = None,
                 host: str | None = None, macs: list[str] | None = None):
        self.client, self.interval = client, interval
        self.secrets = list(secrets)
        self.run_id = run_id or str(uuid.uuid4())
        self.host = {"name": host or machine.hostname(),
                     "macs": mac_addresses() if macs is None else macs}
        if ssh := remote.fingerprints_for_report():  # remote access on: the host keys
            self.host["ssh"] = ssh
        self.seq = 0
        self.common: dict = {}
        self.last_progress = 0.0
        self.last_phase: str | None = None
        self.posted: list[dict] = []  # every body built, as sent (for the local report)
        self._pending: dict | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def set_secrets(self, secrets: Iterable[str]) -> None:
        self.secrets += [s for s in secrets if s]

    def update(self, **fields) -> None:
        """Fields every later event carries (mode, disk, image, source...)."""
        self.common.update(fields)

    def _body(self, event: str, **fields) -> dict:
        with self._cond:
            self.seq += 1
            seq = self.seq
        body = {"schema": SCHEMA, "event": event, "run_id": self.run_id, "seq": seq,
                "time": iso_time(time.time()), "host": self.host, **self.common, **fields}
        body = scrub(body, self.secrets)
        self.posted.append(body)
        return body

    def start(self, **fields) -> bool:
        body = self._body("start", **fields)
        return self.client.post(body) if self.client else False

    def progress(self, p: Progress, force: bool = False) -> None:
        """Queue a progress event if ``interval`` has passed (or the phase changed)."""
        now = time.monotonic()
        if not force and p.phase == self.last_phase and now - self.last_progress < self.interval:
            return
        self.last_progress, self.last_phase = now, p.phase
        body = self._body("progress", phase=p.phase, progress=progress_fields(p))
        if self.client is None:
            return
        with self._cond:
            self._pending = body  # a newer one replaces one not yet sent
            if self._thread is None:
                self._thread = threading.Thread(target=self._sender, daemon=True,
                                                name="rtk-report")
                self._thread.start()
            self._cond.notify()

    def _sender(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                body, self._pending = self._pending, None
                if body is None:
                    return
            self.client.post(body, retries=1)  # the next one supersedes it anyway

    def end(self, **fields) -> bool:
        """Stop the progress sender (waiting at most its post's bounds), send ``end``."""
        with self._cond:
            self._stop, self._pending = True, None
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(self.client.max_time + 1 if self.client else 1)
        body = self._body("end", **fields)
        return self.client.post(body) if self.client else False


def progress_fields(p: Progress) -> dict:
    return {"phase": p.phase, "bytes_done": p.done, "bytes_total": p.total,
            "fraction": round(p.fraction, 4), "rate": round(p.rate, 1),
            "average_rate": round(p.average_rate, 1),
            "eta": None if p.eta is None else round(p.eta, 1),
            "read_errors": p.read_errors,
            "note": p.note or None}  # phase "waiting": the storage outage waited out
