"""What the restore reads of an image's files after writing it, on contents a technician
meets (review helper-58, each shown failing on the old code): an /etc/os-release that is
a 3 GiB sparse file is not read whole (it filled the memory: a traceback, the report
"failed" with no message), and a LUKS /home named through /etc/crypttab
(``/dev/mapper/home_crypt``, Debian's installer) is found on its partition, not reported
missing."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, RTK, MiB, rtk
from loopdev import make_image

pytestmark = pytest.mark.host


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def _ext4_root(tmp_path: Path, size: int, fill) -> Path:
    """An ext4 filesystem image labelled root, ``fill(mount_point)`` run on it mounted."""
    fs = make_image(tmp_path / "root.fs", size)
    run("mkfs.ext4", "-q", "-F", "-L", "root", str(fs))
    mnt = tmp_path / "m"
    mnt.mkdir()
    run("mount", "-o", "loop", str(fs), str(mnt))
    try:
        (mnt / "etc").mkdir()
        fill(mnt)
    finally:
        run("umount", str(mnt))
    return fs


def _huge_os_release(mnt: Path) -> None:
    (mnt / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    with open(mnt / "etc/os-release", "w") as f:
        f.write('PRETTY_NAME="Test Linux"\nNAME=Test\n')
        f.truncate(3 << 30)  # sparse: 3 GiB of apparent size, a few KiB on disk


def _huge_file_image(tmp_path: Path) -> Path:
    fs = _ext4_root(tmp_path, 200 * MiB, _huge_os_release)
    img = make_image(tmp_path / "disk.img", 202 * MiB)
    run("sgdisk", "-n", "1:2048:0", "-t", "1:8300", str(img))
    run("dd", f"if={fs}", f"of={img}", "bs=1M", "seek=1", "conv=notrunc")
    return img


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (3_000_000_000, 3_000_000_000))


def test_a_huge_sparse_os_release_neither_exhausts_memory_nor_tracebacks(
        tmp_path, loops, rtk_dirs, need_root):
    img = _huge_file_image(tmp_path)
    dev = loops(make_image(tmp_path / "target.img", 300 * MiB))
    p = subprocess.run([*RTK, "restore", str(img), dev, "--yes", "--target-id",
                        os.path.basename(dev)], cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=_limit, timeout=900)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(next(Path(os.environ["RTK_LOG_DIR"]).glob("restore-*.json")).read_text())
    assert rec["status"] == "ok" and rec["message"], rec["message"]


def _luks_home_image(tmp_path: Path) -> Path:
    luks = make_image(tmp_path / "luks.fs", 40 * MiB)
    run("cryptsetup", "luksFormat", "--type", "luks2", "-q", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", str(luks), "-", input="pw")
    uuid = run("cryptsetup", "luksUUID", str(luks)).strip()

    def fill(mnt: Path) -> None:
        (mnt / "etc/os-release").write_text('PRETTY_NAME="Test Linux"\nNAME=Test\n')
        (mnt / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n"
                                       "/dev/mapper/home_crypt /home ext4 defaults 0 2\n")
        (mnt / "etc/crypttab").write_text(f"home_crypt UUID={uuid} none luks\n")
    fs = _ext4_root(tmp_path, 100 * MiB, fill)
    img = make_image(tmp_path / "disk.img", 150 * MiB)
    run("sgdisk", "-n", "1:2048:+100M", "-t", "1:8300", "-n", "2:0:+40M", "-t", "2:8309",
        str(img))
    run("dd", f"if={fs}", f"of={img}", "bs=1M", "seek=1", "conv=notrunc")
    run("dd", f"if={luks}", f"of={img}", "bs=1M", "seek=101", "conv=notrunc")
    return img


def test_a_luks_home_of_the_same_disk_is_not_reported_missing(tmp_path, loops, rtk_dirs,
                                                               need_root):
    img = _luks_home_image(tmp_path)
    dev = loops(make_image(tmp_path / "target.img", 160 * MiB))
    r = rtk("restore", str(img), dev, "--yes", "--target-id", os.path.basename(dev))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "partition 2: LUKS" in r.stderr
    out = r.stdout + r.stderr
    assert "home_crypt (/home) is on no partition of this disk" not in out, out
    rec = json.loads(next(Path(os.environ["RTK_LOG_DIR"]).glob("restore-*.json")).read_text())
    fstab = rec["linux_initramfs"]["roots"][0]["fstab"]
    assert fstab[1]["ok"] and fstab[1]["partition"] == 2, fstab
    assert "is home_crypt of /etc/crypttab, opened at boot from UUID=" in fstab[1]["message"]
    assert fstab[1]["message"].endswith(": partition 2 (LUKS, restored as is)"), fstab[1]
