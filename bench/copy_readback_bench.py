#!/usr/bin/env python3
"""Verified Disk Copy against the disks' limit: read-back behind the writer vs copy then verify.

    sudo .venv/bin/python bench/copy_readback_bench.py [--size 2G] [--repeat 3] [--dir DIR]
        [--direct-io] [--old-tree DIR]

Makes a random source image and a target image of ``--size`` under ``--dir``, puts loop
devices over them, and times, as separate processes, ``--repeat`` times each, in rounds
(every row once per round, so that the disk's slow spells fall on every row alike):

- ``fio`` (``--ioengine=libaio --iodepth=16 --direct=1 --bs=8M``): the source read alone,
  the target written alone, and both at once (one fio run, two jobs): the physical limit
  of a copy, the "limit" the ratios are taken against;
- ``rtk copy --no-verify`` and ``rtk copy`` (BLAKE3, the target read back behind the
  writer, :mod:`toolkit.blockio.readback`);
- with ``--old-tree DIR`` (a ``toolkit/`` of an earlier commit:
  ``git archive COMMIT toolkit | tar -x -C DIR``), the same two with that code: there a
  verified copy reads the target back after the copy ends.

Prints a Markdown table: median wall time (process start-up included), rate, and the time
relative to the limit (1.00 = as fast as fio's both-at-once; lower is faster). Removes the
images and loop devices at the end. ``--dir /dev/shm`` (no ``--direct-io``: tmpfs has no
O_DIRECT) puts both in RAM: the CPU is then the limit; ``--direct-io --target-dir /dev/shm``
the source on the disk and the target in RAM: two devices, the source the slower;
``--source-rate MB/S`` a source slower than the target (a LUN over the network).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import MiB, bench_parser, losetup
from copy_bench import make_random, timed

ROOT = Path(__file__).resolve().parent.parent
FIO = "fio --ioengine=libaio --iodepth=16 --direct=1 --bs=8M --group_reporting=0 " \
      "--output-format=json"


def fio_job(name: str, rw: str, dev: str, size: int) -> str:
    return f"--name={name} --rw={rw} --filename={dev} --size={size}"


def rows(src: str, dst: str, size: int, mapfile: Path, old: str | None,
         rate: int | None = None) -> list:
    """(name, setup, command, env additions) of every row; ``rate``: the source's reads
    limited to that many bytes/s (fio ``--rate``, rtk's ``--max-rate``)."""
    py = sys.executable
    # run from the work directory: "-m" looks in the current directory first, and the
    # old rows must find their toolkit through PYTHONPATH, not this checkout's
    rtk = (f"cd {mapfile.parent} && {py} -m toolkit.cli copy --yes --restart --target-id "
           f"{os.path.basename(dst)} --mapfile {mapfile}"
           + (f" --max-rate {rate}" if rate else ""))
    fresh = f"rm -f {mapfile}"
    read = fio_job("r", "read", src, size) + (f" --rate={rate}" if rate else "")
    out = [
        ("fio: read the source", "", f"{FIO} {read}", {}),
        ("fio: write the target", "", f"{FIO} {fio_job('w', 'write', dst, size)}", {}),
        ("fio: both at once (the limit)", "",
         f"{FIO} {read} {fio_job('w', 'write', dst, size)}", {}),
        ("rtk copy --no-verify", fresh, f"{rtk} --no-verify {src} {dst}", {}),
        ("rtk copy (read back behind the writer)", fresh, f"{rtk} {src} {dst}", {}),
    ]
    if old:
        out += [("old rtk copy --no-verify", fresh, f"{rtk} --no-verify {src} {dst}",
                 {"PYTHONPATH": old}),
                ("old rtk copy (copy, then verify)", fresh, f"{rtk} {src} {dst}",
                 {"PYTHONPATH": old})]
    return out


def last_report(log: Path) -> dict | None:
    reports = sorted(log.glob("copy-*.json"), key=os.path.getmtime)
    return json.loads(reports[-1].read_text()) if reports else None


def main() -> None:
    ap = bench_parser(__doc__, "2G")
    ap.add_argument("--old-tree", metavar="DIR",
                    help="a tree holding toolkit/ of an earlier commit, run as 'old rtk copy'")
    ap.add_argument("--source-rate", type=float, metavar="MB/S",
                    help="the source read at most this fast (fio --rate, rtk --max-rate): a "
                         "source slower than the target, as a backup appliance's LUN")
    ap.add_argument("--target-dir", metavar="DIR",
                    help="put the target image here instead (e.g. /dev/shm: the target in RAM, "
                         "the source's disk the only limit, as with two arrays)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices)")
    if not shutil.which("fio"):
        raise SystemExit("fio is needed (Debian package fio)")
    work = Path(tempfile.mkdtemp(prefix="rtk-bench-", dir=args.dir))
    size = args.size
    env = {**os.environ, "RTK_LOG_DIR": str(work / "log"), "PYTHONPATH": str(ROOT)}
    devs: list[str] = []
    tdir = Path(tempfile.mkdtemp(prefix="rtk-bench-", dir=args.target_dir)) \
        if args.target_dir else work
    try:
        make_random(work / "src.img", size)
        with open(tdir / "dst.img", "wb") as f:
            f.truncate(size)
        # a target in RAM (tmpfs) has no disk under it: no direct I/O for its loop device
        devs += [losetup(work / "src.img", args.direct_io),
                 losetup(tdir / "dst.img", args.direct_io and not args.target_dir)]
        src, dst = devs
        table = rows(src, dst, size, work / "bench.map",
                     str(Path(args.old_tree).resolve()) if args.old_tree else None,
                     int(args.source_rate * 1e6) if args.source_rate else None)
        times: dict[str, list[float]] = {name: [] for name, *_ in table}
        verify_after: list[float] = []
        for _ in range(args.repeat):
            for name, setup, cmd, extra in table:
                subprocess.run(["bash", "-c", f"{setup}; sync" if setup else "sync"],
                               check=True, env=env)
                dt, _rss = timed(cmd, {**env, **extra})
                times[name].append(dt)
                rep = last_report(work / "log") if name.startswith("rtk copy (") else None
                if rep and rep["verify"]:
                    verify_after.append(rep["verify"]["seconds"])
                print(f"  {name}: {dt:.2f} s", file=sys.stderr)
        med = {name: statistics.median(t) for name, t in times.items()}
        limit = med["fio: both at once (the limit)"]
        kind = "direct-I/O loop devices" if args.direct_io else "loop devices (page cache)"
        if args.target_dir:
            kind += f", the target in {args.target_dir}"
        if args.source_rate:
            kind += f", the source read at {args.source_rate:g} MB/s"
        print(f"\n{size / MiB:.0f} MiB on {kind} over files in {args.dir}, "
              f"{os.cpu_count()} cores, median of {args.repeat} rounds, wall time including "
              "process start-up; \"vs limit\" is the time over fio's (lower is faster)\n")
        print("| run | time (s) | MB/s | vs limit |")
        print("|---|---:|---:|---:|")
        for name, t in med.items():
            print(f"| {name} | {t:.2f} | {size / t / 1e6:.0f} | {t / limit:.2f} |")
        single = max(med["fio: read the source"], med["fio: write the target"])
        print(f"\nthe slower of the two alone (fio): {single:.2f} s; rtk copy verified vs it: "
              f"{med['rtk copy (read back behind the writer)'] / single:.2f}")
        if verify_after:
            print(f"verification after the writer finished (report's verify.seconds), "
                  f"median: {statistics.median(verify_after):.3f} s")
    finally:
        for d in devs:
            subprocess.run(["losetup", "-d", d], check=False)
        for d in {work, tdir}:
            with contextlib.suppress(OSError):
                shutil.rmtree(d)


if __name__ == "__main__":
    main()
