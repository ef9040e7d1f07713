#!/usr/bin/env python3
"""Image restore benchmark on a loop device: ``rtk restore`` against the shell pipelines.

    sudo .venv/bin/python bench/restore_bench.py [--size 512M] [--repeat 3] [--dir /var/tmp]

Makes a disk image of ``--size`` (half random, half zeros, with a GPT), its
zstd, gzip and qcow2 versions, and a target image 64 MiB larger, with a loop
device over it. The zstd image is also served over HTTP from 127.0.0.1.
Each row runs as its own process, ``--repeat`` times; the table shows the
median wall time, the image rate and the ratio to the matching shell pipeline
(``curl URL | zstd -d | dd of=DEV bs=4M oflag=direct``, ``qemu-img convert
-n -t none`` for qcow2 and VHDX; higher is faster). The pipelines neither
verify nor hold back the first MiB; ``rtk restore`` does both, so also shown
with ``--no-verify``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MiB, bench_parser, losetup

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from vmlab.http import HttpServer  # noqa: E402


def sh(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def make_image(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size // 2
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n
        f.truncate(size)
    subprocess.run(["sgdisk", "-n", "1:2048:0", str(path)], check=True, capture_output=True)


def main() -> int:
    args = bench_parser(__doc__, "512M").parse_args()
    with tempfile.TemporaryDirectory(prefix="rtk-restore-bench-", dir=args.dir) as d:
        img = Path(d) / "disk.img"
        make_image(img, args.size)
        subprocess.run(f"zstd -q -1 -T0 -k {img} && gzip -1 -k {img}", shell=True, check=True)
        for fmt in ("qcow2", "vhdx"):
            subprocess.run(["qemu-img", "convert", "-O", fmt, str(img), f"{img}.{fmt}"],
                           check=True)
        server = HttpServer(Path(d))
        server.httpd.handle_error = lambda *a: None  # the image probe reads a head, hangs up
        url = server.url("disk.img.zst")
        target = Path(d) / "target.img"
        with open(target, "wb") as f:
            f.truncate(args.size + 64 * MiB)
        dev = losetup(target, args.direct_io)
        env = f"RTK_LOG_DIR={d}/log RTK_RUN_DIR={d}/run"
        rtk = f"{env} {sys.executable} -m toolkit.cli restore"
        yes = f"--yes --target-id {os.path.basename(dev)}"
        dd = f"dd of={dev} bs=4M oflag=direct conv=fdatasync iflag=fullblock"
        qemu = "qemu-img convert -n -t none -O raw"
        rows = [
            ("curl, zstd -d, dd (HTTP)", f"curl -s {url} | zstd -dc | {dd}", None),
            ("rtk restore .zst over HTTP", f"{rtk} {url} {dev} {yes}",
             "curl, zstd -d, dd (HTTP)"),
            ("rtk restore .zst over HTTP --no-verify", f"{rtk} {url} {dev} {yes} --no-verify",
             "curl, zstd -d, dd (HTTP)"),
            ("zstd -dc + dd", f"zstd -dc {img}.zst | {dd}", None),
            ("rtk restore .zst", f"{rtk} {img}.zst {dev} {yes}", "zstd -dc + dd"),
            ("rtk restore .zst --no-verify", f"{rtk} {img}.zst {dev} {yes} --no-verify",
             "zstd -dc + dd"),
            ("gzip -dc + dd", f"gzip -dc {img}.gz | {dd}", None),
            ("rtk restore .gz", f"{rtk} {img}.gz {dev} {yes}", "gzip -dc + dd"),
            ("qemu-img convert -n -t none (qcow2)", f"{qemu} {img}.qcow2 {dev}", None),
            ("rtk restore .qcow2", f"{rtk} {img}.qcow2 {dev} {yes}",
             "qemu-img convert -n -t none (qcow2)"),
            ("rtk restore .qcow2 --no-verify", f"{rtk} {img}.qcow2 {dev} {yes} --no-verify",
             "qemu-img convert -n -t none (qcow2)"),
            ("qemu-img convert -n -t none (vhdx)", f"{qemu} {img}.vhdx {dev}", None),
            ("rtk restore .vhdx", f"{rtk} {img}.vhdx {dev} {yes}",
             "qemu-img convert -n -t none (vhdx)"),
            ("rtk restore .vhdx --no-verify", f"{rtk} {img}.vhdx {dev} {yes} --no-verify",
             "qemu-img convert -n -t none (vhdx)"),
        ]
        medians: dict[str, float] = {}
        kind = "a direct-I/O loop device" if args.direct_io else "a loop device (page cache)"
        print(f"image {args.size // MiB} MiB (half random) onto {kind}, median of "
              f"{args.repeat}\n")
        print("| tool | seconds | MB/s | vs baseline |\n|---|---:|---:|---:|")
        try:
            for name, cmd, base in rows:
                m = statistics.median(sh(cmd) for _ in range(args.repeat))
                medians[name] = m
                ratio = f"{medians[base] / m:.2f}" if base else "1.00"
                print(f"| {name} | {m:.2f} | {args.size / m / 1e6:.0f} | {ratio} |", flush=True)
        finally:
            server.stop()
            subprocess.run(["partx", "-d", dev], capture_output=True)
            subprocess.run(["losetup", "-d", dev], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
