"""Shared fixtures and helpers of the tests.

Layers (pytest markers): unit (seconds), host (root, loop devices, mkfs), vm (boots the
built ISO in QEMU). Select with -m. The naming rule: every test file, in tests/ or a
directory below it, is ``test_<area>_<layer>.py``, its layer ``unit``, ``host`` or ``vm``,
and every test in it carries that layer's marker (a test with no marker is a unit test);
collection fails otherwise (``pytest_collection_modifyitems`` below).

Fixtures: ``log_dir``, ``run_dir``, ``rtk_dirs`` (RTK_LOG_DIR, RTK_RUN_DIR in tmp_path),
``loops`` (loop devices detached at the end), ``need_root``, ``iso``, ``netboot``,
``hashing_fails_at``. Helpers, imported by test modules (``from conftest import ...``):
``MiB``, ``GiB``; ``RTK`` and ``rtk()`` (the command line, run as a subprocess);
``disk()`` and ``partition()`` (inventory objects built by hand); ``guest_probe()`` and
``guest_disks()`` (a QEMU guest's captured probe, its inventory); ``own_disks()`` (the
machine's inventory cut down to a test's own devices); for the menu, with
``screen.press`` and ``screen.render``: ``type_text``, ``words``, ``dialog``,
``choose``, ``wait_worker``, ``wait_result``, ``confirm_by_typing``;
``closed_port_url()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
sys.path.insert(0, str(TESTS))

from loopdev import loop_device  # noqa: E402  (tests/ is on sys.path from here on)
from screen import press, render  # noqa: E402
from writeguard import pytest_runtest_call, write_guard  # noqa: E402,F401  (the write guard)

MiB, GiB = 1 << 20, 1 << 30

# --- layers ------------------------------------------------------------------------------

LAYERS = ("unit", "host", "vm")
TEST_FILE = re.compile(r"test_[a-z0-9]+(?:_[a-z0-9]+)*_(unit|host|vm)\.py")


def pytest_itemcollected(item):
    """A test with no layer marker is a unit test (marked before -m selects)."""
    if not any(item.get_closest_marker(m) for m in LAYERS):
        item.add_marker(pytest.mark.unit)


def layer_problem(path: Path, markers: set[str]) -> str | None:
    """Why a test in the file ``path``, with the layer ``markers``, breaks the naming rule."""
    m = TEST_FILE.fullmatch(path.name)
    if m is None:
        return f"is not named test_<area>_<layer>.py, <layer> one of {', '.join(LAYERS)}"
    if markers != {m.group(1)}:
        return (f"is marked {' and '.join(sorted(markers)) or 'with no layer'}, "
                f"in a file of the {m.group(1)} layer")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Fail the collection (before -m deselects anything) when a test breaks the rule."""
    wrong: dict[str, str] = {}
    for item in items:
        path = Path(str(item.path))
        if TESTS not in path.parents:  # tests/ and every directory below it
            continue
        markers = {m.name for m in item.iter_markers() if m.name in LAYERS}
        problem = layer_problem(path, markers)
        if problem and problem.startswith("is not named"):
            wrong[str(path.relative_to(TESTS))] = problem  # once per file
        elif problem:
            wrong[item.nodeid] = problem
    if wrong:
        raise pytest.UsageError("tests break the layer naming rule (tests/conftest.py):\n"
                                + "\n".join(f"  {k} {v}" for k, v in sorted(wrong.items())))


