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
    Raises ValueError (with the reason) for an empty host or a port outside 1-65535."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        given = rest.lstrip(":") if rest.strip(":") else None
    elif text.count(":") == 1:
        host, given = text.split(":")
    else:
        host, given = text, None
    try:
        number = int(given) if given is not None else (port or DEFAULT_PORT)
    except ValueError:
        raise ValueError(f"the port in {text!r} is not a number") from None
    if not host:
        raise ValueError(f"no address in {text!r}")
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is outside 1-65535")
    return host, number
