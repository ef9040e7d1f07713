"""Fleet restore: one HTTP server, one guest alone, then N guests at once.

Each guest network-boots the example ``build/netboot/boot.ipxe`` (QEMU's DHCP
hands it out; the NIC's iPXE fetches kernel and initrd, live-boot fetches the
squashfs), then restores its own plan (``plans/<MAC>.yaml``): a zstd image over
HTTP onto a virtio disk, verified, and powers off. The server logs every
request (bytes, start, end); the report server gets each guest's timings.

    sudo .venv/bin/python bench/fleet_bench.py [--guests 2] [--size 256M]

Prints a Markdown table per run: the squashfs download (time, rate), the image
(restore write phase and verification), boot to power-off, and the server's
aggregate rate while guests overlapped. Guests run under QEMU TCG (software
emulation), one vCPU each: on a small host the guests compete with the server
for the CPU. Results: README ("Netboot: many machines at once").
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import MiB, parse_size  # noqa: E402
from vmlab.netboot import unattended_ipxe  # noqa: E402
from vmlab.qemu import Guest  # noqa: E402
from vmlab.report import ReportServer  # noqa: E402

HOST = "10.0.2.2"


class LoggingServer:
    """Serves ``directory``; records (path, bytes, start, end) for every GET."""

    def __init__(self, directory: Path):
        self.log: list[tuple[str, int, float, float]] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def handle_one_request(self):
                self._t0, self._sent = time.monotonic(), 0
                super().handle_one_request()
                path = getattr(self, "path", None)
                if path and self._sent:
                    server.log.append((path, self._sent, self._t0, time.monotonic()))

            def copyfile(self, source, outputfile):
                while data := source.read(1 << 20):
                    outputfile.write(data)
                    self._sent += len(data)

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(directory)))
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # the image probe reads a head, hangs up
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_image(work: Path, size: int) -> Path:
    """A raw image, half random, half zeros, compressed with zstd."""
    raw = work / "node.img"
    with open(raw, "wb") as f:
        for i in range(size // (4 * MiB)):
            f.write(os.urandom(4 * MiB) if i % 2 == 0 else bytes(4 * MiB))
    subprocess.run(["zstd", "-q", "-T0", "-f", str(raw), "-o", str(raw) + ".zst"], check=True)
    return Path(str(raw) + ".zst")


def prepare(www: Path, netboot: Path, srv: LoggingServer, reports: ReportServer) -> None:
    (www / "rtk" / "plans").mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        if not (www / "rtk" / name).exists():
            os.symlink(netboot / name, www / "rtk" / name)
    (www / "rtk" / "boot.ipxe").write_text(
        unattended_ipxe(netboot, srv.url("rtk"), reports.url_for(HOST)))


def run_fleet(n: int, work: Path, www: Path, srv: LoggingServer, reports: ReportServer,
              image_url: str, disk_size: int) -> dict:
    srv.log.clear()
    reports.bodies.clear()
    guests, macs = [], [f"52:54:00:12:35:{i:02x}" for i in range(n)]
    t0 = time.monotonic()
    for i, mac in enumerate(macs):
        disk = work / f"disk{i}.img"
        with open(disk, "wb") as f:
            f.truncate(disk_size)
        serial = f"RTKFLEET{i:02d}"
        plan = {"version": 1, "mode": "restore", "image": image_url, "disk": f"serial:{serial}",
                "consent": f"serial:{serial}", "done": "poweroff"}
        (www / "rtk" / "plans" / f"{mac.replace(':', '-')}.yaml").write_text(json.dumps(plan))
        guests.append(Guest(work, None, netboot=srv.url("rtk/boot.ipxe"), mac=mac,
                            disks=[(disk, serial)], name=f"fleet{n}-{i}"))
    ends = {}
    try:
        for g in guests:
            g.wait_exit(3000)
            ends[g.name] = time.monotonic() - t0
    finally:
        for g in guests:
            g.stop()
    squash = [x for x in srv.log if x[0].endswith("filesystem.squashfs")]
    images = [x for x in srv.log if x[0].endswith(".zst")]
    end_events = [b for b in reports.bodies if b["event"] == "end"]
    return {"n": n, "squash": squash, "images": images, "ends": ends, "reports": end_events,
            "t0": t0}


def aggregate(transfers: list[tuple[str, int, float, float]]) -> float:
    """Bytes per second over the span from the first start to the last end."""
    if not transfers:
        return 0.0
    span = max(x[3] for x in transfers) - min(x[2] for x in transfers)
    return sum(x[1] for x in transfers) / span if span > 0 else 0.0


def table(res: dict) -> str:
    rows = [f"### {res['n']} guest(s) at once", "",
            "| guest | squashfs fetch (s) | squashfs MB/s | restore, verified (s) | "
            "restore MB/s | boot to power-off (s) | result |",
            "|---|---:|---:|---:|---:|---:|---|"]
    sq = sorted(res["squash"], key=lambda x: x[2])
    reps = sorted(res["reports"], key=lambda b: b["disk"]["serial"] if b.get("disk") else "")
    for i, (name, end) in enumerate(sorted(res["ends"].items())):
        s = sq[i] if i < len(sq) else None
        r = reps[i] if i < len(reps) else {}
        t = r.get("timings", {})
        size = (r.get("hashes") or {}).get("written_size") or 0
        write = t.get("write")
        rows.append(f"| {name} | {s[3] - s[2]:.1f} | {s[1] / (s[3] - s[2]) / 1e6:.1f} | "
                    f"{write if write is not None else '?'} | "
                    f"{size / write / 1e6 if write else 0:.1f} | "
                    f"{end:.0f} | {r.get('result', '?')} |" if s else f"| {name} | ? |")
    rows += ["", f"Server, squashfs downloads: {aggregate(res['squash']) / 1e6:.1f} MB/s "
                 f"aggregate; images: {aggregate(res['images']) / 1e6:.1f} MB/s aggregate.", ""]
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guests", type=int, default=2)
    ap.add_argument("--size", default="256M", help="the image's size (default 256M)")
    ap.add_argument("--netboot", default=str(ROOT / "build" / "netboot"))
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    netboot = Path(args.netboot).resolve()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="rtk-fleet-", dir=args.dir) as tmp:
        work, www = Path(tmp), Path(tmp) / "www"
        (www / "images").mkdir(parents=True)
        image = make_image(work, size)
        os.replace(image, www / "images" / image.name)
        srv, reports = LoggingServer(www), ReportServer()
        try:
            prepare(www, netboot, srv, reports)
            url = srv.url(f"images/{image.name}")
            zst = os.path.getsize(www / "images" / image.name) // MiB
            squash = os.path.getsize(netboot / "filesystem.squashfs") // MiB
            print(f"image: {size // MiB} MiB raw, {zst} MiB zstd; squashfs {squash} MiB\n")
            for n in (1, args.guests):
                print(table(run_fleet(n, work, www, srv, reports, url, size + 64 * MiB)),
                      flush=True)
        finally:
            srv.stop()
            reports.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
