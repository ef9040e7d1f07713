"""Which partition types hold exactly one filesystem, from the partition's first byte to
its end at most: the only partitions whose free blocks a used-blocks copy may leave out.

A filesystem's map (:mod:`toolkit.copy.partclone`) reads the filesystem as if its bytes
were the partition's, contiguous from its start. A volume manager breaks that: a Windows
dynamic disk (LDM, MBR type 0x42) keeps its volumes in extents anywhere in the partition
(a simple volume extended later has a second extent after another volume: its boot
sector at the partition's start says it is as large as both, and its "free tail" on the
map is the other volume's bytes), and so do LVM, Storage Spaces and RAID members. So
the type decides, not what blkid finds at the start: an allowlist of the types made for
one filesystem; every other type is copied in full (:func:`problem` says why).
"""

from __future__ import annotations

# MBR types (partx: "0x7"): FAT12/16/32, NTFS/exFAT/HPFS, their hidden variants, the
# Windows RE partition (0x27), Linux, the EFI System partition on MBR.
MBR = {"1", "4", "6", "7", "b", "c", "e", "11", "14", "16", "17", "1b", "1c", "1e", "27",
       "83", "ef"}
GPT = {
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",  # Microsoft basic data
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac",  # Windows recovery environment (NTFS)
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",  # EFI System
    "0fc63daf-8483-4772-8e79-3d69d8477de4",  # Linux filesystem
    # the Discoverable Partitions Specification: root (x86-64, x86, arm64, arm), usr
    # (x86-64, arm64), home, srv, var, tmp, the extended boot loader partition
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "44479540-f297-41b2-9af7-d131d5f0458a",
    "b921b045-1df0-41c3-af44-4c6f280d3fae", "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
    "8484680c-9521-48c6-9c11-b0720656f69e", "b0e01050-ee5f-4390-949a-9101b17104e9",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915", "3b8f8425-20e0-4f3b-907f-1a25a76f98e8",
    "4d21b016-b534-45c2-a9fb-5c16e091fd2d", "7ec6f557-3bca-4aca-b293-16ef5df639d1",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172",
}
LDM = "a dynamic disk (LDM) partition: its volumes may span partitions: copied in full"
MANAGED = {  # types known to hold a volume manager's pieces -> why in full
    "42": LDM,
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": LDM,  # LDM metadata
    "af9b60a0-1431-4f62-bc68-3311714a69ad": LDM,  # LDM data
    "e75caf8f-f680-4cee-afa3-b001e56efc2d":
        "a Storage Spaces partition: its volumes may span disks: copied in full",
    "8e": "an LVM physical volume: its logical volumes may span partitions: copied in full",
    "e6d6d379-f507-44c2-a23c-238f2a3df928":
        "an LVM physical volume: its logical volumes may span partitions: copied in full",
    "fd": "a RAID member: copied in full",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "a RAID member: copied in full",
}


def problem(label: str, kind: str | None) -> str:
    """Why a partition of type ``kind`` (partx's TYPE: ``0x7``, a GPT type GUID) on a
    ``label`` (``dos``, ``gpt``) table is copied in full whatever it holds; "" when its
    type is made for one filesystem."""
    kind = (kind or "").strip().lower().removeprefix("0x")
    if not kind:
        return "its partition type could not be read: copied in full"
    if kind in MANAGED:
        return MANAGED[kind]
    if kind in (MBR if label == "dos" else GPT):
        return ""
    shown = f"0x{kind}" if label == "dos" else kind
    return f"partition type {shown} is not known to hold exactly one filesystem: copied in full"
