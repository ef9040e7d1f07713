"""Without udevadm (a Debian without udev, a container): the partitions of a restored
disk still appear (partx, then polling /dev), the restore fits and inspects the disk,
and the log says once that the settle was skipped. udevadm is hidden from PATH, so this
holds whether or not the machine has it. Needs root (loop devices)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB
from loopdev import loop_device, make_image

from toolkit import restore
from toolkit.restore import contents

pytestmark = pytest.mark.host


@pytest.fixture
def no_udevadm(tmp_path, monkeypatch, rtk_dirs, need_root):
    """PATH: a directory of links to every tool on the real PATH but udevadm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src = os.path.join(d, name)
            if name != "udevadm" and not (bin_dir / name).exists() and os.access(src, os.X_OK):
                (bin_dir / name).symlink_to(src)
    monkeypatch.setenv("PATH", str(bin_dir))
    from toolkit.system import udev
    monkeypatch.setattr(udev, "_said", False)
    assert shutil.which("udevadm") is None and shutil.which("partx")
    return rtk_dirs / "log"


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    return ri.build_gpt_image(tmp_path_factory.mktemp("img") / "gpt.img")


def said_skipped(log_dir: Path) -> int:
    text = (log_dir / "tools.log").read_text() if (log_dir / "tools.log").exists() else ""
    return text.count("udevadm is not installed (udev): udev settle skipped")


def test_partition_nodes_appear_without_udevadm(no_udevadm, gpt, tmp_path):
    disk = make_image(tmp_path / "disk.img", 64 * MiB)
    disk.write_bytes(gpt.path.read_bytes())
    with loop_device(disk, partitions=False) as dev:
        assert not os.path.exists(f"{dev}p1")
        contents.refresh_partitions(dev)
        assert all(os.path.exists(f"{dev}p{n}") for n in (1, 2, 3))
        contents.refresh_partitions(dev)
        found = contents.inspect_disk(dev)
    assert [p.get("fstype") for p in found["partitions"]] == ["vfat", "ntfs", "ext4"]
    assert said_skipped(no_udevadm) == 1  # once, however often it is skipped


def test_a_grown_verified_restore_without_udevadm(no_udevadm, gpt, tmp_path):
    target = make_image(tmp_path / "target.img", 96 * MiB)
    with loop_device(target, partitions=False) as dev:
        plan = restore.plan_restore(str(gpt.path), dev, restore.RestoreOptions(grow=True),
                                    source_role=())
        res = restore.restore(plan)
        assert res.status == "ok", res.message
        assert any("grown" in step for step in res.fit), res.fit
        assert [s["os"] for s in res.contents["systems"]] == ["Windows", "Linux"]
    assert said_skipped(no_udevadm) == 1
