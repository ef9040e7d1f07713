"""The runtime write guard of the host tests: only :mod:`toolkit.disks.gate` opens a block
device for writing.

An audit hook (``sys.addaudithook``, installed once per session, it cannot be removed)
sees every ``open`` event of the process: ``open()``, ``os.open()``, in any thread. An
open of a block device with write flags (O_WRONLY, O_RDWR; a mode with w, a, +) whose
caller is in the product (``toolkit/`` or ``tui/``) but not in ``toolkit/disks/gate.py``
is recorded; the :func:`write_guard` fixture (autouse where it is imported) fails the
test that made it. The tests' own helpers (writing a marker onto a loop device) and
programs run as subprocesses (qemu-img, sfdisk: they hold the gate's vouched path) are
not the product's Python code and are not counted.

Enable it in a test module (or a conftest) with ``from writeguard import
pytest_runtest_call, write_guard  # noqa: F401``.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = (str(ROOT / "toolkit") + os.sep, str(ROOT / "tui") + os.sep)
GATE = str(ROOT / "toolkit" / "disks" / "gate.py")
HERE = str(Path(__file__).resolve())

violations: list[str] = []
_installed = False
_lock = threading.Lock()
_busy = threading.local()  # the hook's own os.stat must not recurse into it


def _writes(mode, flags) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wa+x"):
        return True
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR))


def _is_block(path) -> bool:
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False  # an fd: opened before (and checked then)
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def offender(frame) -> str | None:
    """``file:line`` of the product's code that asked for this open, unless it is the
    gate's (None: the gate, or nothing of the product: a test, the standard library)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name == GATE:
            return None
        if name != HERE and name.startswith(PRODUCT):
            return f"{os.path.relpath(name, ROOT)}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return None


def _hook(event: str, args) -> None:
    if event != "open" or getattr(_busy, "on", False):
        return
    _busy.on = True
    try:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if not _writes(mode, flags) or not _is_block(path):
            return
        where = offender(sys._getframe(1))
        if where:
            with _lock:
                violations.append(f"{where} opened the block device {path!r} for writing "
                                  f"(mode {mode!r}, flags {flags!r}) outside the gate")
    finally:
        _busy.on = False


def install() -> None:
    """Install the audit hook once (hooks stay for the life of the process)."""
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


def _message(new: list[str]) -> str:
    return ("a block device was opened for writing outside toolkit/disks/gate.py:\n"
            + "\n".join(new))


@pytest.fixture(autouse=True)
def write_guard(request):
    """Fail a host test during which the product opened a block device for writing
    anywhere but in the gate: in its call (through :func:`pytest_runtest_call`, when
    registered too), else at its teardown (its fixtures, a worker thread still running)."""
    if request.node.get_closest_marker("host") is None:
        yield
        return
    install()
    start = len(violations)
    request.node.stash[_SEEN] = start
    yield
    with _lock:
        new = violations[request.node.stash[_SEEN]:]
    if new:
        pytest.fail(_message(new), pytrace=False)


_SEEN = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The test's own call fails (not only its teardown) when it made such an open."""
    start = len(violations)
    result = yield
    if item.get_closest_marker("host") is not None and _installed:
        with _lock:
            new = violations[start:]
        if new:
            item.stash[_SEEN] = len(violations)  # reported here, not again at teardown
            pytest.fail(_message(new), pytrace=False)
    return result
