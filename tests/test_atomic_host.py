"""The one atomic writer (toolkit.atomic.write_atomic) never writes through a name
someone planted: not a symlink at the temporary name, not a target that is a device."""

from __future__ import annotations

import hashlib
import os

import pytest
from conftest import MiB

from toolkit.atomic import write_atomic

pytestmark = pytest.mark.host


def _hash(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_symlink_planted_at_the_temporary_name_does_not_redirect_the_write(tmp_path, loops):
    img = tmp_path / "victim.img"
    img.write_bytes(os.urandom(4 * MiB))
    victim = loops(img)
    before = _hash(victim)
    path = tmp_path / "m.map"
    # the names the old writers used: PATH.tmp and PATH.PID.tmp
    for name in (f"{path}.tmp", f"{path}.{os.getpid()}.tmp"):
        os.symlink(victim, name)
    write_atomic(str(path), "# Mapfile\n0x0 ? 1\n")
    assert path.read_text().startswith("# Mapfile") and not path.is_symlink()
    assert _hash(victim) == before


@pytest.mark.parametrize("kind", ["device", "symlink to a device", "directory"])
def test_a_target_that_is_no_regular_file_is_refused(tmp_path, loops, kind):
    img = tmp_path / "victim.img"
    img.write_bytes(os.urandom(4 * MiB))
    victim = loops(img)
    before = _hash(victim)
    path = tmp_path / "target"
    if kind == "device":
        st = os.stat(victim)
        os.mknod(path, 0o600 | (st.st_mode & 0o170000), st.st_rdev)
    elif kind == "symlink to a device":
        os.symlink(victim, path)
    else:
        path.mkdir()
    with pytest.raises(OSError, match="not a regular file"):
        write_atomic(str(path), "x")
    assert _hash(victim) == before
    assert not list(tmp_path.glob("target.*.tmp"))
