"""An iSCSI portal, ``host:port``: the one place that writes and reads one.

An IPv6 address goes in brackets (``[fd00::5]:3260``, as iscsiadm writes and
expects it); an IPv4 address or a host name does not. Pure, with no imports.
"""

from __future__ import annotations

DEFAULT_PORT = 3260

# ``ADDRESS:PORT,TPGT`` as iscsiadm prints it (discovery, node and session lists):
# groups addr (brackets kept), port, tpgt.
PORTAL_TPGT = r"(?P<addr>\[[^\]]+\]|[^\s,\[\]]+?):(?P<port>\d+),(?P<tpgt>-?\d+)"


def format_portal(host: str | None, port: int | str | None) -> str:
    """``10.0.0.5:3260``, ``[fd00::5]:3260``, ``san.example:3261`` (``?`` for a part not
    known, as a half-torn sysfs session shows)."""
    host = (host or "?").strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port if port not in (None, '') else '?'}"


def split_portal(text: str, port: int | None = None) -> tuple[str, int]:
    """``"10.0.0.5"``, ``"10.0.0.5:3261"``, ``"[fd00::5]:3260"`` or ``"fd00::5"`` ->
    (host, port); an explicit ``port`` wins over the default, not over ``host:port``.

    Raises ValueError, with a message that names the portal and what is wrong, for an
    empty host, a ``[`` without its ``]`` (or the reverse), anything but ``:PORT`` after
    ``]``, a port that is missing or not a number, a port outside 1-65535, a space."""
    text = text.strip()
    shown = f"portal {text!r}"
    if any(c.isspace() for c in text):
        raise ValueError(f"{shown} has a space in it")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise ValueError(f"{shown} is missing its closing ']'")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{shown}: after ']' a portal takes ':PORT'")
        given = rest[1:] if rest else None
    elif "[" in text:
        raise ValueError(f"{shown} has a '[' that does not start it: only an IPv6 "
                         "address goes in brackets, [ADDRESS]:PORT")
    elif "]" in text:
        raise ValueError(f"{shown} has a ']' without its opening '['")
    elif text.count(":") == 1:
        host, given = text.split(":")
    else:  # a host name, an IPv4 address, or a bare IPv6 address (no port then)
        host, given = text, None
    if not host or "[" in host or "]" in host:
        raise ValueError(f"{shown} has no address" if not host
                         else f"{shown} has a '[' or ']' inside the address")
    if given == "":
        raise ValueError(f"{shown} has no port after ':'")
    if given is not None and not (given.isascii() and given.isdigit()):
        raise ValueError(f"{shown}: the port {given!r} is not a number")
    number = int(given) if given is not None else (DEFAULT_PORT if port is None else port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is outside 1-65535")
    return host, number
