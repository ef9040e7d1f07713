"""The menu on a real terminal (a pty that is its controlling terminal, 80x24, its screen
read through pyte) while a long job runs in a thread of it, as a copy or restore does:
Ctrl-C, Ctrl-\\, Ctrl-Z and Ctrl-S are keys there, not signals that end or freeze the menu
and its job, and the Shell entry still has them; and the remote menu (rtk-remote-login, in
tmux, with rtk-console) outlives a dropped link: the next login attaches to the same menu,
its job still running, until remote access is turned off (a client's terminal unknown
here is driven as an xterm). rtk-remote-login and
rtk-console are the image's own scripts, their paths pointed into the test's directory.
(In the live system: tests/test_field_vm.py, over real SSH.)"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pyte
import pytest
from conftest import ROOT

from toolkit.system import remote

pytestmark = pytest.mark.host

SBIN = ROOT / "iso" / "config" / "includes.chroot" / "usr" / "local" / "sbin"
TMUX_CONF = ROOT / "iso" / "config" / "includes.chroot" / "etc" / "rtk" / "tmux-remote.conf"
MENU = r"Recovery Toolkit .*\n.*Main menu"

# The menu, with a job that counts in a file (a stand-in for a copy's progress: the same
# thread of the menu's process, tui.job.Job) and writes its pid once; like tui.app.main().
DRIVER = """\
import os, sys, time
sys.path.insert(0, sys.argv[1])
from tui.app import App
from tui.job import Job
ticks = sys.argv[2]
with open(ticks + ".pids", "a") as f:
    f.write(f"{os.getpid()}\\n")
app = App(log_dir=os.environ["RTK_LOG_DIR"])
def run(cancel):
    n = 0
    while not cancel.is_set():
        n += 1
        with open(ticks, "w") as f:
            f.write(str(n))
        time.sleep(0.05)
Job(app, "Stop?", "", "Keep").start("slow-job", run, print, print)
try:
    app.run()
except KeyboardInterrupt:
    sys.exit(130)
"""


class Terminal:
    """``argv`` on a new 80x24 pty that is its controlling terminal (its session's), as
    a console's or an SSH login's is: the line discipline's Ctrl-C reaches it as SIGINT."""

    def __init__(self, argv: list[str], env: dict):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.master: int | None = master
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except (OSError, TypeError):  # EIO: it ended; the master closed
                return
            if not data:
                return
            with self.lock:
                self.stream.feed(data)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def wait_screen(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, screen := self.text()):
                return screen
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"never showed {pattern!r} (exit {self.proc.poll()}):\n"
                             f"{self.text()}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        """The link drops: the terminal's far end goes (sshd closes the pty's master),
        the kernel hangs up its session (SIGHUP)."""
        os.close(self.master)
        self.master = None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.master is not None:
            self.hang_up()
        self.thread.join(5)


def ticks(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def wait_ticking(path: Path, timeout: float = 30) -> int:
    """Until the job counts on (twice in a row), its count then."""
    deadline = time.monotonic() + timeout
    first = ticks(path)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if (now := ticks(path)) > first > 0:
            return now
        first = max(first, now)
    raise AssertionError(f"the job does not count on ({path}: {ticks(path)})")


def _state(pid: int) -> str:
    """The process's state letter (R, S, T stopped, Z zombie...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    try:
        return _state(pid) != "Z"  # a zombie is not alive
    except FileNotFoundError:
        return False


@pytest.fixture
def menu(tmp_path, log_dir, run_dir):
    """The driver (the menu and its job) as a program: ``(argv, env, ticks file)``."""
    driver = tmp_path / "menu.py"
    driver.write_text(DRIVER)
    run_dir.mkdir(exist_ok=True)
    env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    return [sys.executable, str(driver), str(ROOT), str(tmp_path / "ticks")], env, \
        tmp_path / "ticks"


def test_ctrl_c_ctrl_backslash_ctrl_z_ctrl_s_leave_the_menu_and_its_job(menu):
    argv, env, count = menu
    term = Terminal(argv, env)
    try:
        term.wait_screen(MENU)
        wait_ticking(count)
        for key in (b"\x03", b"\x1c", b"\x1a", b"\x13"):  # ^C ^\ ^Z ^S
            term.send(key)
            time.sleep(0.7)
            assert term.proc.poll() is None, f"the menu ended on {key!r}: {term.text()}"
            assert _state(term.proc.pid) != "T", f"{key!r} stopped the menu"
        wait_ticking(count)  # the job goes on
        term.send(b"k")  # and the menu still answers (^S froze nothing)
        term.wait_screen(r"Keyboard layout", timeout=20)
    finally:
        term.close()


