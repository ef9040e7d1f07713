"""An OpenSSH client on a pty of its own (80x24), its screen rendered through pyte: a
test logs in to the guest through QEMU's user network (``Guest(hostfwd=...)``, the
host's 127.0.0.1 only) and reads the menu as a technician's terminal shows it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pyte

from vmlab import stop_process


def ssh_argv(port: int, known_hosts: Path, *options: str) -> list[str]:
    """``ssh -tt`` to root@127.0.0.1:PORT: no user config, host key remembered in
    ``known_hosts`` on first use (the test compares it with the guest's)."""
    return ["ssh", "-tt", "-F", "/dev/null", "-p", str(port),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR", *options, "root@127.0.0.1"]


def key_options(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]


def password_options() -> list[str]:
    return ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
            "-o", "NumberOfPasswordPrompts=1"]


def askpass_env(askpass: Path) -> dict:
    """ssh reads the password from the ``askpass`` program (it prints it), never a tty."""
    return {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": "none"}


class SshTerminal:
    """``argv`` (an ssh command) on a new 80x24 pty; ``text()`` is its screen."""

    def __init__(self, argv: list[str], env: dict | None = None, log: Path | None = None):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.log = open(log, "wb") if log else None  # noqa: SIM115 - closed in close()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the client ended
                return
            if not data:
                return
            with self.lock:
                self.raw += data
                self.stream.feed(data)
            if self.log:
                self.log.write(data)
                self.log.flush()

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def raw_text(self) -> str:
        with self.lock:
            return self.raw.decode("utf-8", "replace")

    def wait_screen(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if re.search(pattern, screen):
                return screen
            if self.proc.poll() is not None:
                time.sleep(0.5)  # the last bytes
                break
            time.sleep(0.25)
        raise AssertionError(f"ssh never showed {pattern!r} (exit {self.proc.poll()}); it "
                             f"shows:\n{self.text()}\nraw: {self.raw_text()[-500:]!r}")

    def send(self, data: bytes | str) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        stop_process(self.proc)
        self.thread.join(5)
        os.close(self.master)
        if self.log:
            self.log.close()