@pytest.fixture(scope="session")
def iso() -> Path:
    path = Path(os.environ.get("RTK_ISO", ROOT / "build" / "rtk.iso"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: run ./build_iso.sh first (or set RTK_ISO)")
    return path.resolve()


@pytest.fixture(scope="session")
def netboot() -> Path:
    """build/netboot: vmlinuz, initrd.img, filesystem.squashfs and the example entries."""
    path = Path(os.environ.get("RTK_NETBOOT", ROOT / "build" / "netboot"))
    if not (path / "filesystem.squashfs").exists():
        pytest.fail(f"{path} has no netboot artifacts: run ./build_iso.sh first "
                    "(or set RTK_NETBOOT)")
    return path.resolve()


@pytest.fixture
def log_dir(tmp_path, monkeypatch) -> Path:
    """Reports and logs in ``tmp_path/log`` (RTK_LOG_DIR): never in /var/log/rtk.

    The test's own directory counts as a state that survives a reboot, whatever this
    machine's /tmp is (a tmpfs /tmp, or a chroot, would otherwise make the menu warn
    before every long job); tests of that warning replace ``state.location`` again."""
    d = tmp_path / "log"
    monkeypatch.setenv("RTK_LOG_DIR", str(d))
    from toolkit.system import state

    real = state.location

    def location(path=None, *, mountinfo=None):
        loc = real(path, mountinfo=mountinfo)
        if mountinfo is None and os.path.realpath(loc.real).startswith(os.path.realpath(d)):
            return dataclasses.replace(loc, persistent=True, writable=True)
        return loc
    monkeypatch.setattr(state, "location", location)
    return d


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """Roles and mounts under ``tmp_path/run`` (RTK_RUN_DIR): never in /run/rtk."""
    d = tmp_path / "run"
    monkeypatch.setenv("RTK_RUN_DIR", str(d))
    return d


@pytest.fixture
def rtk_dirs(tmp_path, log_dir, run_dir) -> Path:
    """Both ``log_dir`` and ``run_dir``: a test never touches /var/log/rtk or /run/rtk."""
    return tmp_path


@pytest.fixture(scope="session")
def need_root():
    if os.geteuid() != 0:
        pytest.fail("this layer needs root (loop devices, mkfs, tgtd)")


@pytest.fixture
def hashing_fails_at(monkeypatch):
    """``hashing_fails_at(pos)``: from image byte ``pos`` on, the hash stage's thread
    (rtk-hasher) raises MemoryError("made to fail"), as a bug or a full memory would."""
    import threading

    from toolkit.blockio import hashing

    def arm(pos: int) -> None:
        for cls in (hashing.RegionHasher, hashing.PieceHasher):  # a restore's, a copy's
            def update(self, at, data, real=cls.update):
                if threading.current_thread().name == "rtk-hasher" and at >= pos:
                    raise MemoryError("made to fail")
                return real(self, at, data)
            monkeypatch.setattr(cls, "update", update)
    return arm


@pytest.fixture(scope="session", autouse=True)
def _session_temp(tmp_path_factory):
    """Tells :func:`linux_images.our_mounts` this run's base temporary directory."""
    import linux_images
    linux_images.SESSION_TEMP = tmp_path_factory.getbasetemp()


@pytest.fixture
def loops(need_root):
    """``loops(image, sector_size=512, partitions=False)`` -> /dev/loopN over ``image``,
    detached (with its partitions) at the end of the test."""
    with contextlib.ExitStack() as stack:
        def attach(image: Path, sector_size: int = 512, partitions: bool = False) -> str:
            return stack.enter_context(loop_device(image, sector_size, partitions))
        yield attach


# --- the command line ----------------------------------------------------------------------

RTK = [sys.executable, "-m", "toolkit.cli"]  # ``rtk`` from this tree, for Popen


def rtk(*args: str, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """``rtk ARGS...`` run from the repository as a subprocess; stdout and stderr captured
    as text. ``env_extra``: variables added to the test's environment."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([*RTK, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          **kw)


def closed_port_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens (a report server that is down)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/report"


# --- disks ---------------------------------------------------------------------------------

def disk(name: str = "sdb", serial: str | None = None, *, size: int = 100 * MiB,
         sector: int = 512, transport: str = "sata", **kw):
    """An inventory :class:`~toolkit.disks.inventory.Disk` built by hand: ``/dev/NAME``,
    ``sector``-byte logical and physical sectors; ``kw``: any other field."""
    from toolkit.disks.inventory import Disk
    return Disk(name=name, path=f"/dev/{name}", size=size, logical_sector_size=sector,
                physical_sector_size=sector, transport=transport, serial=serial, **kw)


def partition(d, number: int, start: int, size: int, **kw):
    """Partition ``number`` of the hand-built disk ``d`` (appended to its partitions)."""
    from toolkit.disks.inventory import Partition
    p = Partition(name=f"{d.name}{number}", path=f"/dev/{d.name}{number}", number=number,
                  start=start, size=size, **kw)
    d.partitions.append(p)
    return p


def guest_probe() -> dict:
    """``rtk disks --dump-probe`` of a QEMU guest (BIOS, an iSCSI LUN, a virtio disk, the
    boot CD), a fresh copy."""
    return json.loads((FIXTURES / "guest-probe-bios-iscsi.json").read_text())


def guest_disks() -> list:
    """The inventory of that guest: ``guest_probe()`` replayed through toolkit.disks."""
    from toolkit.disks.inventory import disks_from_probe
    return disks_from_probe(guest_probe())


def own_disks(*paths: str, serials: dict[str, str] | None = None):
    """A ``list_disks`` for the code under test: the machine's inventory cut down to the
    test's own devices ``paths``, so that other loop devices and the machine's disks
    change nothing. ``serials`` ({path: serial}): the serial udev would give a SCSI disk
    (loop devices have none)."""
    from toolkit.disks.inventory import list_disks as inventory
    serials = serials or {}

    def list_disks():
        return [dataclasses.replace(d, serial=serials[d.path]) if d.path in serials else d
                for d in inventory() if d.path in paths]
    return list_disks


# --- the menu (tui.app.App), driven by keys ------------------------------------------------

def type_text(app, text: str) -> str:
    """Type ``text`` key by key; the screen after it."""
    return press(app, *text)


def words(screen: str) -> str:
    """The screen's text in one line (long messages wrap)."""
    return " ".join(screen.split())


def dialog(screen: str) -> str:
    """The text inside the dialog's box, in one line (the screen shows beside it)."""
    lines = screen.splitlines()
    top = next(i for i, line in enumerate(lines) if "┌" in line)
    inside = []
    for line in lines[top + 1:]:
        if "└" in line:
            break
        inside.append(line[line.index("│") + 1:line.rindex("│")])
    return words(" ".join(inside))


def choose(app, names_in_order: list[str], wanted: str) -> str:
    """Move down a list to ``wanted`` (its place in ``names_in_order``), press Enter."""
    return press(app, *(["down"] * names_in_order.index(wanted)), "enter")


def wait_worker(app, timeout: float = 60) -> str:
    """Let the app's background work (inspection, mount, network) finish; the screen."""
    if app.worker is not None:
        app.worker.join(timeout)
    app.drain()
    return render(app)


def wait_result(app, job, timeout: float = 60) -> str:
    """Drain the app until ``job`` (``app.copy``, ``app.restore``) has its result."""
    deadline = time.monotonic() + timeout
    while job.result is None and time.monotonic() < deadline:
        job.worker.join(0.1)
        app.drain()
    app.drain()
    return render(app)


def confirm_by_typing(app, job, name: str, wrong: str) -> None:
    """The typed confirmation of a write: the screen asks for ``name``; ``wrong`` typed
    starts nothing, then ``name`` starts ``job``'s worker."""
    assert f"Type {name} to confirm" in render(app)
    type_text(app, wrong)
    screen = press(app, "enter")
    assert f"Type exactly {name}" in screen and job.worker is None
    press(app, *["backspace"] * len(wrong))
    type_text(app, name)
    press(app, "enter")
    assert job.worker is not None
