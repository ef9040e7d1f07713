"""An image over HTTP(S): :class:`HttpSource`, a GET streamed and resumed after a dropped
connection with ``Range: bytes=POS-`` and ``If-Range`` (the first answer's strong ETag,
else Last-Modified), the answer's validators and total length checked against the first
answer's (:class:`~toolkit.restore.source.EntityChanged`: another file, never spliced);
TLS verified (the system's CAs or a checked CA file) unless ``insecure``. requests is
imported only here, when an HTTP source is opened.
"""

from __future__ import annotations

import re
import time

from toolkit.jobs.report import safe_url
from toolkit.restore.source import (
    CHUNK,
    EntityChanged,
    Source,
    SourceError,
    check_ca_file,
    describe_entity,
    no_validator_warning,
)


def _drops() -> tuple:
    """What a dropped connection raises. requests is imported only for an HTTP source:
    it takes a tenth of a second, most of a local restore's start-up."""
    import requests
    import urllib3
    return (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.Timeout, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


def _tls_reason(e: Exception) -> str:
    """``self-signed certificate`` out of requests' long SSLError text, else all of it."""
    m = re.search(r"certificate verify failed: ([^(']+)", str(e))
    return m.group(1).strip() if m else str(e)


def _net_reason(e: Exception) -> str:
    """``Connection refused`` out of requests' long ConnectionError text, else all of it."""
    import requests
    if isinstance(e, requests.Timeout):
        return "no answer (timed out)"
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))
    return m.group(1).strip() if m else str(e)


