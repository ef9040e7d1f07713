#!/usr/bin/env python3
"""Used-blocks copy benchmark: ``rtk copy --used-blocks`` against ntfsclone, partclone, dd, fio.

    sudo .venv/bin/python bench/copy_usedblocks_bench.py [--size 2G] [--repeat 1] [--dir /var/tmp]

The seed's shape, in one run: four source disks of ``--size`` (a GPT, one partition),
each filled with random data before its filesystem was made (free space full of old data,
as on a real disk): an NTFS volume 1/400 used (the seed: 116 MB of 49.87 GB), one 1/40
used, an ext4 and an XFS volume 1/40 used. One source at a time (disk space), onto one
target disk of the same size. Per source, as separate processes: ``dd`` (bs=4M, direct
I/O, conv=fsync), ``ntfsclone --overwrite`` (NTFS) or nothing, ``partclone.TYPE -b``,
``rtk copy --used-blocks`` verified and not, plain ``rtk copy`` verified and not, and the
physical limit: ``fio`` (libaio, iodepth 16, direct, 8 MiB blocks) reading the source and
writing the target, the larger of the two times. Prints the median wall time of
``--repeat`` runs (process start-up included) and the ratios to the field's standard tool
(ntfsclone for NTFS, partclone for ext4/XFS) and to the fio limit (1.00 = as fast; higher
is slower). Loop devices use direct I/O (the disk under ``--dir`` is the limit, not the page
cache) unless ``--page-cache``. Needs root, partclone, ntfs-3g, fio.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MiB, bench_parser, losetup

ROOT = Path(__file__).resolve().parent.parent
VOLUMES = [("NTFS 1/400 used", "ntfs", 400), ("NTFS 1/40 used", "ntfs", 40),
           ("ext4 1/40 used", "ext4", 40), ("XFS 1/40 used", "xfs", 40)]
PARTCLONE = {"ntfs": "partclone.ntfs", "ext4": "partclone.extfs", "xfs": "partclone.xfs"}


def sh(cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True)


def timed(cmd: str, env: dict) -> float | None:
    """Wall time of a shell command; None when it fails (the reason printed)."""
    sh("sync")
    t0 = time.perf_counter()
    p = sh(cmd, env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        print(f"  failed ({p.returncode}): {cmd}\n    {p.stderr.strip()[-300:]}",
              file=sys.stderr)
        return None
    return dt


def random_file(path: Path, size: int, seed: int) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // (4 * MiB)):
            f.write(rnd.randbytes(4 * MiB))


def gpt(path: Path) -> None:
    subprocess.run(["sfdisk", "-q", str(path)], input="label: gpt\nstart=2048\n", text=True,
                   check=True, capture_output=True)


def make_source(work: Path, kind: str, fraction: int, size: int, seed: int,
                direct_io: bool) -> tuple[str, Path]:
    """A source disk: random data, a GPT, the filesystem, files taking 1/``fraction``."""
    img = work / "src.img"
    random_file(img, size, seed)
    gpt(img)
    dev = losetup(img, direct_io)
    subprocess.run(["partx", "-a", dev], check=False, capture_output=True)
    part = f"{dev}p1"
    mkfs = {"ntfs": ["mkntfs", "-q", "-f"], "ext4": ["mkfs.ext4", "-q", "-F"],
            "xfs": ["mkfs.xfs", "-q", "-f"]}[kind]
    subprocess.run([*mkfs, part], check=True, capture_output=True)
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["ntfs-3g", part, str(mnt)] if kind == "ntfs" else
                   ["mount", part, str(mnt)], check=True)
    try:
        rnd = random.Random(seed + 1)
        left, i = size // fraction, 0
        while left > 0:
            n = min(left, 8 * MiB)
            (mnt / f"file{i:04d}.bin").write_bytes(rnd.randbytes(n))
            left, i = left - n, i + 1
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return dev, img


def rows_for(kind: str, src: str, dst: str, size: int, rtk: str) -> list[tuple[str, str]]:
    """(name, command) of every tool, in order; the fio pair last."""
    fio = (f"fio --name=limit --ioengine=libaio --direct=1 --iodepth=16 --bs=8M "
           f"--size={size} --output=/dev/null")
    rows = [("dd bs=4M direct conv=fsync",
             f"dd bs=4M iflag=direct oflag=direct conv=fsync status=none if={src} of={dst}")]
    # a missing partition node would make the tools write a regular file in /dev
    part = f"test -b {dst}p1 && test -b {src}p1 &&"
    if kind == "ntfs":
        rows.append(("ntfsclone --overwrite",
                     f"{part} ntfsclone -q --overwrite {dst}p1 {src}p1 >/dev/null"))
    rows += [
        (f"{PARTCLONE[kind]} -b", f"{part} {PARTCLONE[kind]} -q -b -s {src}p1 -o {dst}p1 "
                                  f"-L /dev/null >/dev/null 2>&1"),
        ("rtk copy --used-blocks --no-verify", f"{rtk} --used-blocks --no-verify {src} {dst}"),
        ("rtk copy --used-blocks (verified)", f"{rtk} --used-blocks {src} {dst}"),
        ("rtk copy --no-verify", f"{rtk} --no-verify {src} {dst}"),
        ("rtk copy (verified)", f"{rtk} {src} {dst}"),
        ("fio read of the source", f"{fio} --rw=read --filename={src}"),
        ("fio write of the target", f"{fio} --rw=write --filename={dst}"),
    ]
    return rows


def bench_volume(name: str, kind: str, src: str, dst: str, size: int, rtk: str,
                 repeat: int, env: dict, mapfile: Path) -> list[tuple[str, float | None]]:
    out = []
    for row, cmd in rows_for(kind, src, dst, size, rtk):
        times = []
        for _ in range(repeat):
            sh(f"rm -f {mapfile}; partx -a {dst} >/dev/null 2>&1")  # a fresh copy each run
            dt = timed(cmd, env)
            if dt is None:
                break
            times.append(dt)
        t = statistics.median(times) if len(times) == repeat else None
        print(f"  {name}: {row}: {f'{t:.2f} s' if t else 'failed'}", file=sys.stderr)
        out.append((row, t))
    return out


def table(name: str, kind: str, results: list[tuple[str, float | None]]) -> list[str]:
    times = dict(results)
    base_name = "ntfsclone --overwrite" if kind == "ntfs" else f"{PARTCLONE[kind]} -b"
    base = times.get(base_name)
    reads, writes = times.pop("fio read of the source"), times.pop("fio write of the target")
    limit = max(reads or 0, writes or 0) or None
    lines = [f"\n{name} (reference: {base_name}; fio limit {limit or 0:.2f} s = max of read "
             f"{reads or 0:.2f} s and write {writes or 0:.2f} s)\n",
             f"| run | time (s) | vs {base_name} | vs fio limit |", "|---|---:|---:|---:|"]
    for row, t in results:
        if row.startswith("fio "):
            continue
        if t is None:
            what = "not available yet" if "--used-blocks" in row else "failed"
            lines.append(f"| {row}: {what} | - | - | - |")
            continue
        vs_base = f"{t / base:.2f}" if base else "-"
        vs_fio = f"{t / limit:.2f}" if limit else "-"
        lines.append(f"| {row} | {t:.2f} | {vs_base} | {vs_fio} |")
    return lines


def main() -> None:
    ap = bench_parser(__doc__, "2G")
    ap.set_defaults(repeat=1)
    ap.add_argument("--page-cache", action="store_true",
                    help="loop devices through the page cache (default: direct I/O)")
    ap.add_argument("--only", help="comma-separated volume kinds to run (ntfs,ext4,xfs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, mount)")
    direct = not args.page_cache
    work = Path(tempfile.mkdtemp(prefix="rtk-ubench-", dir=args.dir))
    env = {**os.environ, "RTK_LOG_DIR": str(work / "log"), "PYTHONPATH": str(ROOT)}
    mapfile = work / "bench.map"
    devs: list[str] = []
    lines: list[str] = []
    started = time.perf_counter()
    try:
        dst_img = work / "dst.img"
        random_file(dst_img, args.size, 99)
        gpt(dst_img)
        dst = losetup(dst_img, direct)
        devs.append(dst)
        rtk = (f"{sys.executable} -m toolkit.cli copy --yes --restart "
               f"--target-id {os.path.basename(dst)} --mapfile {mapfile}")
        only = set(args.only.split(",")) if args.only else None
        for i, (name, kind, fraction) in enumerate(VOLUMES):
            if only and kind not in only:
                continue
            src, img = make_source(work, kind, fraction, args.size, 10 + i, direct)
            try:
                results = bench_volume(name, kind, src, dst, args.size, rtk, args.repeat,
                                       env, mapfile)
            finally:
                subprocess.run(["partx", "-d", src], check=False, capture_output=True)
                subprocess.run(["losetup", "-d", src], check=False)
                img.unlink()
            lines += table(name, kind, results)
        kind_of = "direct-I/O loop devices" if direct else "loop devices (page cache)"
        print(f"\n{args.size / MiB:.0f} MiB disks on {kind_of} under {args.dir}, "
              f"{os.cpu_count()} cores, median of {args.repeat} run(s), wall time "
              f"including process start-up; ratios: time / reference time (lower is "
              f"faster); whole run {time.perf_counter() - started:.0f} s")
        print("\n".join(lines))
    finally:
        for d in devs:
            subprocess.run(["partx", "-d", d], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", d], check=False)
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
