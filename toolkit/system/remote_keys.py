"""Public keys for remote access: parsed from the kernel command line (``rtk.ssh=``), an
``authorized_keys`` file (``rtk.ssh_keys=URL``) or a host key's ``.pub`` file, checked,
and their fingerprints computed as OpenSSH does (``SHA256:`` and the unpadded base64 of
the SHA-256 of the key blob, what ``ssh-keygen -l`` and ``ssh`` print).

The command line form of a key has no space (the kernel splits parameters at spaces,
and boot loaders and iPXE scripts quote badly): ``TYPE:BASE64`` (the two first fields of
the ``.pub`` line, a colon for the space; the comment left out), e.g.
``rtk.ssh=ssh-ed25519:AAAAC3NzaC1lZDI1NTE5AAAAIB...``. The base64 may use the URL-safe
alphabet (``-`` and ``_`` for ``+`` and ``/``) and leave out its ``=`` padding; several
keys are separated by commas (base64 has none), or the parameter is repeated. The
``.pub`` line itself, its spaces written ``%20``, is read too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "ssh-rsa", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")
MIN_RSA_BITS = 2048
MAX_KEYS = 100
MAX_FILE = 64 * 1024  # an authorized_keys file from a URL
MAX_BLOB = 16 * 1024  # an RSA key of 16384 bits is about 2 KiB


class KeyRefused(ValueError):
    """Not a public key we accept; the message says why (and never shows the key whole)."""


@dataclass(frozen=True)
class PublicKey:
    kind: str  # ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa...
    blob: bytes  # the key, as the base64 field of a .pub line holds it
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def line(self) -> str:
        """The key as one line of an authorized_keys file."""
        b64 = base64.b64encode(self.blob).decode("ascii")
        return f"{self.kind} {b64}" + (f" {self.comment}" if self.comment else "")

    def to_dict(self) -> dict:
        return {"type": self.kind, "fingerprint": self.fingerprint, "comment": self.comment}


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA-256 fingerprint of a key blob: ``SHA256:`` + unpadded base64."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def _strings(blob: bytes, count: int) -> list[bytes]:
    """The first ``count`` SSH wire-format strings (uint32 length, bytes) of ``blob``."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(blob):
            raise ValueError("truncated")
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        if pos + 4 + n > len(blob):
            raise ValueError("truncated")
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _b64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional; ValueError if it is neither."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", text):
        raise ValueError("not base64")
    text = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def _short(text: str) -> str:
    """A piece of a rejected value that can be shown: printable, at most 24 characters."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 24 else text[:20] + "..."


def make_key(kind: str, data: str, comment: str = "", where: str = "key") -> PublicKey:
    """A key from its type and base64 field, checked: a type OpenSSH accepts, base64
    that holds a key of that very type, an RSA key of at least MIN_RSA_BITS bits."""
    if kind == "ssh-dss":
        raise KeyRefused(f"{where}: a DSA key (ssh-dss): OpenSSH no longer accepts them; "
                         "use an ed25519 key (ssh-keygen -t ed25519)")
    if kind not in KEY_TYPES:
        raise KeyRefused(f"{where}: {_short(kind)!r} is not a public key type; expected "
                         f"one of {', '.join(KEY_TYPES)} (the start of the .pub file)")
    try:
        blob = _b64(data)
        if len(blob) > MAX_BLOB:
            raise ValueError("too long")
        inner = _strings(blob, 1)
        if inner[0] == kind.encode() and kind == "ssh-rsa":
            inner = _strings(blob, 3)  # type, e, n
    except ValueError:
        raise KeyRefused(f"{where}: the {kind} key {_short(data)!r} is not valid base64 "
                         "of a public key (copy the second field of the .pub file whole)"
                         ) from None
    if inner[0] != kind.encode():
        raise KeyRefused(f"{where}: the key data is of type "
                         f"{_short(inner[0].decode('ascii', 'replace'))!r}, not {kind}")
    if kind == "ssh-rsa":
        n = inner[2].lstrip(b"\0")
        bits = len(n) * 8 - (8 - n[0].bit_length()) if n else 0
        if bits < MIN_RSA_BITS:
            raise KeyRefused(f"{where}: an RSA key of {bits} bits: at least {MIN_RSA_BITS} "
                             "are needed (or use an ed25519 key)")
    comment = "".join(c for c in comment if c.isprintable())[:200]
    return PublicKey(kind, blob, comment)


def parse_inline(value: str, where: str = "rtk.ssh") -> list[PublicKey]:
    """``TYPE:BASE64[,TYPE:BASE64...]`` (or a .pub line, spaces decoded) -> keys."""
    keys = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if " " in item:  # a .pub line: TYPE BASE64 [comment]
            kind, data, comment = [*item.split(None, 2), "", ""][:3]
        else:
            kind, _, data = item.partition(":")
            comment = ""
        if not data:
            raise KeyRefused(f"{where}: {_short(item)!r} is not TYPE:BASE64 (the .pub "
                             "file's first two fields, a colon between them)")
        keys.append(make_key(kind, data, comment, where))
    if not keys:
        raise KeyRefused(f"{where}: no key given; write {where}=TYPE:BASE64")
    return keys


def parse_authorized_keys(text: str, where: str) -> list[PublicKey]:
    """An authorized_keys file (``TYPE BASE64 [comment]`` lines; blank lines and ``#``
    comments skipped) -> keys. Lines with options (``command=...``, ``from=...``) are
    refused: the login's restrictions are the toolkit's own."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if fields[0] not in KEY_TYPES and fields[0] != "ssh-dss" and len(fields) > 1 \
                and fields[1] in KEY_TYPES:
            raise KeyRefused(f"{where}, line {number}: key options ({_short(fields[0])}) "
                             "are not supported: give the key alone")
        if len(fields) < 2:
            raise KeyRefused(f"{where}, line {number}: expected TYPE BASE64 [comment]")
        keys.append(make_key(fields[0], fields[1], fields[2] if len(fields) > 2 else "",
                             f"{where}, line {number}"))
    if not keys:
        raise KeyRefused(f"{where}: the file holds no public key")
    if len(keys) > MAX_KEYS:
        raise KeyRefused(f"{where}: more than {MAX_KEYS} keys")
    return keys


def read_pub(text: str, where: str) -> PublicKey:
    """A ``.pub`` file's one line (a host key's, ``ssh_host_ed25519_key.pub``)."""
    return parse_authorized_keys(text, where)[0]


def check_url(value: str, where: str = "rtk.ssh_keys") -> str:
    """An http(s) URL with a host (the keys file); the value is not shown in the error
    (a URL may hold a token)."""
    try:
        u = urlsplit(value)
        ok = u.scheme in ("http", "https") and bool(u.hostname) and u.port != 0
    except ValueError:
        ok = False
    if not ok:
        raise KeyRefused(f"{where}: expected an http:// or https:// URL of an "
                         "authorized_keys file")
    return value
