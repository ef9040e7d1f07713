"""The kernel read-only flag of SOURCE disks, on a loop device (the role registry:
test_disks_roles_unit.py)."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import MiB
from loopdev import make_image

from toolkit.disks import roles

pytestmark = pytest.mark.host


def test_source_disk_refuses_writes(tmp_path, loops, run_dir):
    """BLKROSET on the disk and its partitions: a write fails with EPERM, even from root."""
    dev = loops(make_image(tmp_path / "src.img", 8 * MiB))
    roles.set_read_only([dev])
    try:
        assert roles.is_read_only(dev)
        fd = os.open(dev, os.O_WRONLY)
        try:
            with pytest.raises(OSError) as ei:
                os.write(fd, b"x" * 512)
            assert ei.value.errno in (errno.EPERM, errno.EROFS)
        finally:
            os.close(fd)
    except OSError as e:  # a kernel that refuses the open itself is fine too
        assert e.errno in (errno.EPERM, errno.EROFS, errno.EACCES)
    finally:
        roles.set_read_only([dev], False)
    assert not roles.is_read_only(dev)
