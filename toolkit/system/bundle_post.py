"""Sending a logs bundle: :func:`post`, one HTTP POST of the file
(``Content-Type: application/gzip``), retried after a failure to connect or a 5xx; the
result is a :class:`Posted`, never an exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from toolkit.system.bundle import Bundle


@dataclass
class Posted:
    ok: bool
    url: str  # shown without user:password@ and query
    status: int | None = None
    error: str | None = None
    tries: int = 0


def _shown(url: str) -> str:
    from toolkit.jobs.report import safe_url
    return safe_url(url) or url


def post(b: Bundle, url: str, *, verify: bool | str = True, timeout: float = 60,
         retries: int = 2, backoff: float = 1.0, headers: dict | None = None) -> Posted:
    """HTTP POST of the bundle file (``application/gzip``) to ``url``; any 2xx answer
    counts. Retried ``retries`` times (waits ``backoff``, doubled) after a failure to
    connect or a 5xx; never raises."""
    import requests

    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        return Posted(False, _shown(url), error="expected an http:// or https:// URL")
    hdrs = {"Content-Type": "application/gzip",
            "Content-Disposition": f'attachment; filename="{b.name}"',
            "X-RTK-Bundle": b.name, "X-RTK-Bundle-SHA256": b.sha256, **(headers or {})}
    result = Posted(False, _shown(url))
    for attempt in range(1 + retries):
        result.tries = attempt + 1
        try:
            with open(b.path, "rb") as f:
                r = requests.post(url, data=f, headers=hdrs, timeout=timeout, verify=verify)
            result.status = r.status_code
            if r.status_code < 300:
                result.ok, result.error = True, None
                return result
            result.error = f"HTTP {r.status_code}"
            if r.status_code < 500:
                return result
        except requests.RequestException as e:
            result.error = type(e).__name__
        except OSError as e:
            result.error = f"cannot read {b.path}: {e.strerror}"
            return result
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    return result
