"""Capture the guest's sysfs through an iSCSI outage: the fixtures of tests/test_outage_unit.py.

    .venv/bin/python tests/vmlab/capture_sysfs.py [OUT_DIR]   (root; default
    tests/fixtures/sysfs-iscsi)

Boots build/rtk.iso (or $RTK_ISO) with a small virtio disk, serves two targets from two
tgtd (SOURCE on 127.0.0.1:3275 with serial RTK-SRC-0001, TARGET on :3276 with serial
RTK-DST-0002), attaches them with ``rtk iscsi attach``, and dumps
(:mod:`vmlab.sysfs_dump`) at each step: ``up`` (both logged in), ``failed`` (the SOURCE's
tgtd stopped with SIGSTOP, the session in recovery, the LUN blocked), ``offline`` (past
the recovery timeout, 5 s here: the LUN transport-offline, reads fail), ``back`` (tgtd
continued: the kernel reconnected), ``gone`` (logged out while the device is held open)
and ``relogin`` (logged in again: the LUN under a new name). ``states.log`` holds what a
1-second poll saw, ``reads.log`` the errno of O_DIRECT reads during the outage.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[0] = str(HERE.parent)  # tests/, not tests/vmlab (whose http.py would shadow the stdlib)

from vmlab.http import HttpServer  # noqa: E402
from vmlab.qemu import Guest  # noqa: E402
from vmlab.tgt import Tgt  # noqa: E402

MiB = 1 << 20
SRC_IQN, DST_IQN = "iqn.2026-12.lab.rtk:capture-src", "iqn.2026-12.lab.rtk:capture-dst"

POLL = r"""
import os, sys, time
t0 = time.monotonic()
while True:
    row = [f"{time.monotonic() - t0:6.1f}"]
    for s in sorted(os.listdir("/sys/class/iscsi_session")):
        st = open(f"/sys/class/iscsi_session/{s}/state").read().strip()
        row.append(f"{s}={st}")
    for b in sorted(os.listdir("/sys/block")):
        if b.startswith("sd"):
            try:
                row.append(f"{b}={open(f'/sys/block/{b}/device/state').read().strip()}")
            except OSError as e:
                row.append(f"{b}=?{e.errno}")
    print(" ".join(row), flush=True)
    time.sleep(1)
"""

READS = r"""
import errno, mmap, os, sys, time
dev = sys.argv[1]
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)
t0 = time.monotonic()
pos = 0
while time.monotonic() - t0 < 70:
    t = time.monotonic()
    try:
        n = os.preadv(fd, [buf], pos)
        what = f"ok {n}"
    except OSError as e:
        what = f"errno {e.errno} {errno.errorcode.get(e.errno)}"
    print(f"{t - t0:6.1f} took {time.monotonic() - t:5.1f} s: {what}", flush=True)
    pos = (pos + 65536) % (8 << 20)
    time.sleep(0.5)
