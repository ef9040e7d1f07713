"""Shared fixtures. Layers (pytest markers): unit (seconds), host (root, loop
devices, mkfs), vm (boots the built ISO in QEMU). Select with -m."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_itemcollected(item):
    """A test with no layer marker is a unit test (marked before -m selects)."""
    if not any(item.get_closest_marker(m) for m in ("unit", "host", "vm")):
        item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def iso() -> Path:
    path = Path(os.environ.get("RTK_ISO", ROOT / "build" / "rtk.iso"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: run ./build_iso.sh first (or set RTK_ISO)")
    return path.resolve()


@pytest.fixture(scope="session")
def netboot() -> Path:
    """build/netboot: vmlinuz, initrd.img, filesystem.squashfs and the example entries."""
    path = Path(os.environ.get("RTK_NETBOOT", ROOT / "build" / "netboot"))
    if not (path / "filesystem.squashfs").exists():
        pytest.fail(f"{path} has no netboot artifacts: run ./build_iso.sh first "
                    "(or set RTK_NETBOOT)")
    return path.resolve()


@pytest.fixture
def rtk_dirs(tmp_path, monkeypatch) -> Path:
    """Reports in ``tmp_path/log`` (RTK_LOG_DIR), roles and mounts under ``tmp_path/run``
    (RTK_RUN_DIR): a test never touches /var/log/rtk or /run/rtk."""
    monkeypatch.setenv("RTK_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setenv("RTK_RUN_DIR", str(tmp_path / "run"))
    return tmp_path


@pytest.fixture(scope="session")
def need_root():
    if os.geteuid() != 0:
        pytest.fail("this layer needs root (loop devices, mkfs, tgtd)")


@pytest.fixture
def hashing_fails_at(monkeypatch):
    """``hashing_fails_at(pos)``: from image byte ``pos`` on, the hash stage's thread
    (rtk-hasher) raises MemoryError("made to fail"), as a bug or a full memory would."""
    import threading

    from toolkit.blockio import reading
    real = reading.RegionHasher.update

    def arm(pos: int) -> None:
        def update(self, at, data):
            if threading.current_thread().name == "rtk-hasher" and at >= pos:
                raise MemoryError("made to fail")
            return real(self, at, data)
        monkeypatch.setattr(reading.RegionHasher, "update", update)
    return arm