def test_the_shell_entry_has_the_terminals_keys_and_the_menu_takes_them_back(menu, tmp_path):
    """The Shell entry's commands keep their Ctrl-C (the menu gives the terminal's keys
    back while the shell runs); back in the menu, Ctrl-C is a key again."""
    argv, env, count = menu
    shell, seen = tmp_path / "shell", tmp_path / "stty"
    shell.write_text(f"#!/bin/sh\nstty -a > {seen}\n")
    shell.chmod(0o755)
    term = Terminal(argv, {**env, "SHELL": str(shell)})
    try:
        term.wait_screen(MENU)
        term.send(b"s")
        deadline = time.monotonic() + 20
        while not (seen.exists() and "intr" in seen.read_text()) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        stty = seen.read_text()
        assert re.search(r"\bintr = \^C;", stty) and re.search(r"\bsusp = \^Z;", stty), stty
        term.wait_screen(MENU)  # the shell ended: the menu is back
        time.sleep(0.5)
        term.send(b"\x03")
        time.sleep(0.7)
        assert term.proc.poll() is None, "Ctrl-C after the Shell entry ended the menu"
        wait_ticking(count)
    finally:
        term.close()


@pytest.fixture
def login(tmp_path, menu, run_dir):
    """rtk-remote-login and rtk-console as the image has them, their paths in the test's
    directory (no systemd scope here): ``(argv, env, ticks file, tmux socket)``."""
    argv, env, count = menu
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (tests/run.sh installs it)")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    socket = run_dir / "tmux-remote.sock"
    (bin_ / "rtk-menu").write_text("#!/bin/sh\nexec " + " ".join(argv) + "\n")
    console = (SBIN / "rtk-console").read_text().replace(
        "/usr/local/bin/rtk-menu", str(bin_ / "rtk-menu")).replace(
        "/run/rtk/unattended-console.json", str(tmp_path / "none.json"))
    (bin_ / "rtk-console").write_text(console)
    text = (SBIN / "rtk-remote-login").read_text()
    for old, new in (("/run/rtk/tmux-remote.sock", str(socket)),
                     ("/etc/rtk/tmux-remote.conf", str(TMUX_CONF)),
                     ("/usr/local/sbin/rtk-console", str(bin_ / "rtk-console")),
                     ("/run/systemd/system", str(tmp_path / "no-systemd"))):
        assert old in text, old
        text = text.replace(old, new)
    (bin_ / "rtk-remote-login").write_text(text)
    for p in bin_.iterdir():
        p.chmod(0o755)
    yield [str(bin_ / "rtk-remote-login")], env, count, socket
    subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True)


def test_a_dropped_link_leaves_the_remote_menu_and_its_job_the_next_login_attaches(login):
    argv, env, count, socket = login
    # (a terminal this machine has no terminfo for, as kitty's or foot's in the image:
    # tmux alone would refuse it, "missing or unsuitable terminal")
    first = Terminal(argv, {**env, "TERM": "rtk-no-such-term"})
    try:
        first.wait_screen(MENU)
        wait_ticking(count)
        first.send(b"\x03")  # Ctrl-C in the remote menu: a key there too
        time.sleep(0.7)
        first.send(b"k")
        first.wait_screen(r"Keyboard layout", timeout=20)
        first.hang_up()  # the link drops
        first.proc.wait(20)  # the login ended...
    finally:
        first.close()
    pids = [int(p) for p in (count.parent / "ticks.pids").read_text().split()]
    assert len(pids) == 1 and alive(pids[0])  # ... the menu did not
    wait_ticking(count)  # nor its job
    again = Terminal(argv, env)
    try:
        again.wait_screen(r"Keyboard layout", timeout=30)  # the same menu, where it was
        assert (count.parent / "ticks.pids").read_text().split() == [str(pids[0])]
        # turning remote access off ends the remote menu, its job with it
        remote.end_remote_menu()
        deadline = time.monotonic() + 20
        while alive(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pids[0])
        again.proc.wait(20)
        assert not socket.exists() or subprocess.run(
            ["tmux", "-S", str(socket), "has-session"], capture_output=True).returncode != 0
    finally:
        again.close()