"""


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent / "fixtures" / "sysfs-iscsi")
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/rtk-capture-sysfs")
    work.mkdir(exist_ok=True)
    for name, text in (("sysfs_dump.py", (HERE / "sysfs_dump.py").read_text()),
                       ("poll.py", POLL), ("reads.py", READS)):
        (work / name).write_text(text)
    src, dst, vd = work / "src.img", work / "dst.img", work / "vd.img"
    for p, size in ((src, 16 * MiB), (dst, 16 * MiB), (vd, 8 * MiB)):
        with open(p, "wb") as f:
            f.truncate(size)
    (work / "s").mkdir(exist_ok=True)
    (work / "d").mkdir(exist_ok=True)
    t_src = Tgt(work / "s", port=3275)
    t_dst = Tgt(work / "d", port=3276)
    t_src.add_target(SRC_IQN, [src], serials=["RTK-SRC-0001"])
    t_dst.add_target(DST_IQN, [dst], serials=["RTK-DST-0002"])
    http = HttpServer(work)
    iso = Path(os.environ.get("RTK_ISO", HERE.parents[1] / "build" / "rtk.iso"))
    guest = Guest(work, iso, name="capture", disks=[(vd, "RTK-VD-0003")])
    try:
        guest.wait_menu(timeout=400)
        guest.open_shell()
        g = guest.run
        for name in ("sysfs_dump.py", "poll.py", "reads.py"):
            g(f"curl -sf {http.url(name, host='10.0.2.2')} -o /tmp/{name}")

        def dump(state: str) -> None:
            text = g("python3 /tmp/sysfs_dump.py", timeout=120)
            start = text.index("{")
            (out / f"{state}.json").write_text(text[start:].strip() + "\n")
            print(f"captured {state}", flush=True)

        print(g(f"rtk iscsi attach 10.0.2.2:3275 {SRC_IQN} --role source", timeout=180))
        print(g(f"rtk iscsi attach 10.0.2.2:3276 {DST_IQN} --role target", timeout=180))
        dev = g(f"readlink -f /dev/disk/by-path/ip-10.0.2.2:3275-iscsi-{SRC_IQN}-lun-1").strip()
        print("source device", dev)
        g("iscsiadm -m session -P 3 > /tmp/session-P3.txt; cat /tmp/session-P3.txt")
        (out / "session-P3.txt").write_text(g("cat /tmp/session-P3.txt"))
        dump("up")
        sid = g(f"for s in /sys/class/iscsi_session/*; do grep -q {SRC_IQN} $s/targetname "
                "&& basename $s; done; true").strip()
        g(f"echo 5 > /sys/class/iscsi_session/{sid}/recovery_tmo")
        g("nohup python3 /tmp/poll.py > /tmp/states.log 2>&1 & true")
        g(f"nohup python3 /tmp/reads.py {dev} > /tmp/reads.log 2>&1 & true")
        time.sleep(3)
        t_src.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        g("for i in $(seq 60); do grep -q FAILED /sys/class/iscsi_session/"
          f"{sid}/state && break; sleep 1; done", timeout=90)
        print(f"session FAILED after {time.monotonic() - t0:.0f} s")
        dump("failed")
        g(f"for i in $(seq 60); do grep -q transport-offline /sys/block/{dev[5:]}/device/state "
          "&& break; sleep 1; done", timeout=90)
        print(f"transport-offline after {time.monotonic() - t0:.0f} s")
        dump("offline")
        time.sleep(max(0, 45 - (time.monotonic() - t0)))
        t_src.proc.send_signal(signal.SIGCONT)
        t1 = time.monotonic()
        g(f"for i in $(seq 90); do grep -q LOGGED_IN /sys/class/iscsi_session/{sid}/state "
          f"&& grep -q running /sys/block/{dev[5:]}/device/state && break; sleep 1; done",
          timeout=120)
        print(f"back after {time.monotonic() - t1:.0f} s")
        time.sleep(3)
        dump("back")
        (out / "states.log").write_text(g("cat /tmp/states.log"))
        (out / "reads.log").write_text(g("sleep 20; cat /tmp/reads.log", timeout=60))
        # a re-login while the old device is held open: the LUN comes back under a new name
        g(f"exec 7<{dev}")
        g(f"iscsiadm -m node -T {SRC_IQN} -p 10.0.2.2:3275 -u", timeout=120)
        g("udevadm settle")
        dump("gone")
        g(f"iscsiadm -m node -T {SRC_IQN} -p 10.0.2.2:3275 -l", timeout=120)
        g("udevadm settle; sleep 2")
        print(g("ls -l /sys/block/ /dev/disk/by-path/"))
        dump("relogin")
        g("exec 7<&-")
    finally:
        guest.stop()
        t_src.proc.send_signal(signal.SIGCONT)
        t_src.stop()
        t_dst.stop()
        http.stop()


if __name__ == "__main__":
    main()
