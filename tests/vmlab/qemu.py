"""Boot the built ISO in QEMU (software emulation) and drive it like a person.

The first serial port carries the kernel's messages and the menu: a reader
thread feeds everything it says to a pyte terminal emulator (80x24, the size
the live system sets on a serial line), so a test reads the menu's screen as a
technician would see it in a serial terminal, and types keys into it. The
menu's own Shell entry gives a root shell on the same line, which is how a test
runs commands in the guest.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyte

from vmlab import stop_process

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# Secure Boot: the firmware that enforces it (needs SMM, so q35) and variables with the
# Microsoft keys enrolled (Debian's shim is signed by Microsoft's UEFI CA), Secure Boot on
OVMF_SECBOOT_CODE = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
OVMF_MS_VARS = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"

# Disk controllers servers have, as QEMU emulates them: the controller (added once, with
# this id) and the disk device on its bus. ``usb`` is a stick on an xHCI controller. (Not
# here: QEMU 7.2's mptsas1068, whose disk Linux 6.12's mptsas never discovers.)
CONTROLLERS = {
    "nvme": (None, "nvme"),
    "ahci": ("ahci", "ide-hd,bus=ahci.{n}"),
    "megasas": ("megasas", "scsi-hd,bus=megasas.0"),
    "lsi": ("lsi53c895a", "scsi-hd,bus=lsi.0"),
    "virtio-scsi": ("virtio-scsi-pci", "scsi-hd,bus=virtio-scsi.0"),
    "pvscsi": ("pvscsi", "scsi-hd,bus=pvscsi.0"),
    "usb": ("qemu-xhci", "usb-storage,bus=xhci.0,removable=on"),
}


def controller_args(disks: list[tuple[str, Path, str]], have: set[str] = frozenset()
                    ) -> list[str]:
    """QEMU arguments for ``disks``: (kind from :data:`CONTROLLERS`, raw image, serial).
    Each kind's controller is added once (``have``: the ids already there)."""
    args: list[str] = []
    added, per_kind = set(have), {}
    for i, (kind, path, serial) in enumerate(disks):
        controller, device = CONTROLLERS[kind]
        cid = "xhci" if kind == "usb" else kind
        if controller and cid not in added:
            args += ["-device", f"{controller},id={cid}"]
            added.add(cid)
        n = per_kind[kind] = per_kind.get(kind, -1) + 1
        args += ["-drive", f"if=none,id=c{i},file={path},format=raw,cache=unsafe",
                 "-device", f"{device.format(n=n)},drive=c{i},serial={serial}"]
    return args

KEYS = {
    "enter": b"\r",
    "esc": b"\x1b",
    "up": b"\x1b[A",
    "down": b"\x1b[B",
    "right": b"\x1b[C",
    "left": b"\x1b[D",
    "tab": b"\t",
    "backspace": b"\x7f",
    "home": b"\x1b[1~",
    "end": b"\x1b[4~",
    "f5": b"\x1b[15~",
    "f10": b"\x1b[21~",
}


class GuestTimeout(AssertionError):
    pass