class HttpSource(Source):
    """GET with ``stream=True``; on a dropped connection, GET again from ``pos`` with Range
    and If-Range. ``etag``, ``last_modified``: the first answer's validators; ``changed``:
    the :class:`EntityChanged` raised, if any; ``warnings``: resumes without a validator."""

    def __init__(self, url: str, *, ca_file: str | None = None, insecure: bool = False,
                 timeout: float = 30.0, retries: int = 10, backoff: float = 0.5):
        self.location, self.timeout, self.retries, self.backoff = url, timeout, retries, backoff
        self.shown = safe_url(url)  # in messages: no user:password@, no ?token=
        problem = ca_file and not insecure and check_ca_file(ca_file)
        if problem:
            raise SourceError(problem)
        import requests
        import urllib3
        self.session = requests.Session()
        # per request: requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override a
        # session's verify (a CA file or False), never a request's
        self.verify: bool | str = False if insecure else (ca_file or True)
        if insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.response = None  # the current requests.Response
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.changed: EntityChanged | None = None
        self.warnings: list[str] = []
        try:
            self._open(0)
        except _drops() as e:
            raise SourceError(f"cannot reach {self.shown}: {_net_reason(e)} (is the server "
                              "up, and this machine's network configured?)") from None

    def _get(self, headers: dict):
        import requests
        try:
            r = self.session.get(self.location, headers=headers, stream=True,
                                 timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as e:
            raise SourceError(f"TLS verification failed for {self.shown}: {_tls_reason(e)} "
                              "(give the CA certificate that signed the server's: a CA file, "
                              "--ca-file; or skip TLS verification, --insecure)") from None
        if r.status_code == 404:
            r.close()
            raise SourceError(2, f"{self.shown}: not found (HTTP 404)")
        if r.status_code >= 400:
            r.close()
            raise SourceError(f"{self.shown}: HTTP {r.status_code} {r.reason}")
        return r

    @property
    def if_range(self) -> str | None:
        """What If-Range sends: a strong ETag (a weak one may not be), else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    @property
    def entity(self) -> tuple[str | None, str | None, int | None]:
        """What tells this file from another: (ETag, Last-Modified, size)."""
        return self.etag, self.last_modified, self.size

    def validator_text(self) -> str:
        return describe_entity(self.entity)

    def _differs(self, r) -> tuple[str, str] | None:
        """(old, new) when answer ``r`` is of another file than the first answer."""
        etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
        if self.etag and etag and etag != self.etag:
            return f"ETag {self.etag}", f"ETag {etag}"
        if self.last_modified and modified and modified != self.last_modified:
            return f"Last-Modified {self.last_modified}", f"Last-Modified {modified}"
        # the first answer had a validator: an answer that carries none of them cannot be
        # told to be the same file (a proxy, another server): taken as another file
        if r.status_code == 206 and (self.etag or self.last_modified) and not (
                (self.etag and etag == self.etag)
                or (self.last_modified and modified == self.last_modified)):
            return self.validator_text(), "an answer without its validator"
        return None

    def _change(self, old: str, new: str) -> EntityChanged:
        self.changed = EntityChanged(self.location, old, new)
        return self.changed

    def _open(self, pos: int) -> None:
        headers = {"Accept-Encoding": "identity"}
        if pos:
            headers["Range"] = f"bytes={pos}-"
            if self.if_range:
                headers["If-Range"] = self.if_range
        r = self._get(headers)
        if pos:
            self._check_resume(r, pos)
        else:
            length = r.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
            self.etag = r.headers.get("ETag")
            self.last_modified = r.headers.get("Last-Modified")
        self.response = r

    def _check_resume(self, r, pos: int) -> None:
        """The answer to a resume must be the rest of the same file: else close it and raise
        :class:`EntityChanged` (another file) or :class:`SourceError` (cannot resume)."""
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", r.headers.get("Content-Range", ""))
        total = int(m.group(2)) if m and m.group(2).isdigit() else None
        changed = self._differs(r)
        if changed is None and self.size is not None:
            length = r.headers.get("Content-Length", "")
            other = total if r.status_code == 206 else (
                int(length) if r.status_code == 200 and length.isdigit() else None)
            if other is not None and other != self.size:
                changed = f"{self.size} bytes", f"{other} bytes"
        if changed:
            r.close()
            raise self._change(*changed)
        if r.status_code == 200 and self.if_range and (r.headers.get("ETag")
                                                       or r.headers.get("Last-Modified")) is None:
            r.close()  # If-Range sent, the whole file back, and nothing to compare: changed?
            raise SourceError(f"{self.shown}: the connection dropped at byte {pos}; the "
                              "server answered the resume with the whole file and no "
                              "validator, so it may have changed: the server cannot resume "
                              "there")
        if r.status_code != 206 or not m or int(m.group(1)) != pos:
            r.close()
            raise SourceError(f"{self.shown}: the connection dropped at byte {pos} and "
                              f"the server cannot resume there (HTTP {r.status_code}, no "
                              "matching Range answer)")
        if not (self.etag or self.last_modified):
            if self.size is None or total != self.size:
                r.close()
                raise SourceError(f"{self.shown}: the connection dropped at byte {pos}; the "
                                  "server gives no ETag, no Last-Modified and no total length "
                                  "that matches: a resumed download could not be told from "
                                  "another file, so it is not resumed")
            if not self.warnings:
                self.warnings.append(no_validator_warning(self.shown) + f": resumed at "
                                     f"byte {pos} because the total length matches")

    def read(self, n: int = CHUNK) -> bytes:
        failures = 0
        while True:
            try:
                if self.response is None:
                    self._open(self.pos)
                data = self.response.raw.read(n, decode_content=False)
                if not data and self.size is not None and self.pos < self.size:
                    raise ConnectionError(f"connection closed at byte {self.pos} of {self.size}")
                self.pos += len(data)
                return data
            except _drops() as e:
                if self.response is not None:
                    self.response.close()
                    self.response = None
                failures += 1
                if failures > self.retries:
                    raise SourceError(f"{self.shown}: connection lost at byte {self.pos} "
                                      f"after {self.retries} resumes: {_net_reason(e)}"
                                      ) from None
                self.resumes += 1
                time.sleep(min(self.backoff * failures, 5.0))

    def tail(self, n: int) -> bytes | None:
        if not self.size:
            return None
        n = min(n, self.size)
        try:
            # streamed: a server that ignores Range answers 200 with the whole image,
            # which is then not downloaded (only its headers are read)
            with self.session.get(self.location, timeout=self.timeout, verify=self.verify,
                                  stream=True, headers={"Range": f"bytes={self.size - n}-",
                                                        "Accept-Encoding": "identity"}) as r:
                if r.status_code != 206:
                    return None
                data = r.raw.read(n + 1, decode_content=False)
        except _drops():
            return None
        return data if len(data) == n else None

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        self.session.close()
