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


def _strings(blob: bytes) -> list[bytes]:
    """Every SSH wire-format string (uint32 length, bytes) of ``blob``, to its end;
    ValueError if one is cut short."""
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ValueError("truncated")
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        if pos + 4 + n > len(blob):
            raise ValueError("truncated")
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


# The NIST curves of ECDSA keys: the bytes of a coordinate, the prime p and the constant
# b of y^2 = x^3 - 3x + b (mod p), from SEC 2 / FIPS 186-4.
CURVES = {
    "nistp256": (32, 2**256 - 2**224 + 2**192 + 2**96 - 1,
                 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B),
    "nistp384": (48, 2**384 - 2**128 - 2**96 + 2**32 - 1,
                 int("B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE814112"
                     "0314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF", 16)),
    "nistp521": (66, 2**521 - 1,
                 int("0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
                     "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00", 16)),
}
# the fields of each type's blob after its name: what each holds
FIELDS = {"ssh-ed25519": ("key",), "sk-ssh-ed25519@openssh.com": ("key", "application"),
          "ssh-rsa": ("e", "n"), "sk-ecdsa-sha2-nistp256@openssh.com":
          ("curve", "point", "application")}


def _on_curve(curve: str, point: bytes) -> bool:
    """An uncompressed point (0x04, X, Y) of ``curve`` that lies on it (what OpenSSH
    checks before it takes an ECDSA key; it accepts no compressed point)."""
    size, p, b = CURVES[curve]
    if len(point) != 1 + 2 * size or point[0] != 4:
        return False
    x, y = int.from_bytes(point[1:1 + size], "big"), int.from_bytes(point[1 + size:], "big")
    return x < p and y < p and (y * y - (x * x * x - 3 * x + b)) % p == 0


def _mpint(data: bytes) -> int:
    if data[:1] and data[0] & 0x80:
        raise ValueError("negative")
    return int.from_bytes(data, "big")


def _check_fields(kind: str, fields: list[bytes]) -> str | None:
    """What is wrong with the fields of a key blob of type ``kind`` (after its name), as
    OpenSSH reads them, or None: every field there and nothing after them."""
    names = FIELDS.get(kind, ("curve", "point"))  # ecdsa-sha2-nistpNNN
    if len(fields) != len(names):
        return "it has the wrong number of fields (cut short, or bytes left over)"
    got = dict(zip(names, fields, strict=True))
    if "key" in got and len(got["key"]) != 32:
        return f"an ed25519 key is 32 bytes, not {len(got['key'])}"
    if "curve" in got:
        curve = kind.removeprefix("sk-").split("@")[0].removeprefix("ecdsa-sha2-")
        if got["curve"] != curve.encode():
            return f"its curve is not {curve}"
        if not _on_curve(curve, got["point"]):
            return f"its point is not a point of {curve}"
    if b"\0" in got.get("application", b""):
        return "its application name is not text"
    if kind == "ssh-rsa":
        e, n = _mpint(got["e"]), _mpint(got["n"])
        if e < 3 or e % 2 == 0 or n % 2 == 0:
            return "its exponent or modulus is not one of an RSA key"
    return None


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
    that holds a key of that very type whose fields are those of such a key (a key of 32
    bytes, a point on the curve, an RSA modulus of at least MIN_RSA_BITS bits, nothing
    left over)."""
    if kind == "ssh-dss":
        raise KeyRefused(f"{where}: a DSA key (ssh-dss): OpenSSH no longer accepts them; "
                         "use an ed25519 key (ssh-keygen -t ed25519)")
    if kind not in KEY_TYPES:
        raise KeyRefused(f"{where}: {_short(kind)!r} is not a public key type; expected "
                         f"one of {', '.join(KEY_TYPES)} (the start of the .pub file)")
    wrong = None
    try:
        blob = _b64(data)
        if len(blob) > MAX_BLOB:
            raise ValueError("too long")
        inner = _strings(blob)
        if not inner:
            raise ValueError("empty")
        if inner[0] == kind.encode():
            wrong = _check_fields(kind, inner[1:])
    except ValueError:
        raise KeyRefused(f"{where}: the {kind} key {_short(data)!r} is not valid base64 "
                         "of a public key (copy the second field of the .pub file whole)"
                         ) from None
    if inner[0] != kind.encode():
        raise KeyRefused(f"{where}: the key data is of type "
                         f"{_short(inner[0].decode('ascii', 'replace'))!r}, not {kind}")
    if wrong:
        raise KeyRefused(f"{where}: the {kind} key {_short(data)!r} is not a valid key: "
                         f"{wrong} (copy the second field of the .pub file whole)")
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


PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")  # the fragment of a pinned URL


def url_pin(value: str) -> tuple[str, str | None]:
    """``(URL without its fragment, the SHA-256 it pins or None)``: a keys URL may end in
    ``#sha256=HEX`` (a fragment is never sent to the server)."""
    url, _, fragment = value.partition("#")
    m = PIN.fullmatch(fragment)
    return url, m.group(1).lower() if m else None


def check_url(value: str, where: str = "rtk.ssh_keys") -> str:
    """The URL of an authorized_keys file: https:// (TLS verified), or http:// with the
    file's SHA-256 pinned (``http://HOST/keys#sha256=HEX``): over plain HTTP anyone on
    the way could hand over their own keys, which log in as root. The value is not shown
    in the error (a URL may hold a token)."""
    url, pin = url_pin(value)
    try:
        u = urlsplit(url)
        ok = u.scheme in ("http", "https") and bool(u.hostname) and u.port != 0
    except ValueError:
        ok = False
    if not ok or ("#" in value and pin is None):
        raise KeyRefused(f"{where}: expected an https:// URL of an authorized_keys file "
                         "(or http:// with the file's SHA-256: http://HOST/PATH#sha256=HEX)")
    if u.scheme == "http" and pin is None:
        raise KeyRefused(f"{where}: an http:// URL needs the file's SHA-256 at its end "
                         "(http://HOST/PATH#sha256=HEX, from sha256sum): over plain HTTP "
                         "anyone on the way could give their own keys; or use https://")
    return value
