"""Multicast fleet restore: one udp-sender, N receivers, each restoring onto a loop device.

Everything runs in network namespaces on one bridge (tests/netns.py: the bridge in a
namespace of its own, addresses in 10.213.0.0/24 that exist only inside them; nothing
is sent outside). The sender runs ``udp-sender`` as ``rtk fleet serve`` builds it
(:func:`toolkit.restore.multicast.sender_argv`) plus the options of each setting;
each receiver runs ``rtk restore udpcast://eth0@PORT?sha256=... DEV --yes --target-id``
in its namespace. Every target is compared with the image; the sender's egress (its
veth's tx_bytes) is divided by one image (multicast's ideal: 1.0x) and by N images
(what N HTTP downloads would send).

    sudo .venv/bin/python bench/fleet_multicast_bench.py [--size 64M] [--receivers 1,2,4]
        [--settings default,cap600m,...] [--repeat 1]

Prints a Markdown table. Results: README ("Measured") and docs/fleet.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # restore_images imports conftest
sys.path.insert(0, str(ROOT / "bench"))

from common import MiB, losetup, parse_size  # noqa: E402

from tests.netns import Lan  # noqa: E402
from tests.restore_images import build_gpt_image  # noqa: E402
from toolkit.restore import multicast  # noqa: E402

# name -> (sender_argv keywords, extra udp-sender options)
SETTINGS: dict[str, tuple[dict, list[str]]] = {
    "default": ({}, []),  # rtk fleet serve's defaults: --full-duplex, no cap
    "half-duplex": ({"full_duplex": False}, []),
    "cap900m": ({"rate": "900m"}, []),
    "cap600m": ({"rate": "600m"}, []),
    "cap300m": ({"rate": "300m"}, []),
    "fec8x8": ({}, ["--fec", "8x8/128"]),
    "slice1024": ({}, ["--max-slice-size", "1024"]),
    "cap600m-slice1024": ({"rate": "600m"}, ["--max-slice-size", "1024"]),
}


def sha256(path: str, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left > 0 and (data := f.read(min(8 * MiB, left))):
            h.update(data)
            left -= len(data)
    return h.hexdigest()


def run_once(image: Path, digest: str, size: int, n: int, setting: str, workdir: Path,
             port: int = 9000) -> dict:
    kw, extra = SETTINGS[setting]
    backs = []
    for i in range(n):
        p = workdir / f"disk{i}.img"
        with open(p, "wb") as f:
            f.truncate(size)  # the image's size: no fitting
        backs.append(p)
    devs = [losetup(p) for p in backs]
    try:
        with Lan() as lan:
            s = lan.add(0)
            rs = [lan.add(i + 1) for i in range(n)]
            argv = multicast.sender_argv(str(image), receivers=n, max_wait=60,
                                         interface="eth0", portbase=port, **kw) + extra
            tx0 = lan.tx_bytes(s)
            t0 = time.monotonic()
            snd = subprocess.Popen(lan.argv(s, argv), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
            url = f"udpcast://eth0@{port}?sha256={digest}&start_timeout=60"
            procs = [subprocess.Popen(
                lan.argv(ns, [sys.executable, "-m", "toolkit.cli", "restore", url, dev,
                              "--yes", "--target-id", os.path.basename(dev), "--no-verify"]),
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "RTK_LOG_DIR": str(workdir / f"log{i}")})
                for i, (ns, dev) in enumerate(zip(rs, devs, strict=True))]
            outs = [p.communicate(timeout=600)[0] for p in procs]
            err = snd.communicate(timeout=120)[1]
            secs = time.monotonic() - t0
            egress = lan.tx_bytes(s) - tx0
        ok = [p.returncode == 0 and sha256(d, size) == digest
              for p, d in zip(procs, devs, strict=True)]
        for p, out in zip(procs, outs, strict=True):
            if p.returncode:
                print(f"  receiver failed ({setting}, N={n}): {out.strip()[-400:]}",
                      file=sys.stderr)
        rexmit = re.findall(r"re-?xmits?[=:]\s*(\d+)", err)
        return {"n": n, "setting": setting, "ok": sum(ok), "egress": egress,
                "per_image": egress / size, "vs_http": egress / (n * size), "secs": secs,
                "sender_rc": snd.returncode, "rexmits": rexmit[-1] if rexmit else "",
                "sender_tail": err.strip().splitlines()[-1:] if err.strip() else []}
    finally:
        for d in devs:
            subprocess.run(["losetup", "-d", d], check=False)
        for p in backs:
            p.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("64M"))
    ap.add_argument("--receivers", default="1,2,4")
    ap.add_argument("--settings", default="default,cap600m",
                    help=f"comma-separated, of: {', '.join(SETTINGS)}")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dir", default="/var/tmp")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, loop devices)", file=sys.stderr)
        return 2
    names = a.settings.split(",")
    if bad := [x for x in names if x not in SETTINGS]:
        print(f"unknown setting {bad[0]}; known: {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="rtk-mcast-") as tmp:
        work = Path(tmp)
        built = build_gpt_image(work / "image.img", a.size)
        size = os.path.getsize(built.path)
        for setting in names:
            for n in (int(x) for x in a.receivers.split(",")):
                for _ in range(a.repeat):
                    r = run_once(built.path, built.sha256, size, n, setting, work)
                    rows.append(r)
                    print(f"  {setting} N={n}: {r['per_image']:.3f}x one image, "
                          f"{r['ok']}/{n} identical, {r['secs']:.1f} s", file=sys.stderr,
                          flush=True)
    print(f"\nimage {size // MiB} MiB; egress = the sender veth's tx_bytes\n")
    print("| setting | receivers | targets identical | sender egress | x one image "
          "| x N images (HTTP) | time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['n']} | {r['ok']}/{r['n']} | {r['egress'] / MiB:.1f} MiB "
              f"| {r['per_image']:.3f} | {r['vs_http']:.3f} | {r['secs']:.1f} s |")
    return 0 if all(r["ok"] == r["n"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
