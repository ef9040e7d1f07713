"""What a restored disk holds: partition table, partitions, filesystems, operating system.

All read in user space, without mounting (the live kernel may lack vfat and
ntfs drivers, and a restored filesystem should not be touched before it is
checked): ``partx`` and ``blkid -p`` for the table and filesystems, ``mtools``
(``mdir``) inside a FAT ESP, ``ntfsls`` (ntfs-3g) inside NTFS, ``debugfs``
inside ext2/3/4, ``xfs_db -r`` inside XFS (neither claims the partition, which the
write gate may hold). An NTFS volume with ``Windows/System32`` is Windows; an ext or
XFS filesystem with ``/etc/os-release`` (else ``/usr/lib/os-release``, as
os-release(5) says; files read by :mod:`toolkit.restore.fs_files`, which follows
Debian's symlink from one to the other) is Linux (its PRETTY_NAME). A BitLocker or
LUKS volume (blkid's TYPE) is marked ``encrypted`` and not looked into.
"""

from __future__ import annotations

import os

from toolkit.restore.fs_files import EXT, Unreadable, read_file, tool_output
from toolkit.system import blkid, partx, udev

ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ESP_MBR = "0xef"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
ENCRYPTED = {"BitLocker": "BitLocker", "crypto_LUKS": "LUKS"}  # blkid's TYPE -> the name


def partition_node(disk: str, number: int) -> str:
    """``/dev/sdb`` 1 -> ``/dev/sdb1``; ``/dev/loop0``, ``/dev/nvme0n1`` -> ``...p1``."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def refresh_partitions(disk: str) -> None:
    """Tell the kernel about the new table: BLKRRPART, then partx (works on any kernel,
    including one that parses no partition tables), and wait for the nodes: udev's
    settle, then polling /dev (without udev, devtmpfs makes the nodes)."""
    partx.refresh(disk)  # BLKRRPART, else partx; stale partitions removed, caches dropped
    udev.wait_for_nodes([p["node"] for p in partitions(disk)], timeout=5)


def table_type(disk: str) -> str | None:
    """``gpt``, ``dos`` or None (blkid probing the device itself)."""
    return blkid.probe(disk).get("PTTYPE") or None


def partitions(disk: str) -> list[dict]:
    """Each partition: number, node, start and size in bytes, type, name, uuid."""
    rows = []
    for d in partx.partitions(disk, "NR,START,SECTORS,TYPE,NAME,UUID"):
        n = int(d["NR"])
        rows.append({"number": n, "node": partition_node(disk, n),
                     "start": int(d["START"]) * 512, "size": int(d["SECTORS"]) * 512,
                     "type": d.get("TYPE", "").lower(), "name": d.get("NAME") or None,
                     "uuid": d.get("UUID") or None})
    return rows


def filesystem(node: str) -> dict:
    """``{"fstype", "label", "fs_uuid"}`` of a partition, from blkid's own probe."""
    d = blkid.probe(node)
    return {"fstype": d.get("TYPE"), "label": d.get("LABEL"), "fs_uuid": d.get("UUID")}


def is_esp(part: dict) -> bool:
    return part.get("type") in (ESP_GUID, ESP_MBR)


def esp_loaders(node: str) -> list[str]:
    """The ``.efi`` files under ``/EFI`` of a FAT partition, as ``\\EFI\\...`` paths."""
    out = tool_output("mdir", "-i", node, "-/", "-b", "::/EFI", env=MTOOLS_ENV) or ""
    found = []
    for line in out.splitlines():
        path = line.strip()
        if path.lower().endswith(".efi"):
            found.append("\\" + path.removeprefix("::").lstrip("/").replace("/", "\\"))
    return sorted(found)


def windows_on(node: str) -> bool:
    return tool_output("ntfsls", "-f", "-p", "/Windows/System32", node) is not None


OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def parse_os_release(text: str | None) -> dict[str, str] | None:
    """``KEY=value`` lines (quotes stripped); None when there is none."""
    if not text or "=" not in text:
        return None
    return {k.strip(): v.strip().strip('"') for k, v in
            (line.split("=", 1) for line in text.splitlines() if "=" in line)}


def os_release(node: str, fstype: str = "ext4") -> dict[str, str] | None:
    """The os-release of the ext or XFS filesystem on ``node`` (None: none found)."""
    for path in OS_RELEASE:
        try:
            text = read_file(node, fstype, path)
        except Unreadable:  # too large, not a file: not an os-release to go by
            continue
        if found := parse_os_release(text):
            return found
    return None


def inspect_disk(disk: str) -> dict:
    """Table type, partitions with their filesystems, the ESP's loaders and the OS found."""
    parts = partitions(disk)
    systems = []
    for p in parts:
        p.update(filesystem(p["node"]) if os.path.exists(p["node"]) else {"fstype": None})
        fs = p.get("fstype")
        if fs in ENCRYPTED:
            p["encrypted"] = ENCRYPTED[fs]
        elif fs == "vfat" and (is_esp(p) or p["number"] == 1):
            p["efi_loaders"] = esp_loaders(p["node"])
        elif fs == "ntfs" and windows_on(p["node"]):
            p["os"] = "Windows"
            systems.append({"os": "Windows", "partition": p["number"],
                            "name": "Windows (\\Windows\\System32 found)"})
        elif fs in EXT or fs == "xfs":
            rel = os_release(p["node"], fs)
            if rel:
                p["os"] = "Linux"
                systems.append({"os": "Linux", "partition": p["number"],
                                "name": rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux"})
    return {"table": table_type(disk), "partitions": parts, "systems": systems}
