"""Where an image comes from: a local file or an HTTP(S) URL, read as a byte stream.

:func:`open_source` returns a :class:`Source` with ``read(n)`` (sequential,
``b""`` at the end), ``size`` (bytes, or None when unknown) and ``tail(n)``
(the last bytes, for format footers such as VHD's). An HTTP source resumes
with a ``Range: bytes=POS-`` request when the connection drops, up to
``retries`` times in a row, with ``If-Range`` and the first answer's validator
(a strong ETag, else Last-Modified). The answer must be a 206 from ``POS``
whose validators and total length are the first answer's: a 200 with another
validator (the If-Range failed) or a 206 with another ETag, Last-Modified or
length is :class:`EntityChanged` (the file changed on the server: never
spliced; the caller restarts from zero or stops), a server that ignores Range
fails the restore instead of corrupting it. Without any validator a resume is
taken only when the total length matches, with a warning (``warnings``).
A local path must be a regular file or a block device: a directory, a pipe or
a character device is refused in plain words (a pipe cannot be read twice, and
the restore reads the image more than once: probe, checksum, write).
TLS is verified by default (the system's CAs, or ``ca_file``, checked first by
:func:`check_ca_file`); ``insecure`` turns verification off, and must be asked
for explicitly.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time

from toolkit.blockio import blockdev

CHUNK = 1 << 20


def _drops() -> tuple:
    """What a dropped connection raises. requests is imported only for an HTTP source:
    it takes a tenth of a second, most of a local restore's start-up."""
    import requests
    import urllib3
    return (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.Timeout, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class SourceError(OSError):
    """The image cannot be read (missing, HTTP error, connection lost for good).

    Made as ``SourceError(errno, message)`` or ``SourceError(message)``; ``str()`` is the
    message alone, never Python's ``[Errno N]``."""

    def __str__(self) -> str:
        return self.strerror if self.errno is not None and self.strerror else super().__str__()


class EntityChanged(SourceError):
    """The file changed on the server during the download: its validator (ETag or
    Last-Modified) or its length is not the first answer's. ``old``, ``new``: both."""

    def __init__(self, location: str, old: str, new: str):
        super().__init__(f"the image changed on the server during the download ({old}, now "
                         f"{new})")
        self.location, self.old, self.new = location, old, new


def os_reason(e: OSError) -> str:
    """An OSError in plain words, without Python's ``[Errno N]``: "permission denied"."""
    if isinstance(e, SourceError):
        return str(e)
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ENOENT:
        return "no such file or device"
    return e.strerror or str(e) or type(e).__name__


PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def check_ca_file(path: str) -> str | None:
    """What is wrong with ``path`` as a CA file (PEM certificates), or None."""
    if not os.path.exists(path):
        return f"the CA file {path} does not exist"
    if os.path.isdir(path):
        return f"{path} is a directory: give the CA certificate file (PEM)"
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        return f"cannot read the CA file {path}: {e.strerror}"
    if PEM_CERT not in data:
        return (f"{path} holds no PEM certificate ({PEM_CERT.decode()}); a DER file (.cer, "
                f".der) converts with: openssl x509 -inform der -in {path} -out ca.pem")
    return None


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


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class Source:
    """A sequential byte stream; ``pos`` counts the bytes handed out by :meth:`read`."""

    location: str = ""
    size: int | None = None
    pos: int = 0
    resumes: int = 0  # HTTP: connections resumed with Range

    def read(self, n: int = CHUNK) -> bytes:
        raise NotImplementedError

    def tail(self, n: int) -> bytes | None:
        """The last ``n`` bytes, or None when they cannot be had without reading it all."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileSource(Source):
    def __init__(self, path: str):
        self.location = path
        try:
            st = os.stat(path)
        except OSError as e:
            raise _open_error(path, e) from None
        if stat.S_ISDIR(st.st_mode):
            raise SourceError(errno.EISDIR, f"{path} is a directory, not an image file")
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            raise SourceError(errno.ESPIPE, f"{path} is a pipe: the restore reads the image "
                                            "more than once (to probe it, check it and write "
                                            "it); save it to a file or serve it over HTTP")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise SourceError(errno.EINVAL, f"{path} is neither a file nor a block device")
        try:
            self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise _open_error(path, e) from None
        st = os.fstat(self.f.fileno())
        # a block device (an iSCSI LUN holding a raw image) has no st_size: ask the kernel
        self.size = (blockdev.device_size(self.f.fileno()) if stat.S_ISBLK(st.st_mode)
                     else st.st_size)

    def read(self, n: int = CHUNK) -> bytes:
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def tail(self, n: int) -> bytes | None:
        n = min(n, self.size or 0)
        return os.pread(self.f.fileno(), n, (self.size or 0) - n)

    def close(self) -> None:
        self.f.close()


def _open_error(path: str, e: OSError) -> SourceError:
    if e.errno == errno.ENOENT:
        return SourceError(e.errno, f"the image {path} does not exist")
    if e.errno in (errno.EACCES, errno.EPERM):
        return SourceError(e.errno, f"cannot open the image {path}: permission denied (rtk "
                                    "runs as root, with access to the devices)")
    return SourceError(e.errno, f"cannot open the image {path}: {os_reason(e)}")


class HttpSource(Source):
    """GET with ``stream=True``; on a dropped connection, GET again from ``pos`` with Range
    and If-Range. ``etag``, ``last_modified``: the first answer's validators; ``changed``:
    the :class:`EntityChanged` raised, if any; ``warnings``: resumes without a validator."""

    def __init__(self, url: str, *, ca_file: str | None = None, insecure: bool = False,
                 timeout: float = 30.0, retries: int = 10, backoff: float = 0.5):
        self.location, self.timeout, self.retries, self.backoff = url, timeout, retries, backoff
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
            raise SourceError(f"cannot reach {self.location}: {_net_reason(e)} (is the server "
                              "up, and this machine's network configured?)") from None

    def _get(self, headers: dict):
        import requests
        try:
            r = self.session.get(self.location, headers=headers, stream=True,
                                 timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as e:
            raise SourceError(f"TLS verification failed for {self.location}: {_tls_reason(e)} "
                              "(give the CA certificate that signed the server's: a CA file, "
                              "--ca-file; or skip TLS verification, --insecure)") from None
        if r.status_code == 404:
            r.close()
            raise SourceError(2, f"{self.location}: not found (HTTP 404)")
        if r.status_code >= 400:
            r.close()
            raise SourceError(f"{self.location}: HTTP {r.status_code} {r.reason}")
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
            raise SourceError(f"{self.location}: the connection dropped at byte {pos}; the "
                              "server answered the resume with the whole file and no "
                              "validator, so it may have changed: the server cannot resume "
                              "there")
        if r.status_code != 206 or not m or int(m.group(1)) != pos:
            r.close()
            raise SourceError(f"{self.location}: the connection dropped at byte {pos} and "
                              f"the server cannot resume there (HTTP {r.status_code}, no "
                              "matching Range answer)")
        if not (self.etag or self.last_modified):
            if self.size is None or total != self.size:
                r.close()
                raise SourceError(f"{self.location}: the connection dropped at byte {pos}; the "
                                  "server gives no ETag, no Last-Modified and no total length "
                                  "that matches: a resumed download could not be told from "
                                  "another file, so it is not resumed")
            if not self.warnings:
                self.warnings.append(no_validator_warning(self.location) + f": resumed at "
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
                    raise SourceError(f"{self.location}: connection lost at byte {self.pos} "
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


def describe_entity(entity: tuple[str | None, str | None, int | None]) -> str:
    """``ETag "x"`` (else ``Last-Modified ...``, else ``N bytes``) of :attr:`HttpSource.entity`."""
    etag, modified, size = entity
    if etag:
        return f"ETag {etag}"
    if modified:
        return f"Last-Modified {modified}"
    return f"{size} bytes, no ETag or Last-Modified" if size is not None else "no validator"


def same_entity(a: tuple, b: tuple) -> bool:
    """Whether two :attr:`HttpSource.entity` are the same file, as far as they tell."""
    (etag_a, mod_a, size_a), (etag_b, mod_b, size_b) = a, b
    if etag_a or etag_b:
        return etag_a == etag_b and size_a == size_b
    if mod_a or mod_b:
        return mod_a == mod_b and size_a == size_b
    return size_a == size_b


def no_validator_warning(location: str) -> str:
    return (f"the server of {location} gives no ETag or Last-Modified: a download resumed "
            "after a drop cannot be checked to be the same file (only its length can)")


def open_source(location: str, *, ca_file: str | None = None, insecure: bool = False,
                **http) -> Source:
    """A :class:`FileSource` or :class:`HttpSource` for ``location``."""
    if is_url(location):
        return HttpSource(location, ca_file=ca_file, insecure=insecure, **http)
    return FileSource(location)  # ca_file and insecure mean nothing for a file


def read_full(reader, n: int) -> bytes:
    """Exactly ``n`` bytes from ``reader`` (fewer only at its end)."""
    parts, got = [], 0
    while got < n:
        data = reader.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def read_small(location: str, *, limit: int = 1 << 16, **kw) -> bytes | None:
    """A small file (a ``.sha256``) in full, or None when it does not exist."""
    try:
        with open_source(location, **kw) as s:
            return read_full(s, limit)
    except SourceError as e:
        if e.errno == 2:
            return None
        raise
