"""A real iSCSI target on the host's loopback: tgtd serving image files as LUNs.

The guest reaches it at 10.0.2.2 through QEMU user networking. tgtd runs on
its own management port so it never touches a system-wide tgt service.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from vmlab import stop_process


class Tgt:
    def __init__(self, workdir: Path, port: int = 3260):
        self.port = port
        self.control_port = str(port - 3000)  # one management socket per lab
        self.next_tid = 1
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"127.0.0.1:{port} is busy: stop the other iSCSI target "
                                   "(systemctl stop tgt; pkill tgtd)")
        self.log = open(Path(workdir) / "tgtd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", self.control_port, "--iscsi", f"portal=127.0.0.1:{port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.adm("--op", "show", "--mode", "sys", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("tgtd did not start; see tgtd.log")
            time.sleep(0.2)

    def adm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tgtadm", "-C", self.control_port, "--lld", "iscsi", *args],
                              capture_output=True, text=True, check=check)

    def add_target(self, iqn: str, luns: list[Path], *, chap: tuple[str, str] | None = None,
                   mutual: tuple[str, str] | None = None, serials: list[str] = (),
                   thin: bool = False) -> int:
        """Serve ``luns`` (image files) as LUN 1, 2, ... of a new target; returns its tid.
        ``serials``: the LUNs' SCSI serial numbers (default: tgtd's ``beaf<tid><lun>``).
        ``thin``: thin-provisioned LUNs (LBPME, LBPRZ; GET LBA STATUS answers from the
        files' holes, UNMAP punches holes)."""
        tid = str(self.next_tid)
        self.next_tid += 1
        self.adm("--op", "new", "--mode", "target", "--tid", tid, "-T", iqn)
        for lun, path in enumerate(luns, start=1):
            self.adm("--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", str(lun),
                     "-b", str(path))
            if lun <= len(serials):
                self.adm("--op", "update", "--mode", "logicalunit", "--tid", tid, "--lun",
                         str(lun), "--params", f"scsi_sn={serials[lun - 1]}")
            if thin:
                self.adm("--op", "update", "--mode", "logicalunit", "--tid", tid, "--lun",
                         str(lun), "--params", "thin_provisioning=1")
        self.adm("--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL")
        if chap:
            self.adm("--op", "new", "--mode", "account", "--user", chap[0], "--password", chap[1])
            self.adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", chap[0])
        if mutual:
            self.adm("--op", "new", "--mode", "account", "--user", mutual[0],
                     "--password", mutual[1])
            self.adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", mutual[0],
                     "--outgoing")
        return int(tid)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
