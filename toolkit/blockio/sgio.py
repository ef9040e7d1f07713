"""Two SCSI commands through the kernel's SG_IO ioctl: READ CAPACITY (16) and GET LBA
STATUS, to learn which blocks of a thin-provisioned LUN are unmapped.

SBC-3: READ CAPACITY (16) says whether the LUN does logical block
provisioning (LBPME) and whether an unmapped block reads as zeros (LBPRZ);
GET LBA STATUS describes runs of blocks as mapped (0), deallocated (1) or
anchored (2). Only deallocated runs on an LBPRZ LUN are reported here: those
are certain to read as zeros.
"""

from __future__ import annotations

import ctypes
import fcntl

SG_IO = 0x2285
SG_DXFER_FROM_DEV = -3
SERVICE_ACTION_IN_16 = 0x9E
SAI_READ_CAPACITY_16 = 0x10
SAI_GET_LBA_STATUS = 0x12
DEALLOCATED = 1


class SgIoHdr(ctypes.Structure):
    """``struct sg_io_hdr`` (<scsi/sg.h>)."""

    _fields_ = [
        ("interface_id", ctypes.c_int), ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte), ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort), ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p), ("cmdp", ctypes.c_void_p), ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint), ("flags", ctypes.c_uint), ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p), ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte), ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte), ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort), ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint), ("info", ctypes.c_uint),
    ]


class ScsiError(OSError):
    """The command failed or is not supported (CHECK CONDITION, transport error)."""


def command(fd: int, cdb: bytes, length: int, timeout_ms: int = 30_000) -> bytes:
    """Send ``cdb`` (data from the device, up to ``length`` bytes); the bytes received."""
    cmd = ctypes.create_string_buffer(cdb, len(cdb))
    data = ctypes.create_string_buffer(length)
    sense = ctypes.create_string_buffer(32)
    hdr = SgIoHdr(interface_id=ord("S"), dxfer_direction=SG_DXFER_FROM_DEV,
                  cmd_len=len(cdb), mx_sb_len=len(sense), dxfer_len=length,
                  dxferp=ctypes.addressof(data), cmdp=ctypes.addressof(cmd),
                  sbp=ctypes.addressof(sense), timeout=timeout_ms)
    fcntl.ioctl(fd, SG_IO, hdr)
    if hdr.status or hdr.host_status or hdr.driver_status:
        key = sense.raw[2] & 0x0F if hdr.sb_len_wr > 2 else None
        raise ScsiError(f"SCSI command {cdb[0]:#04x}/{cdb[1] & 0x1F:#04x} failed: status "
                        f"{hdr.status:#04x}, host {hdr.host_status}, driver "
                        f"{hdr.driver_status}, sense key {key}")
    return data.raw[:length - max(0, hdr.resid)]


def _service_action_in(action: int, lba: int, length: int) -> bytes:
    return (bytes([SERVICE_ACTION_IN_16, action]) + lba.to_bytes(8, "big")
            + length.to_bytes(4, "big") + bytes(2))


def read_capacity16(fd: int) -> tuple[int, int, bool, bool]:
    """``(blocks, block size, LBPME, LBPRZ)``."""
    r = command(fd, _service_action_in(SAI_READ_CAPACITY_16, 0, 32), 32)
    if len(r) < 16:
        raise ScsiError("READ CAPACITY (16): short answer")
    return (int.from_bytes(r[0:8], "big") + 1, int.from_bytes(r[8:12], "big"),
            bool(r[14] & 0x80), bool(r[14] & 0x40))


def parse_lba_status(data: bytes) -> list[tuple[int, int, int]]:
    """GET LBA STATUS parameter data -> ``[(first LBA, blocks, status)]``."""
    if len(data) < 8:
        return []
    end = min(len(data), 4 + int.from_bytes(data[0:4], "big"))
    return [(int.from_bytes(data[i:i + 8], "big"), int.from_bytes(data[i + 8:i + 12], "big"),
             data[i + 12] & 0x0F) for i in range(8, end - 15, 16)]


def deallocated_runs(fd: int, length: int = 64 * 1024) -> tuple[list[tuple[int, int]], int]:
    """``([(first LBA, blocks)] deallocated, block size)`` of an LBPRZ LUN; raises
    :class:`ScsiError` when the LUN cannot say (no provisioning, or not LBPRZ)."""
    blocks, block_size, lbpme, lbprz = read_capacity16(fd)
    if not (lbpme and lbprz):
        raise ScsiError("the LUN does not report unmapped blocks that read as zeros "
                        f"(LBPME {int(lbpme)}, LBPRZ {int(lbprz)})")
    runs, lba = [], 0
    while lba < blocks:
        descriptors = parse_lba_status(command(fd, _service_action_in(SAI_GET_LBA_STATUS, lba,
                                                                      length), length))
        progressed = False
        for first, count, status in descriptors:
            if count == 0 or first + count <= lba:
                continue
            if first > lba:  # a gap the device did not describe: stop trusting it
                raise ScsiError(f"GET LBA STATUS skipped from LBA {lba} to {first}")
            if status == DEALLOCATED:
                runs.append((lba, first + count - lba))
            lba, progressed = first + count, True
        if not progressed:
            raise ScsiError(f"GET LBA STATUS gave nothing at LBA {lba}")
    return runs, block_size
