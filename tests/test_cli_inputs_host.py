"""Bad input to ``rtk copy`` and ``rtk verify`` on real loop devices (issue 13, item 4):
each case ends with its exit code and a plain message, never a Python traceback, and the
target's bytes are the same before and after (hashed whole). Needs root; seconds.

The loop devices are ``losetup`` over temporary files, detached by the ``loops``
fixture's finalizer. The non-root cases run ``rtk`` in a Python that drops to nobody
(65534) after importing the toolkit: the interpreter lives under /root, which nobody may
not read, so a plain ``setpriv`` would not even start it.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, RTK, MiB, rtk

from toolkit import exitcodes

pytestmark = pytest.mark.host

SIZE = 8 * MiB


def digest(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while data := f.read(4 * MiB):
            h.update(data)
    return h.hexdigest()


def image(path: Path, seed: int) -> Path:
    path.write_bytes(bytes((seed + i * 7) % 251 for i in range(4096)) * (SIZE // 4096))
    return path


@pytest.fixture
def pair(tmp_path, loops, log_dir):
    """(source, target): two loop devices over files of different content."""
    return (loops(image(tmp_path / "src.img", 1)), loops(image(tmp_path / "dst.img", 2)))


def no_traceback(r, code: int, *words: str) -> str:
    out = r.stderr + r.stdout
    assert "Traceback" not in out, out
    assert r.returncode == code, (r.returncode, out)
    for w in words:
        assert w in out, (w, out)
    return out


def copy(src: str, dst: str, *extra: str):
    return rtk("copy", src, dst, "--yes", "--target-id", dst, *extra)


# --- mapfiles ---------------------------------------------------------------------------

def test_a_malformed_mapfile_is_refused(pair, tmp_path):
    src, dst = pair
    bad = {"garbage.map": b"garbage\n", "binary.map": b"\xff\xfe\x00\x01\x80",
           "empty.map": b"", "gap.map": b"0x0 + 1\n0x0 0x200 +\n0x400 0x200 -\n"}
    before = digest(dst)
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        r = copy(src, dst, "--mapfile", str(tmp_path / name))
        no_traceback(r, exitcodes.EXIT_REFUSED, f"the mapfile {tmp_path / name}")
        assert digest(dst) == before, name


def test_a_mapfile_that_is_a_directory_a_device_or_a_fifo(pair, tmp_path):
    src, dst = pair
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    before, src_before = digest(dst), digest(src)
    for path, why in ((tmp_path / "adir", "is a directory"),
                      ("/dev/null", "not a regular file"), (src, "not a regular file"),
                      (tmp_path / "fifo", "not a regular file")):
        r = copy(src, dst, "--mapfile", str(path))
        no_traceback(r, exitcodes.EXIT_REFUSED, f"the mapfile {path}", why)
        assert digest(dst) == before, path
    assert digest(src) == src_before and Path(src).is_block_device()  # never replaced


# --- the confirmation prompt --------------------------------------------------------------

def prompt_then(src: str, dst: str, act) -> tuple[int, str]:
    """``rtk copy SRC DST`` on a terminal (a pty); ``act(proc, master)`` once it asks."""
    master, slave = pty.openpty()
    p = subprocess.Popen([*RTK, "copy", src, dst], cwd=ROOT, stdin=slave,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(slave)
    out, deadline = b"", time.monotonic() + 60
    try:
        while b"to go on: " not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], 1)
            if ready:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
        assert b"to go on: " in out, out
        # input() writes its prompt, then blocks in read(): a SIGINT between the two is
        # only acted on at the next signal (CPython's check comes with EINTR). A person is
        # never that quick; the test waits as a person would.
        time.sleep(0.5)
        act(p, master)
        rest, _ = p.communicate(timeout=60)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
    return p.returncode, (out + rest).decode(errors="replace")


@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-d"])
def test_ctrl_c_or_ctrl_d_at_the_prompt_cancels(pair, how):
    src, dst = pair
    before = digest(dst)

    def act(p, master):
        if how == "ctrl-c":
            p.send_signal(signal.SIGINT)
        else:
            os.write(master, b"\x04")
    code, out = prompt_then(src, dst, act)
    assert "Traceback" not in out, out
    assert code == exitcodes.EXIT_REFUSED, (code, out)
    assert "cancelled, nothing written" in out
    assert digest(dst) == before


# --- permissions ------------------------------------------------------------------------

AS_NOBODY = """
import os, sys
import toolkit.cli.main, toolkit.cli.copy, toolkit.cli.common, toolkit.copy.engine
import toolkit.copy.verify, toolkit.disks.inventory
import toolkit.disks.probe, toolkit.disks.roles, toolkit.disks.endpoint
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(toolkit.cli.main.main(sys.argv[1:]))
"""


def as_nobody(*args: str):
    return subprocess.run([sys.executable, "-c", AS_NOBODY, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_permission_denied_opening_a_device(pair):
    src, dst = pair
    before = digest(dst)
    hexhash = "0" * 64
    for args in (["verify", src, "--hash", hexhash], ["verify", src, dst],
                 ["copy", src, dst, "--yes", "--target-id", dst]):
        r = as_nobody(*args)
        no_traceback(r, exitcodes.EXIT_REFUSED, f"{src}: permission denied (run as root?)")
        assert digest(dst) == before, args


# --- rtk verify --hash --------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["abcd", "g" * 64, "0" * 63, "0" * 65, " "])
def test_verify_refuses_a_malformed_hash_before_reading(pair, bad, log_dir):
    src, _ = pair
    r = rtk("verify", src, "--hash", bad)
    no_traceback(r, exitcodes.EXIT_USAGE, "--hash", "nothing was read")
    assert not list(log_dir.glob("verify-*")) if log_dir.exists() else True  # no report
