"""The example build/netboot/boot.ipxe, turned into an unattended one for the lab."""

from __future__ import annotations

import re
from pathlib import Path


def unattended_ipxe(netboot: Path, base: str, report: str) -> str:
    """The build's ``boot.ipxe`` served from ``base``, its commented unattended line
    (restore with the plan named after the MAC) switched on, reporting to ``report``."""
    script = (netboot / "boot.ipxe").read_text()
    built_base = re.search(r"^set base (\S+)$", script, re.M).group(1)
    script = script.replace(built_base, base)
    script, n = re.subn(r"^# (set rtk rtk\.mode=restore .*)$", r"\1", script, flags=re.M)
    if n != 1:
        raise AssertionError("the example iPXE script lost its unattended line")
    return re.sub(r"rtk\.report=\S+", f"rtk.report={report}", script)