class SerialTerminal:
    """One QEMU serial port (a unix socket), rendered through pyte."""

    def __init__(self, path: str, log_path: str, cols: int = 80, rows: int = 24):
        self.path = path
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.times: list[tuple[float, int]] = []  # (when, bytes received so far)
        self.lock = threading.Lock()
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def connect(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock = s
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        assert self.sock
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.raw += data
                self.stream.feed(data)
                self.times.append((time.monotonic(), len(self.raw)))
            self.log.write(data)
            self.log.flush()

    def text(self) -> str:
        """The screen as a person sees it now."""
        with self.lock:
            return "\n".join(self.screen.display)

    def raw_text(self, start: int = 0) -> str:
        with self.lock:
            return self.raw[start:].decode("utf-8", "replace")

    def mark(self) -> int:
        with self.lock:
            return len(self.raw)

    def send(self, data: bytes | str) -> None:
        assert self.sock
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def key(self, *names: str, pause: float = 0.4) -> None:
        """Type keys: names from KEYS, or literal characters."""
        for name in names:
            self.send(KEYS.get(name, name.encode()))
            time.sleep(pause)

    def start_anyway(self, then: str, timeout: float = 120) -> str:
        """Before a long job whose resume point is in RAM (no RTK-DATA in the lab's
        guest), the menu warns first: answer "Start anyway", then wait for ``then``."""
        screen = self.wait_screen(rf"Resume point in RAM|{then}", timeout=timeout)
        if "Resume point in RAM" in screen:
            self.key("right", "right", "enter")
            screen = self.wait_screen(then, timeout=timeout)
        return screen

    def wait_screen(self, pattern: str, timeout: float = 60) -> str:
        """Wait until the rendered screen matches ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.25)
        raise GuestTimeout(f"screen never showed {pattern!r}; it shows:\n{self.text()}")

    def wait_raw(self, pattern: str, start: int = 0, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.raw_text(start), re.S)
            if m:
                return m
            time.sleep(0.2)
        raise GuestTimeout(f"serial never said {pattern!r}; last output:\n"
                           f"{self.raw_text(start)[-2000:]}")

    def close(self) -> None:
        if self.sock:
            self.sock.close()
        self.log.close()


@dataclass(frozen=True)
class Tap:
    """A second NIC for the guest, on the tap device ``ifname`` of network namespace
    ``netns`` (made there beforehand, e.g. ``tests.netns.Lan.add_tap``); QEMU then runs
    in that namespace (``ip netns exec``), its user-net NIC as before. ``slot``: its PCI
    slot, which names it ``ens<slot>`` in the guest (:attr:`guest_nic`)."""

    netns: str
    ifname: str
    mac: str = "52:54:00:21:30:01"
    slot: int = 16

    @property
    def guest_nic(self) -> str:
        return f"ens{self.slot}"

    def args(self) -> list[str]:
        return ["-netdev", f"tap,id=n1,ifname={self.ifname},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n1,mac={self.mac},addr={self.slot:#x}"]


class Guest:
    """A QEMU guest booted from the ISO (or its kernel), with virtio disks."""

    def __init__(self, workdir: Path, iso: Path | None, *, uefi: bool = False,
                 disks: list[tuple[Path, str]] = (), kernel: Path | None = None,
                 initrd: Path | None = None, append: str | None = None,
                 netboot: str | None = None, mac: str | None = None, memory: int = 2048,
                 name: str = "guest", usb_disks: list[tuple[Path, str]] = (),
                 secure_boot: bool = False, controller_disks: list[tuple[str, Path, str]] = (),
                 tap: Tap | None = None, hostfwd: tuple[tuple[int, int], ...] = ()):
        """``iso``: the CD (None: no CD). ``kernel``/``initrd``/``append``: QEMU loads
        them directly. ``netboot``: a URL handed out by QEMU's DHCP as the boot file;
        the NIC's iPXE ROM fetches it over HTTP and runs it (no CD, no kernel).
        ``usb_disks``: (image, serial) attached as USB sticks (usb-storage on an xHCI
        controller, removable media), after the virtio ``disks``.
        ``secure_boot``: UEFI with Secure Boot enforced (implies ``uefi``): a q35 machine
        with SMM, OVMF's secboot firmware (its flash writable only from SMM) and
        variables with the Microsoft keys enrolled; the CD on the q35's AHCI.
        ``controller_disks``: (kind, image, serial) on the controllers of
        :data:`CONTROLLERS` (nvme, ahci, megasas, ...), after the others.
        ``tap``: a second NIC on a tap device in a network namespace (:class:`Tap`).
        ``hostfwd``: (host port, guest port) TCP forwards of the user network, on the
        host's 127.0.0.1 only (``ssh -p PORT root@127.0.0.1`` reaches the guest's 22)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        serial0 = str(self.workdir / f"{name}-ttyS0.sock")
        monitor = str(self.workdir / f"{name}-monitor.sock")
        # One vCPU: with two, multi-threaded TCG occasionally runs a stale translation of
        # kernel code being live-patched (int3 text_poke) and the guest panics.
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", str(memory),
               *(["-machine", "q35,smm=on", "-global",
                  "driver=cfi.pflash01,property=secure,value=on"] if secure_boot else []),
               "-display", "none", "-vga", "std", "-no-reboot",
               "-chardev", f"socket,id=s0,path={serial0},server=on,wait=off",
               "-serial", "chardev:s0",
               "-monitor", f"unix:{monitor},server=on,wait=off",
               "-netdev", "user,id=n0" + (f",bootfile={netboot}" if netboot else "")
               + "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in hostfwd),
               "-device", "virtio-net-pci,netdev=n0" + (f",mac={mac}" if mac else "")]
        if iso and secure_boot:  # q35: the CD on the chipset's AHCI, booted first
            cmd += ["-drive", f"if=none,id=cd0,file={iso},media=cdrom,readonly=on",
                    "-device", "ide-cd,drive=cd0,bus=ide.1,bootindex=0"]
        elif iso:
            cmd += ["-drive", f"file={iso},media=cdrom,readonly=on,if=ide,index=1"]
        if uefi or secure_boot:
            code, vars_ = (OVMF_SECBOOT_CODE, OVMF_MS_VARS) if secure_boot else (OVMF_CODE,
                                                                                 OVMF_VARS)
            vars_copy = self.workdir / f"{name}-OVMF_VARS.fd"
            shutil.copy(vars_, vars_copy)
            cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}",
                    "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        else:
            cmd += ["-boot", "n" if netboot else "d"]
        for i, (path, serial) in enumerate(disks):
            cmd += ["-drive", f"if=none,id=d{i},file={path},format=raw,cache=unsafe",
                    "-device", f"virtio-blk-pci,drive=d{i},serial={serial}"]
        if usb_disks:
            cmd += ["-device", "qemu-xhci,id=xhci"]
        for i, (path, serial) in enumerate(usb_disks):
            cmd += ["-drive", f"if=none,id=u{i},file={path},format=raw,cache=unsafe",
                    "-device", f"usb-storage,bus=xhci.0,drive=u{i},serial={serial},"
                               "removable=on"]
        cmd += controller_args(controller_disks, {"xhci"} if usb_disks else set())
        if tap:  # QEMU opens the tap by name: it must run in the tap's namespace
            cmd = ["ip", "netns", "exec", tap.netns, *cmd, *tap.args()]
        if kernel:
            cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append or ""]
        self.cmd = cmd
        self.monitor_path = monitor
        self.started = time.monotonic()
        self._qemu_log = open(self.workdir / f"{name}-qemu.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self._qemu_log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.console = SerialTerminal(serial0, str(self.workdir / f"{name}-ttyS0.log"))
        self.console.connect()
        self._n = 0

    # --- the menu ------------------------------------------------------------
    def wait_menu(self, timeout: float = 300) -> str:
        """Wait for the main menu on the serial console, drawn in full (up to the footer's
        last key: urwid's frame can arrive in pieces); returns the screen."""
        return self.console.wait_screen(r"Recovery Toolkit .*\n.*Main menu(?s:.*)F10 power",
                                        timeout)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # --- a shell opened from the menu's Shell entry --------------------------
    def open_shell(self) -> None:
        self.console.key("s")
        self.console.wait_raw(r"type 'exit' to return|Type 'exit' to return", timeout=30)
        time.sleep(1)
        self.console.send("stty -echo; PS1='$ '\r")
        time.sleep(1)

    def run(self, command: str, timeout: float = 120, check: bool = True) -> str:
        """Run a command in the shell; returns its output (stdout and stderr)."""
        self._n += 1
        n = self._n
        start = self.console.mark()
        self.console.send(f"echo __BEGIN_{n}__; {{ {command} ; }} 2>&1; echo __END_{n}_$?__\r")
        m = self.console.wait_raw(rf"__BEGIN_{n}__\r?\n(.*?)__END_{n}_(\d+)__", start, timeout)
        out, rc = m.group(1).replace("\r", ""), int(m.group(2))
        if check and rc != 0:
            raise AssertionError(f"guest command failed ({rc}): {command}\n{out}")
        return out

    def install_source_tree(self, http, served_dir: Path) -> None:
        """Development shortcut: replace the guest's toolkit and tui packages with
        this source tree (through the lab's HTTP server), to try guest-side code
        without rebuilding the ISO. Final tests boot a rebuilt ISO instead."""
        import tarfile

        repo = Path(__file__).resolve().parents[2]
        with tarfile.open(served_dir / "rtk-src.tgz", "w:gz") as tar:
            for pkg in ("toolkit", "tui"):
                tar.add(repo / pkg, arcname=pkg,
                        filter=lambda t: None if "__pycache__" in t.name else t)
        site = "$(/opt/rtk/venv/bin/python -c 'import site; print(site.getsitepackages()[0])')"
        self.run(f"curl -sf {http.url('rtk-src.tgz', host='10.0.2.2')} | tar xz -C {site}")

    def close_shell(self) -> None:
        self.console.send("stty echo; exit\r")

    # --- lifecycle -----------------------------------------------------------
    def monitor(self, command: str) -> str:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.monitor_path)
        s.sendall(command.encode() + b"\n")
        time.sleep(0.5)
        s.settimeout(1)
        try:
            return s.recv(65536).decode("utf-8", "replace")
        except OSError:
            return ""
        finally:
            s.close()

    def wait_exit(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def power_cut(self, timeout: float = 30) -> None:
        """Quit QEMU from its monitor, at once: a power cut for the guest (no shutdown,
        nothing of the guest's page cache written; what reached the virtual disks is in
        their host files)."""
        self.monitor("quit")
        self.proc.wait(timeout)
        self.stop()

    def stop(self) -> None:
        stop_process(self.proc)
        self.console.close()
        self._qemu_log.close()


def have_vm_lab() -> str | None:
    """Why the VM lab cannot run here, or None when it can."""
    for tool in ("qemu-system-x86_64", "tgtd", "tgtadm"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "the VM lab needs root (tgtd)"
    return None
