"""Human-readable sizes, rates and durations (decimal units, as disk vendors print)."""

from __future__ import annotations

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(n: int | float) -> str:
    """``60_000_000_000`` -> ``"60.0 GB"``; bytes below 1 kB are exact."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_rate(bytes_per_second: float) -> str:
    return human_size(bytes_per_second) + "/s"


def human_duration(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``; under an hour ``"2:05"``."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
