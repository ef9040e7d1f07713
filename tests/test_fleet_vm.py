"""A fleet machine restoring unattended from a multicast stream, in the VM lab.

The sender: udp-sender (as ``rtk fleet serve`` builds it) in a network namespace of
its own, on a bridge (tests/netns.py: a namespace for the bridge, 10.213.0.0/24 only
inside them). The guest: booted from build/netboot's kernel and initrd with the ISO as
its CD, a second NIC on a tap device on that bridge (QEMU run in the bridge's
namespace, ``vmlab.qemu.Tap``), the kernel command line alone saying what to do:
``rtk.image=udpcast://NIC@9000``, its SHA-256, a static address on that NIC (``ip=``),
the disk and its consent, power off when done. The host then checks that the guest's
disk is the image, byte for byte.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import restore_images as ri
from loopdev import make_image
from netns import Lan
from vmlab.qemu import Guest, Tap

from toolkit.restore import multicast

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(not shutil.which("udp-sender"), reason="needs udpcast")]

PORT = 9000
SERIAL = "RTKMCAST01"
GUEST_IP = "10.213.0.50"  # on the bridge, beside the sender's 10.213.0.10 (Lan.add(0))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def base_append(netboot: Path) -> str:
    """The live system's kernel parameters, from the build's PXELINUX example (without
    its initrd= and fetch=: the ISO is the CD)."""
    text = (netboot / "pxelinux.cfg" / "default").read_text()
    line = re.search(r"^\s*APPEND (.*)$", text, re.M).group(1)
    return " ".join(w for w in line.split() if not w.startswith(("initrd=", "fetch=")))


def test_unattended_restore_from_a_sender_behind_a_tap(tmp_path, need_root, iso, netboot):
    built = ri.build_gpt_image(tmp_path / "node.img")
    zst = tmp_path / "node.img.zst"  # the stream is compressed: the guest decompresses it
    subprocess.run(["zstd", "-q", "-f", str(built.path), "-o", str(zst)], check=True)
    disk = make_image(tmp_path / "disk.img", built.size)  # the image's size: no fitting
    with Lan() as lan:
        s = lan.add(0)
        tap = Tap(lan.hub, lan.add_tap(f"tap{lan.tag}"))
        nic = tap.guest_nic
        tx0 = Lan.tx_bytes(s)
        # waits for its one receiver, however long the guest takes to boot
        argv = multicast.sender_argv(str(zst), receivers=1, rate="100m", interface="eth0",
                                     portbase=PORT)
        snd = subprocess.Popen(lan.argv(s, argv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        params = (f"rtk.mode=restore rtk.image=udpcast://{nic}@{PORT} "
                  f"rtk.sha256={sha256(zst)} rtk.disk=serial:{SERIAL} "
                  f"rtk.consent=serial:{SERIAL} rtk.done=poweroff "
                  f"ip={GUEST_IP}:::255.255.255.0::{nic}:none")
        t0 = time.monotonic()
        guest = Guest(tmp_path, iso, kernel=netboot / "vmlinuz",
                      initrd=netboot / "initrd.img", append=f"{base_append(netboot)} {params}",
                      disks=[(disk, SERIAL)], name="mcast", tap=tap)
        try:
            try:
                code = guest.wait_exit(1200)
            except subprocess.TimeoutExpired:
                raise AssertionError("the guest did not power off within 1200 s:\n"
                                     + guest.console.raw_text()[-4000:]) from None
            log = guest.console.raw_text()
        finally:
            guest.stop()
        took = time.monotonic() - t0
        try:
            sent = snd.wait(60)
        except subprocess.TimeoutExpired:
            snd.kill()
            sent = snd.wait()
        egress = Lan.tx_bytes(s) - tx0
        err = snd.stderr.read()
    print(f"boot, multicast restore and power-off: {took:.0f} s; sender egress {egress} "
          f"bytes for a {zst.stat().st_size}-byte stream")
    assert code == 0, log[-4000:]
    assert sent == 0, err
    assert f"network: {nic} up" in log, log[-4000:]
    # held whole in the guest's /tmp (RAM) first, then checked: the held path, not the
    # one that writes the stream as it arrives
    assert "check: the multicast stream is held in /tmp as it arrives" in log, log[-4000:]
    assert "rtk: powering off" in log and "done:" in log, log[-4000:]
    assert egress >= zst.stat().st_size  # it went over the bridge, once
    assert sha256(disk) == built.sha256  # the guest's disk is the image
