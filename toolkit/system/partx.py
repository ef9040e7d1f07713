"""``partx``: the partition table as the disk holds it, read in user space (libblkid),
and the kernel told about it through BLKPG, which works on any kernel (also one that
parses no partition tables, or a loop device made without ``-P``)."""

from __future__ import annotations

import shlex

from toolkit.system import tools

PARTX = "partx"
COLUMNS = "NR,START,SECTORS,TYPE,NAME,UUID"


def partitions(disk: str, columns: str = COLUMNS) -> list[dict[str, str]]:
    """One dict per partition (``partx -g -b -P -o COLUMNS``); empty when there is no
    table. Raises ToolError when partx is not installed."""
    p = tools.run([PARTX, "-g", "-b", "-P", "-o", columns, disk], check=False, timeout=60)
    if p.returncode != 0:
        return []
    return [dict(kv.split("=", 1) for kv in shlex.split(line) if "=" in kv)
            for line in p.stdout.splitlines() if line.strip()]


def _tell(flag: str, disk: str) -> int:
    # partx exits 1 when there is nothing to do (no table, partitions already known)
    return tools.run([PARTX, flag, disk], check=False, timeout=60).returncode


def add(disk: str) -> int:
    """Add the partitions the kernel does not know yet (``partx -a``)."""
    return _tell("-a", disk)


def update(disk: str) -> int:
    """Update the kernel's partitions to the table (``partx -u``)."""
    return _tell("-u", disk)


def delete(disk: str) -> int:
    """Remove the disk's partitions from the kernel (``partx -d``)."""
    return _tell("-d", disk)
