"""Images for the smaller-disk restore tests, made with the real tools.

:func:`build_shrink_image`: a GPT disk with an ESP (34 MiB, FAT32: mkfs.vfat's
smallest) and one data partition (NTFS, ext4 or XFS) of ``part_size`` holding
``data`` bytes of files, half of them written after a filler that was deleted again,
so they lie near the partition's end (where a shrink must move them). NTFS is written
through ntfs-3g on the filesystem's own file, ext4 through a loop mount of it, XFS by
mkfs.xfs's protofile; each filesystem is placed into the sparse disk image.
:func:`check_small_disk`: the smaller disk after the restore, checked as the issue asks.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import tempfile
from pathlib import Path

from conftest import MiB
from restore_images import (
    OS_RELEASE,
    Built,
    _fat,
    _partitions,
    _place,
    _xfs,
    file_hashes,
    run,
    sha256_file,
)

from toolkit.restore import contents

SMALL = 256 * MiB  # the smaller disk of the tests


def _files(data: int, seed: int = 11) -> dict[str, bytes]:
    rnd = random.Random(seed)
    out, n, i = {}, 0, 0
    while n < data:
        size = min(rnd.randint(1, 6) * MiB + rnd.randint(0, 4095), data - n)
        out[f"/data/d{i % 4}/file{i}.bin"] = rnd.randbytes(size)
        n, i = n + size, i + 1
    out["/etc/os-release"] = OS_RELEASE.encode()
    return out


def _fill_then_write(mnt: str, files: dict[str, bytes], room: int) -> None:
    """Half the files, then a zero filler of ``room`` bytes, then the other half, then the
    filler deleted: those lie towards the filesystem's end."""
    items = list(files.items())
    half = len(items) // 2

    def write(batch):
        for name, data in batch:
            target = Path(mnt) / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        os.sync()

    write(items[:half])
    filler = Path(mnt) / "filler"
    with open(filler, "wb") as f:
        zeros = bytes(MiB)
        for _ in range(room // MiB):
            f.write(zeros)
    write(items[half:])
    filler.unlink()


def _ntfs_fs(path: Path, size: int, files: dict[str, bytes], start_sector: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    run("mkntfs", "-F", "-Q", "-L", "Data", "-p", str(start_sector), "-H", "255", "-S", "63",
        str(path))
    with tempfile.TemporaryDirectory() as mnt:
        run("ntfs-3g", str(path), mnt)
        try:
            _fill_then_write(mnt, files, size - sum(map(len, files.values())) - 24 * MiB)
        finally:
            run("umount", mnt)


def _ext4_fs(path: Path, size: int, files: dict[str, bytes]) -> None:
    run("mkfs.ext4", "-q", "-F", "-L", "data", str(path), f"{size // 1024}k")
    with tempfile.TemporaryDirectory() as mnt:
        run("mount", "-o", "loop", str(path), mnt)
        try:
            _fill_then_write(mnt, files, size - sum(map(len, files.values())) - 48 * MiB)
        finally:
            run("umount", mnt)


def build_shrink_image(path: Path, fs: str = "ntfs", part_size: int = 512 * MiB,
                       data: int = 60 * MiB) -> Built:
    """GPT: p1 ESP (34 MiB, FAT32), p2 ``fs`` (``part_size``, ``data`` bytes of files)."""
    size = part_size + 36 * MiB
    with open(path, "wb") as f:
        f.truncate(size)
    run("sgdisk", "-n", "1:2048:+34M", "-t", "1:ef00", "-c", "1:EFI system",
        "-n", f"2:0:+{part_size // MiB}M", "-t", f"2:{'0700' if fs == 'ntfs' else '8300'}",
        "-c", "2:Data", str(path))
    (n1, s1, l1), (n2, s2, l2) = _partitions(path)
    esp = {"/EFI/BOOT/BOOTX64.EFI": random.Random(3).randbytes(70000)}
    files = _files(data)
    built = Built(path, size)
    with tempfile.TemporaryDirectory() as tmp:
        _fat(Path(tmp) / "a", l1, esp)
        fsfile = Path(tmp) / "b"
        if fs == "ntfs":
            _ntfs_fs(fsfile, l2, files, s2 // 512)
        elif fs == "ext4":
            with open(fsfile, "wb") as f:
                f.truncate(l2)
            _ext4_fs(fsfile, l2, files)
        else:
            _xfs(fsfile, l2, files)
        _place(path, Path(tmp) / "a", s1)
        _place(path, fsfile, s2)
    built.files.update({f"p{n1}:{k}": hashlib.sha256(v).hexdigest() for k, v in esp.items()})
    built.files.update({f"p{n2}:{k}": hashlib.sha256(v).hexdigest() for k, v in files.items()})
    built.sha256 = sha256_file(path)
    return built


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_on(node: str, fstype: str, names: list[str]) -> dict[str, str]:
    """Each file's SHA-256 read from the partition without mounting it (ntfscat -f: a
    shrunk NTFS is marked for chkdsk, as ntfsresize leaves it)."""
    out = {}
    for name in names:
        cmd = (["ntfscat", "-f", node, name] if fstype == "ntfs"
               else ["debugfs", "-R", f"cat {name}", node])
        out[name] = _hash(subprocess.run(cmd, capture_output=True, check=True).stdout)
    return out


def check_small_disk(dev: str, built: Built, fstype: str, size: int = SMALL) -> dict:
    v = subprocess.run(["sgdisk", "-v", dev], capture_output=True, text=True).stdout
    assert "No problems found" in v, v
    info = contents.inspect_disk(dev)
    parts = {p["number"]: p for p in info["partitions"]}
    data = parts[2]
    assert data["fstype"] == fstype
    assert data["start"] + data["size"] <= size - 33 * 512
    check = {"ntfs": ["ntfsfix", "-n"], "ext4": ["e2fsck", "-fn"]}[fstype]
    r = subprocess.run([*check, data["node"]], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert subprocess.run(["fsck.vfat", "-n", parts[1]["node"]],
                          capture_output=True).returncode == 0
    names = [k.split(":", 1)[1] for k in built.files if k.startswith("p2:")]
    assert len(names) > 3  # (and /etc/os-release)
    assert files_on(data["node"], fstype, names) == {n: built.files[f"p2:{n}"] for n in names}
    esp = file_hashes(parts[1]["node"], "vfat", ["/EFI/BOOT/BOOTX64.EFI"])
    assert esp == {"/EFI/BOOT/BOOTX64.EFI": built.files["p1:/EFI/BOOT/BOOTX64.EFI"]}
    return data
