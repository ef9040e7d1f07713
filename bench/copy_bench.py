#!/usr/bin/env python3
"""Disk Copy benchmark on loop devices: ``rtk copy`` against dd, ddrescue, sha256sum.

    sudo .venv/bin/python bench/copy_bench.py [--size 1G] [--repeat 3] [--dir /var/tmp]

Makes a random source image, a 90%-zero source image and a target image of
``--size`` each under ``--dir``, puts loop devices over them, runs every tool
``--repeat`` times as a separate process and prints, per tool, the median wall
time, the rate and the ratio to ``dd bs=4M iflag=direct oflag=direct`` (1.00 =
as fast as dd; higher is faster), then the peak RSS of ``rtk copy`` (ru_maxrss
from wait4). Times include process start-up, for every tool alike.
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


def timed(cmd: str, env: dict) -> tuple[float, int]:
    """Run a shell command; (seconds, peak RSS in KiB of the process tree's largest child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", cmd], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"failed ({code}): {cmd}\n{err}")
    return dt, usage.ru_maxrss


def make_random(path: Path, size: int) -> None:
    rnd = random.Random(42)
    with open(path, "wb") as f:
        for _ in range(size // (4 * MiB)):
            f.write(rnd.randbytes(4 * MiB))
        f.write(rnd.randbytes(size % (4 * MiB)))


def make_mostly_zero(path: Path, size: int) -> None:
    """10% random data in 4 MiB pieces spread over the image, the rest zeros."""
    rnd = random.Random(7)
    with open(path, "wb") as f:
        f.truncate(size)
        pieces = size // (4 * MiB)
        for i in range(0, pieces, 10):
            f.seek(i * 4 * MiB)
            f.write(rnd.randbytes(4 * MiB))


def main() -> None:
    ap = bench_parser(__doc__, "1G")
    ap.add_argument("--target-dir", metavar="DIR",
                    help="put the target image here instead (e.g. /dev/shm: the target in RAM, "
                         "so the source's disk is the only limit, as with a BDR LUN copied to "
                         "a SAN LUN on another array)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices)")
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-", dir=args.dir))
    size = args.size
    py = sys.executable
    env = {**os.environ, "RTK_LOG_DIR": str(work / "log"), "PYTHONPATH": str(ROOT)}
    devs: list[str] = []
    tdir = work
    try:
        make_random(work / "src.img", size)
        make_mostly_zero(work / "zero.img", size)
        if args.target_dir:
            tdir = Path(tempfile.mkdtemp(prefix="rtk-bench-", dir=args.target_dir))
        with open(tdir / "dst.img", "wb") as f:
            f.truncate(size)
        src, zsrc = (losetup(work / n, args.direct_io) for n in ("src.img", "zero.img"))
        devs += [src, zsrc]
        # a target in RAM (tmpfs) has no disk under it: no direct I/O for its loop device
        dst = losetup(tdir / "dst.img", args.direct_io and not args.target_dir)
        devs.append(dst)
        mapfile = work / "bench.map"
        rtk = (f"{py} -m toolkit.cli copy --yes --restart "  # never resume a run before
               f"--target-id {os.path.basename(dst)} --mapfile {mapfile}")
        dd = "dd bs=4M iflag=direct oflag=direct status=none"
        rd = "dd bs=4M iflag=direct status=none"
        fresh = f"rm -f {mapfile}"  # else rtk and ddrescue would resume
        zero_dst = f"{fresh}; blkdiscard -z {dst}"  # the target reads back zeros
        # (name, untimed setup, timed command, baseline row for the ratio)
        cases = [
            ("dd bs=4M iflag=direct oflag=direct", "", f"{dd} if={src} of={dst}", 0),
            ("dd ... conv=fdatasync (durable, as rtk copy)", "",
             f"{dd} conv=fdatasync if={src} of={dst}", 0),
            ("rtk copy --no-verify", fresh, f"{rtk} --no-verify {src} {dst}", 0),
            ("rtk copy (verify, blake3)", fresh, f"{rtk} {src} {dst}", 0),
            ("rtk copy --hash sha256 (verify)", fresh, f"{rtk} --hash sha256 {src} {dst}", 0),
            ("ddrescue -d -D", fresh,
             f"ddrescue -q -f -d -D {src} {dst} {mapfile}", 0),
            ("dd, then sha256sum of source and of target (read with O_DIRECT)", "",
             f"{dd} if={src} of={dst} && {rd} if={src} | sha256sum && {rd} if={dst} | sha256sum",
             0),
            ("read the source only: dd of=/dev/null iflag=direct", "",
             f"{rd} if={src} of=/dev/null", 0),
            ("90%-zero source: dd", "", f"{dd} if={zsrc} of={dst}", 8),
            ("90%-zero source: rtk copy --skip-zeros --no-verify", zero_dst,
             f"{rtk} --skip-zeros --no-verify {zsrc} {dst}", 8),
            ("90%-zero source: rtk copy --skip-zeros (verify)", zero_dst,
             f"{rtk} --skip-zeros {zsrc} {dst}", 8),
        ]
        results = []
        rss = 0
        for name, setup, cmd, baseline in cases:
            times = []
            for _ in range(args.repeat):
                # every run starts with no dirty page left by the one before
                subprocess.run(["bash", "-c", f"{setup}; sync" if setup else "sync"],
                               check=True, env=env)
                dt, peak = timed(cmd, env)
                times.append(dt)
                if "rtk copy" in name:
                    rss = max(rss, peak)
            results.append((name, statistics.median(times), baseline))
            print(f"  {name}: {statistics.median(times):.2f} s", file=sys.stderr)
        kind = "direct-I/O loop devices" if args.direct_io else "loop devices (page cache)"
        if args.target_dir:
            kind += f", the target in {args.target_dir}"
        print(f"\n{size / MiB:.0f} MiB on {kind}, {os.cpu_count()} cores, median of "
              f"{args.repeat} runs, wall time including process start-up; \"vs dd\" is the "
              "speed relative to dd on the same source (higher is faster)\n")
        print("| run | time (s) | MB/s | vs dd |")
        print("|---|---:|---:|---:|")
        for name, t, baseline in results:
            print(f"| {name} | {t:.2f} | {size / t / 1e6:.0f} | {results[baseline][1] / t:.2f} |")
        print(f"\npeak RSS of rtk copy (any run above): {rss / 1024:.0f} MiB")
    finally:
        for d in devs:
            subprocess.run(["losetup", "-d", d], check=False)
        for d in {work, tdir}:
            with contextlib.suppress(OSError):
                shutil.rmtree(d)


if __name__ == "__main__":
    main()
