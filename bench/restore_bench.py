#!/usr/bin/env python3
"""Image restore benchmark on a loop device: ``rtk restore`` against the shell pipelines.

    sudo .venv/bin/python bench/restore_bench.py [--size 512M] [--repeat 3] [--dir /var/tmp]
                                                 [--direct-io] [--only qcow2,vhdx]
                                                 [--slow-source MB/S]

Makes a disk image of ``--size`` (half random, half zeros, with a GPT), its
zstd, gzip, qcow2 and VHDX versions, and a target image 64 MiB larger, with a
loop device over it. The zstd image is also served over HTTP from 127.0.0.1.
Each row runs as its own process, ``--repeat`` times, in rounds (every row once
per round); the table shows the median wall time, the image rate and the ratio
to the matching shell pipeline (``curl URL | zstd -d | dd of=DEV bs=4M
oflag=direct``, ``qemu-img convert -n -t none`` for qcow2 and VHDX; higher is
faster). The pipelines neither
verify nor hold back the first MiB; ``rtk restore`` does both, so also shown
with ``--no-verify``. A verified container restore is also compared with
``qemu-img convert`` followed by ``qemu-img compare``, the standard tools doing
the same work (the target's tail is zeroed before, untimed, so that the
comparison of the image with the larger disk can pass).

``--slow-source MB/S``: the images live on a filesystem of their own, on a
loop device whose reads are throttled to MB/S (a blkio cgroup holding every
timed command), and their page cache is dropped before each run: the shape
of a restore from a USB disk or a slow share, where the target is the faster
side. (The HTTP rows' server is a thread of this process, outside the cgroup:
those rows are not throttled.)

``rtk`` runs from compiled bytecode, as on the live system (pip compiles the
installed package): a bytecode cache in the temporary directory, whatever
``PYTHONDONTWRITEBYTECODE`` says, filled before the timed runs by importing
what a restore imports.
"""

from __future__ import annotations

import contextlib
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


def sh(cmd: str, env: dict | None = None, cgroup: Path | None = None) -> float:
    def enter() -> None:  # in the child, before the command: into the throttled group
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=ROOT, env=env,
                   preexec_fn=enter if cgroup else None)
    return time.perf_counter() - t0


