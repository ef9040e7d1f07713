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
import stat

from toolkit.blockio import blockdev

CHUNK = 1 << 20


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


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def is_multicast(location: str) -> bool:
    """A ``udpcast://`` image: a live stream, read once (:mod:`toolkit.restore.multicast`)."""
    return location.startswith("udpcast://")


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


def describe_entity(entity: tuple[str | None, str | None, int | None]) -> str:
    """``ETag "x"`` (else ``Last-Modified ...``, else ``N bytes``) of an HTTP source's
    ``entity``."""
    etag, modified, size = entity
    if etag:
        return f"ETag {etag}"
    if modified:
        return f"Last-Modified {modified}"
    return f"{size} bytes, no ETag or Last-Modified" if size is not None else "no validator"


def same_entity(a: tuple, b: tuple) -> bool:
    """Whether two HTTP sources' ``entity`` are the same file, as far as they tell."""
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
    """A :class:`FileSource`, :class:`toolkit.restore.http.HttpSource` or, for ``udpcast://``, a
    :class:`toolkit.restore.multicast.UdpcastSource` (read once) for ``location``."""
    if is_multicast(location):
        from toolkit.restore.multicast import UdpcastSource
        return UdpcastSource(location)
    if is_url(location):
        from toolkit.restore.http import HttpSource
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
