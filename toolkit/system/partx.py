"""``partx``: the partition table as the disk holds it, read in user space (libblkid),
and the kernel told about it through BLKPG, which works on any kernel (also one that
parses no partition tables, or a loop device made without ``-P``)."""

from __future__ import annotations

import glob
import os
import shlex

from toolkit.system import tools, udev

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


def kernel_numbers(disk: str) -> set[int]:
    """The numbers of the partitions the kernel has of ``disk`` (sysfs)."""
    name = os.path.basename(os.path.realpath(disk))
    found = set()
    for d in glob.glob(f"/sys/class/block/{name}/{name}*/partition"):
        try:
            with open(d) as f:
                found.add(int(f.read()))
        except (OSError, ValueError):
            continue
    return found


def refresh(disk: str) -> None:
    """After ``disk`` was written whole (a copy, a restore): the kernel's partitions made
    to match its new table, and their cached blocks dropped. BLKRRPART (``blockdev
    --rereadpt``) where the kernel parses tables and nothing holds a partition; else, and
    always after it, partx: ``-d`` for each partition the table no longer has, ``-u``,
    ``-a``; then BLKFLSBUF on every partition (a buffered read, blkid's, would still see
    the old contents), and udev's settle."""
    tools.run(["blockdev", "--rereadpt", disk], check=False, timeout=60)
    table = {int(d["NR"]) for d in partitions(disk, "NR") if d.get("NR", "").isdigit()}
    for n in sorted(kernel_numbers(disk) - table):
        tools.run([PARTX, "-d", "--nr", str(n), disk], check=False, timeout=60)
    update(disk)
    add(disk)
    name = os.path.basename(os.path.realpath(disk))
    for n in sorted(kernel_numbers(disk)):
        node = f"/dev/{name}{'p' if name[-1].isdigit() else ''}{n}"
        if os.path.exists(node):
            tools.run(["blockdev", "--flushbufs", node], check=False, timeout=60)
    udev.settle(10)