@contextlib.contextmanager
def slow_filesystem(d: Path, size: int, mbps: float):
    """An ext4 of ``size`` bytes on a direct-I/O loop device, mounted under ``d``, and a
    blkio cgroup whose reads from that device are throttled to ``mbps`` MB/s."""
    fs, mnt = d / "source.fs", d / "source"
    with open(fs, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    dev = losetup(fs, direct_io=True)
    mnt.mkdir()
    cg = Path("/sys/fs/cgroup/blkio/rtk-restore-bench")
    try:
        subprocess.run(["mount", dev, str(mnt)], check=True)
        cg.mkdir(exist_ok=True)
        rdev = os.stat(dev).st_rdev
        (cg / "blkio.throttle.read_bps_device").write_text(
            f"{os.major(rdev)}:{os.minor(rdev)} {int(mbps * 1e6)}")
        yield mnt, cg
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        subprocess.run(["losetup", "-d", dev], check=False)
        with contextlib.suppress(OSError):
            cg.rmdir()


def drop_cache(d: Path) -> None:
    """Forget the page cache of every file in ``d`` (as if the medium were just plugged)."""
    for f in d.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def bytecode_env(tmp: str) -> dict:
    """The environment with a bytecode cache under ``tmp``: Python as installed on the ISO."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    return env


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
    ap = bench_parser(__doc__, "512M")
    ap.add_argument("--only", default="", help="comma-separated words: run the rows whose name "
                    "holds one of them (and their baselines), e.g. qcow2,vhdx")
    ap.add_argument("--slow-source", type=float, default=0, metavar="MB/S",
                    help="images on a loop device whose reads are throttled to MB/S, their "
                         "page cache dropped before each run (a USB disk)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtk-restore-bench-", dir=args.dir) as d, \
            contextlib.ExitStack() as stack:
        src, cgroup = Path(d), None
        if args.slow_source:
            src, cgroup = stack.enter_context(
                slow_filesystem(Path(d), 4 * args.size + 256 * MiB, args.slow_source))
        img = src / "disk.img"
        make_image(img, args.size)
        server = HttpServer(src)
        server.httpd.handle_error = lambda *a: None  # the image probe reads a head, hangs up
        url = server.url("disk.img.zst")
        target = Path(d) / "target.img"
        with open(target, "wb") as f:
            f.truncate(args.size + 64 * MiB)
        dev = losetup(target, args.direct_io)
        dirs = f"RTK_LOG_DIR={d}/log RTK_RUN_DIR={d}/run"
        rtk = f"{dirs} {sys.executable} -m toolkit.cli restore"
        yes = f"--yes --target-id {os.path.basename(dev)}"
        dd = f"dd of={dev} bs=4M oflag=direct conv=fdatasync iflag=fullblock"
        qemu = "qemu-img convert -n -t none -O raw"
        # before each convert-and-compare: the disk's tail zeroed, or compare (which reads
        # the larger disk's rest as part of the image) finds rtk's backup GPT header there
        zero_tail = f"blkdiscard -z -o {args.size} {dev}"
        env = bytecode_env(d)
        # compile the bytecode of what a restore imports once, untimed
        sh(f"{sys.executable} -c 'import toolkit.cli.main, toolkit.cli.restore, "
           "toolkit.restore.engine, toolkit.restore.source, requests'", env)
        rows = [
            ("source read, qcow2 (cat)", f"cat {img}.qcow2 > /dev/null", None),
            ("curl, zstd -d, dd (HTTP)", f"curl -s {url} | zstd -dc | {dd}", None),
            ("rtk restore .zst over HTTP", f"{rtk} {url} {dev} {yes}",
             "curl, zstd -d, dd (HTTP)"),
            ("rtk restore .zst over HTTP --no-verify", f"{rtk} {url} {dev} {yes} --no-verify",
             "curl, zstd -d, dd (HTTP)"),
            ("zstd -dc + dd", f"zstd -dc {img}.zst | {dd}", None),
            ("rtk restore .zst", f"{rtk} {img}.zst {dev} {yes}", "zstd -dc + dd"),
            ("rtk restore .zst --no-verify", f"{rtk} {img}.zst {dev} {yes} --no-verify",
             "zstd -dc + dd"),
            # the checksum checked before writing (a first pass over the .zst), against the
            # same restore without one (the hash is read from a file: nothing timed)
            ("rtk restore .zst --sha256", f"{rtk} {img}.zst {dev} {yes} --sha256 "
             f"$(cat {img}.zst.sum)", "rtk restore .zst"),
            ("rtk restore .zst over HTTP --sha256 (spooled)", f"{rtk} {url} {dev} {yes} "
             f"--tmpdir {d} --sha256 $(cat {img}.zst.sum)", "rtk restore .zst over HTTP"),
            ("gzip -dc + dd", f"gzip -dc {img}.gz | {dd}", None),
            ("rtk restore .gz", f"{rtk} {img}.gz {dev} {yes}", "gzip -dc + dd"),
            ("qemu-img convert -n -t none (qcow2)", f"{qemu} {img}.qcow2 {dev}", None),
            ("qemu-img convert, then compare (qcow2)",
             f"{qemu} {img}.qcow2 {dev} && qemu-img compare -f qcow2 -F raw {img}.qcow2 {dev}",
             None),
            ("rtk restore .qcow2", f"{rtk} {img}.qcow2 {dev} {yes}",
             "qemu-img convert, then compare (qcow2)"),
            ("rtk restore .qcow2, against convert alone", None,
             "qemu-img convert -n -t none (qcow2)"),
            ("rtk restore .qcow2 --no-verify", f"{rtk} {img}.qcow2 {dev} {yes} --no-verify",
             "qemu-img convert -n -t none (qcow2)"),
            ("qemu-img convert -n -t none (vhdx)", f"{qemu} {img}.vhdx {dev}", None),
            ("qemu-img convert, then compare (vhdx)",
             f"{qemu} {img}.vhdx {dev} && qemu-img compare -f vhdx -F raw {img}.vhdx {dev}",
             None),
            ("rtk restore .vhdx", f"{rtk} {img}.vhdx {dev} {yes}",
             "qemu-img convert, then compare (vhdx)"),
            ("rtk restore .vhdx, against convert alone", None,
             "qemu-img convert -n -t none (vhdx)"),
            ("rtk restore .vhdx --no-verify", f"{rtk} {img}.vhdx {dev} {yes} --no-verify",
             "qemu-img convert -n -t none (vhdx)"),
        ]
        rows = _selected(rows, args.only)
        needed = " ".join(cmd or "" for _, cmd, _ in rows)
        for ext, make in (("zst", f"zstd -q -1 -T0 -k {img}"),
                          ("zst.sum", f"sha256sum {img}.zst | cut -c1-64 > {img}.zst.sum"),
                          ("gz", f"gzip -1 -k {img}"),
                          ("qcow2", f"qemu-img convert -O qcow2 {img} {img}.qcow2"),
                          ("vhdx", f"qemu-img convert -O vhdx {img} {img}.vhdx")):
            if f"disk.img.{ext}" in needed:
                subprocess.run(make, shell=True, check=True)
        medians: dict[str, float] = {}
        kind = "a direct-I/O loop device" if args.direct_io else "a loop device (page cache)"
        if args.slow_source:
            kind += f", from a source read at {args.slow_source:g} MB/s, not cached"
        print(f"image {args.size // MiB} MiB (half random) onto {kind}, median of "
              f"{args.repeat}\n")
        print("| tool | seconds | MB/s | vs baseline |\n|---|---:|---:|---:|")
        try:
            # round robin: each round runs every row once, so the disk's slow spells
            # fall on all rows alike, not on whichever ran then (docs/benchmarks.md)
            times: dict[str, list[float]] = {name: [] for name, cmd, _ in rows if cmd}
            for _ in range(args.repeat):
                for name, cmd, _base in rows:
                    if cmd is None:
                        continue
                    if "compare" in cmd:
                        sh(zero_tail)
                    if cgroup:
                        drop_cache(src)
                    times[name].append(sh(cmd, env if "toolkit.cli" in cmd else None, cgroup))
            last = None
            for name, cmd, base in rows:
                if cmd is not None:  # else: the previous row's time, against another baseline
                    medians[name], last = statistics.median(times[name]), name
                m = medians[last]
                ratio = f"{medians[base] / m:.2f}" if base else "1.00"
                print(f"| {name} | {m:.2f} | {args.size / m / 1e6:.0f} | {ratio} |", flush=True)
        finally:
            server.stop()
            subprocess.run(["partx", "-d", dev], capture_output=True)
            subprocess.run(["losetup", "-d", dev], check=False)
    return 0


def _selected(rows: list, only: str) -> list:
    """The rows named by ``--only`` (all when empty), with the baselines they need."""
    words = [w for w in only.split(",") if w]
    if not words:
        return rows
    keep: set[str] = set()
    for i, (name, cmd, base) in enumerate(rows):
        if any(w in name for w in words):
            keep |= {name, base} if base else {name}
            if cmd is None:  # the time of the row before, against another baseline
                keep |= {rows[i - 1][0], rows[i - 1][2]}
            if i + 1 < len(rows) and rows[i + 1][1] is None:
                keep |= {rows[i + 1][0], rows[i + 1][2]}
    return [r for r in rows if r[0] in keep]


if __name__ == "__main__":
    sys.exit(main())
