#!/usr/bin/env python3
"""Disk Copy jobs of several pairs: one after another against side by side.

    sudo .venv/bin/python bench/copy_job_bench.py [--size 1G] [--pairs 2] [--repeat 3]
                                                   [--dir /var/tmp] [--direct-io]
                                                   [--target-dir /dev/shm]

Makes ``--pairs`` random source images and as many targets of ``--size`` each under
``--dir`` (the targets under ``--target-dir`` when given), puts loop devices over them,
and runs ``rtk copy SRC1 DST1 SRC2 DST2 ...`` with ``--no-concurrent`` and with
``--concurrent``, verified and not, ``--repeat`` times each as a separate process
(``--restart``: nothing resumed; the two orders alternate), printing the median wall
time, the rate (bytes of every source over the wall time) and the ratio concurrent /
sequential of the times
(below 1.00: side by side is faster). The pairs share no device, so ``--concurrent``
runs them all at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MiB, bench_parser, losetup

ROOT = Path(__file__).resolve().parent.parent


def make_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def run(cmd: list[str], env: dict) -> float:
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return dt


def main() -> None:
    ap = bench_parser(__doc__, "1G")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--target-dir", metavar="DIR",
                    help="the targets' images here (e.g. /dev/shm: targets in RAM)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices)")
    work = Path(tempfile.mkdtemp(prefix="rtk-jobbench-", dir=args.dir))
    tdir = Path(tempfile.mkdtemp(prefix="rtk-jobbench-", dir=args.target_dir)) \
        if args.target_dir else work
    env = {**os.environ, "RTK_LOG_DIR": str(work / "log"), "PYTHONPATH": str(ROOT)}
    devs: list[str] = []
    try:
        paths, ids = [], []
        for n in range(args.pairs):
            make_random(work / f"src{n}.img", args.size)
            with open(tdir / f"dst{n}.img", "wb") as f:
                f.truncate(args.size)
            src = losetup(work / f"src{n}.img", args.direct_io)
            dst = losetup(tdir / f"dst{n}.img", args.direct_io and not args.target_dir)
            devs += [src, dst]
            paths += [src, dst]
            ids += ["--target-id", os.path.basename(dst)]
        base = [sys.executable, "-m", "toolkit.cli", "copy", *paths, "--yes", *ids,
                "--restart"]
        rows = []
        orders = ("--no-concurrent", "--concurrent")
        for verify in ("--no-verify", "--verify"):
            runs: dict[str, list[float]] = {o: [] for o in orders}
            for _ in range(args.repeat):  # interleaved: a load that comes and goes
                for order in orders:     # weighs on both alike
                    runs[order].append(run([*base, verify, order], env))
            for order, t in runs.items():
                print(f"  {verify} {order}: {', '.join(f'{x:.2f}' for x in t)} s",
                      file=sys.stderr)
            rows.append((verify, {o: statistics.median(t) for o, t in runs.items()}))
        kind = "direct-I/O loop devices" if args.direct_io else "loop devices (page cache)"
        if args.target_dir:
            kind += f", the targets in {args.target_dir}"
        total = args.pairs * args.size
        print(f"\n{args.pairs} pairs of {args.size / MiB:.0f} MiB on {kind}, "
              f"{os.cpu_count()} cores, median of {args.repeat}, wall time of `rtk copy` "
              "with every pair\n")
        print("| copy | one after another (s) | side by side (s) | MB/s, one after another "
              "| MB/s, side by side | side by side / one after another |")
        print("|---|---:|---:|---:|---:|---:|")
        for verify, t in rows:
            seq, con = t["--no-concurrent"], t["--concurrent"]
            print(f"| {verify.removeprefix('--')} | {seq:.2f} | {con:.2f} | "
                  f"{total / seq / 1e6:.0f} | {total / con / 1e6:.0f} | {con / seq:.2f} |")
    finally:
        for dev in devs:
            with contextlib.suppress(Exception):
                subprocess.run(["losetup", "-d", dev], check=False)
        shutil.rmtree(work, ignore_errors=True)
        if tdir != work:
            shutil.rmtree(tdir, ignore_errors=True)


if __name__ == "__main__":
    main()
