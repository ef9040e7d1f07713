"""The write gate's rules, without devices: the static scan (no code but
``toolkit/disks/gate.py`` opens anything for writing that could be a block device; the
disk-writing programs run only where the gate's hold is given; the front ends pass
their consent on), the resolution on a hand-made sysfs tree (partitions as byte ranges,
loop devices over files and devices, dm members, serials, files on filesystems), the
collisions and the consents, and the runtime guard's own logic."""

from __future__ import annotations

import ast
import inspect
import os
import stat
import types
from pathlib import Path

import pytest
from conftest import MiB, disk, partition

from toolkit.blockio import blockdev
from toolkit.disks import aliases, gate
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.errors import Refused

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
GATE = "toolkit/disks/gate.py"
WRITE_FLAGS = {"O_WRONLY", "O_RDWR"}

# Code that opens a file for writing, each a regular file by construction (a temporary
# file it creates, a log, a sysfs attribute, /dev/null or a terminal), never a block
# device: (file, function) -> why. Any other write-capable open fails the scan: a block
# device is opened for writing only by the gate (open_target); a regular file that may be
# given by a person, through gate.open_file (which refuses a block device).
REGULAR_FILE_WRITERS = {
    ("toolkit/atomic.py", "write_atomic"): "a new temporary file beside PATH (mkstemp: "
                                           "O_EXCL, O_NOFOLLOW), renamed over; PATH itself "
                                           "must be a regular file or absent",
    ("toolkit/cli/main.py", "_drop_stdout"): "os.devnull",
    ("toolkit/iscsi/adm.py", "_log"): "the iSCSI log in the log directory",
    ("toolkit/iscsi/manager.py", "set_recovery_timeout"): "a sysfs attribute (recovery_tmo)",
    ("toolkit/net/resolv.py", "write"): "resolv.conf's temporary file",
    ("toolkit/restore/checksum.py", "_hash_pass"): "the HTTP image's spool in a new "
                                                 "TemporaryDirectory",
    ("toolkit/restore/container.py", "_copy_into"): "the unpacked container in a new "
                                                 "TemporaryDirectory",
    ("toolkit/restore/ntfs_file.py", "_write_in_place"): "a file on the ntfs-3g mount (our "
                                                         "own temporary mount point) of a "
                                                         "partition the gate lent: O_NOFOLLOW, "
                                                         "checked to be a regular file there",
    ("toolkit/jobs/report.py", "_claim"): "a report's name, created exclusively (O_EXCL, "
                                          "O_NOFOLLOW) in the log directory",
    ("toolkit/restore/linux_initramfs.py", "add_module_config"): "a configuration file of "
                                                             "the restored Linux, on our own "
                                                             "mount of it (O_NOFOLLOW, its "
                                                             "folder checked to be inside)",
    ("toolkit/restore/shrink.py", "set_hidden_sectors"): "a FUSE export of our own overlay "
                                                      "(O_NOFOLLOW, a regular file: _ours)",
    ("toolkit/restore/shrink_table.py", "write_table"): "the new table's sparse file, "
                                                        "created (O_EXCL, O_NOFOLLOW) in a "
                                                        "new TemporaryDirectory",
    ("toolkit/restore/shrink.py", "prepared"): "the owner file in its new TemporaryDirectory",
    ("toolkit/system/qsd.py", "exported"): "the FUSE mount points, new files in a new "
                                           "TemporaryDirectory",
    ("toolkit/restore/spool.py", "_take"): "the multicast stream held in a new "
                                           "TemporaryDirectory (O_EXCL, O_NOFOLLOW)",
    ("toolkit/restore/vhdx.py", "sparse_copy"): "the replayed copy of a VHDX: a new file "
                                                "(O_EXCL, O_NOFOLLOW) in a new "
                                                "TemporaryDirectory",
    ("toolkit/system/bundle.py", "build"): "the support bundle (a new file in the log dir)",
    ("toolkit/system/state.py", "_record"): "the state journal in the run directory",
    ("toolkit/system/state.py", "_merge"): "the state journal in the run directory",
    ("toolkit/system/tools.py", "emit"): "tools.log in the log directory",
    ("toolkit/unattended/boot.py", "open_streams"): "the console terminals and the log file",
}

# Programs that write a disk: where they may be named, and why it is safe there.
DISK_WRITERS = {"dd", "sfdisk", "sgdisk", "growpart", "e2fsck", "resize2fs", "ntfsresize",
                "xfs_growfs", "wipefs", "blkdiscard", "parted", "mkswap", "ntfsfix",
                "xfs_repair", "tune2fs", "fdisk", "gdisk", "mke2fs"}
WRITER_MODULES = {
    "toolkit/restore/fit.py": "every path comes from the gate's hold (vouch, lend)",
    "toolkit/restore/shrink.py": "only its own overlay's FUSE exports, each checked to be "
                                 "a regular file (_ours), never a device",
    "toolkit/restore/shrink_plan.py": "read-only: ntfsresize --info, resize2fs -P on "
                                      "read-only FUSE exports of the image",
    "toolkit/system/tools.py": "the table of packages: names only, nothing run",
}


def _modules():
    for pkg in ("toolkit", "tui"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def _parents(tree: ast.AST) -> dict:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _function(node, parents) -> ast.AST | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node
    return None


def _names(node) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
        {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _flag_names(flags, fn) -> set[str]:
    """The O_* names a flags expression is made of (following assignments in ``fn``)."""
    names = _names(flags)
    if fn is not None:
        for a in ast.walk(fn):
            if isinstance(a, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = a.targets if isinstance(a, ast.Assign) else [a.target]
                if any(isinstance(t, ast.Name) and t.id in names for t in targets) and a.value:
                    names |= _names(a.value)
    return names


def _mode(node: ast.Call, position: int):
    if len(node.args) > position:
        return node.args[position]
    return next((k.value for k in node.keywords if k.arg == "mode"), None)


def write_opens(tree: ast.AST) -> list[tuple[str, str, int]]:
    """``(function, what, line)`` of every call that may open a path for writing:
    ``os.open`` whose flags hold O_WRONLY/O_RDWR or cannot be read (a parameter),
    ``open()`` with a mode that writes (or one that cannot be read), ``.open()``
    (``Path.open``, ``tarfile.open``) with a literal mode that writes,
    ``write_text``/``write_bytes``, ``open_device(write=...)``."""
    parents, found = _parents(tree), []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f, what = node.func, None
        fn = _function(node, parents)
        if isinstance(f, ast.Attribute) and f.attr == "open" and \
                isinstance(f.value, ast.Name) and f.value.id == "os":
            flags = node.args[1] if len(node.args) > 1 else None
            names = _flag_names(flags, fn) if flags is not None else set()
            if names & WRITE_FLAGS or not any(n.startswith("O_") for n in names):
                what = "os.open for writing"
        elif isinstance(f, ast.Name) and f.id == "open":
            mode = _mode(node, 1)
            if mode is not None and not (isinstance(mode, ast.Constant)
                                         and isinstance(mode.value, str)
                                         and not set(mode.value) & set("wax+")):
                what = f"open(mode {ast.unparse(mode)})"
        elif isinstance(f, ast.Attribute) and f.attr == "open":  # Path.open, tarfile.open
            mode = _mode(node, 0)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) \
                    and set(mode.value) & set("wax+"):
                what = f"{ast.unparse(f)}({mode.value!r})"
        elif isinstance(f, ast.Attribute) and f.attr in ("write_text", "write_bytes"):
            what = f.attr
        elif isinstance(f, ast.Attribute) and f.attr == "open_device" and \
                any(k.arg == "write" for k in node.keywords):
            what = "open_device(write=...)"
        if what:
            found.append((fn.name if fn else "<module>", what, node.lineno))
    return found


def test_the_scan_sees_write_opens():
    sample = ast.parse(
        "import os\n"
        "def a(p):\n    return os.open(p, os.O_RDWR | os.O_EXCL)\n"
        "def b(p):\n    flags = os.O_RDONLY\n    flags |= os.O_WRONLY\n"
        "    return os.open(p, flags)\n"
        "def c(p, flags):\n    return os.open(p, flags)\n"
        "def d(p):\n    return open(p, 'r+b')\n"
        "def e(p, m):\n    return open(p, m)\n"
        "def f(p):\n    return blockdev.open_device(p, write=True)\n"
        "def g(p):\n    return os.open(p, os.O_RDONLY | os.O_CLOEXEC), open(p, 'rb'), open(p)\n"
        "def h(p):\n    return p.open('w')\n")
    assert [fn for fn, _what, _line in write_opens(sample)] == list("abcdefh")


def test_only_the_gate_opens_for_writing():
    """No code but the gate opens a path for writing, except the regular-file writers
    listed (each with why its path is never a block device)."""
    seen, wrong = set(), []
    for rel, tree in _modules():
        for fn, what, line in write_opens(tree):
            if rel == GATE:
                seen.add(fn)
            elif (rel, fn) not in REGULAR_FILE_WRITERS:
                wrong.append(f"{rel}:{line} ({fn}): {what}")
    assert {"open_target", "open_file"} <= seen, "the scan finds the gate's own opens"
    assert not wrong, ("code outside toolkit/disks/gate.py opens a path for writing: open a "
                       "block device through gate.open_target, a regular file a person may "
                       "name through gate.open_file, or add a file the code creates itself "
                       "to REGULAR_FILE_WRITERS with the reason:\n" + "\n".join(wrong))


def test_disk_writing_programs_run_only_under_the_gates_hold():
    wrong = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in DISK_WRITERS \
                    and rel not in WRITER_MODULES:
                wrong.append(f"{rel}:{node.lineno}: {node.value}")
    assert not wrong, "a disk-writing program named outside " + ", ".join(WRITER_MODULES) \
        + ":\n" + "\n".join(wrong)
    # qemu-img writes only in convert_range, whose target comes from the gate's hold
    qemu = ast.parse((ROOT / "toolkit/restore/qemu.py").read_text())
    converts = [f.name for f in ast.walk(qemu) if isinstance(f, ast.FunctionDef)
                and any(isinstance(c, ast.Constant) and c.value == "convert"
                        for c in ast.walk(f))]
    # convert_range_to_file: a new file in the caller's TemporaryDirectory (it refuses a
    # name that exists), for a partition's bytes (the ESP) or a range read by qemu-img
    assert set(converts) <= {"first_mib", "convert_range", "convert_range_to_file"}, converts
    src = inspect.getsource(__import__("toolkit.restore.qemu",
                                       fromlist=["x"]).convert_range_to_file)
    assert "os.path.lexists(out)" in src
    src = inspect.getsource(__import__("toolkit.restore.qemu", fromlist=["x"]).convert_range)
    assert "_target_file(target, writing=True)" in src


def test_the_front_ends_pass_their_consent():
    """The CLI, the menu and unattended runs call copy() and restore() with consent=."""
    wrong = []
    for rel in ("toolkit/cli/copy.py", "toolkit/cli/restore.py", "tui/controllers/copy.py",
                "tui/controllers/restore.py", "toolkit/unattended/job.py",
                "toolkit/unattended/restore_steps.py", "toolkit/unattended/copy_steps.py"):
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = [ast.unparse(node.func), *(ast.unparse(a) for a in node.args)]
            runs = any(c.endswith((".copy", "restore.restore")) for c in called)
            if runs and not any(k.arg == "consent" for k in node.keywords):
                wrong.append(f"{rel}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not wrong, "\n".join(wrong)


def test_open_device_cannot_open_for_writing():
    assert "write" not in inspect.signature(blockdev.open_device).parameters
    with pytest.raises(TypeError):
        blockdev.open_device("/dev/null", write=True)


def _some_block_device() -> str | None:
    for name in sorted(os.listdir("/sys/class/block")):
        path = f"/dev/{name}"
        try:
            if stat.S_ISBLK(os.stat(path).st_mode):
                return path
        except OSError:
            continue
    return None


def test_writers_without_the_hold_refuse_a_block_device(monkeypatch, tmp_path):
    """fit's tools and qemu-img are not run on a block device without the gate's hold;
    gate.open_file refuses one; a regular file is still fine (tests, images)."""
    from toolkit.restore import fit, qemu
    from toolkit.restore.write import Failed, Target

    dev = _some_block_device()
    if dev is None:
        pytest.skip("no block device node here")
    ran = []
    monkeypatch.setattr(fit.tools, "run", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(qemu.tools, "popen", lambda *a, **k: ran.append(a))
    with pytest.raises(fit.FitError, match="write gate"):
        fit.relocate_gpt_backup(dev)
    with pytest.raises(fit.FitError, match="write gate"):
        fit.grow_filesystem(dev, "ext4")
    with pytest.raises(Failed, match="write gate"):
        qemu.convert_range("/x.qcow2", "qcow2", dev, MiB, MiB, lambda f: None, None)
    assert ran == []
    with pytest.raises(Refused, match="block device"):
        gate.open_file(dev)
    with pytest.raises(Refused, match="block device"):
        Target(dev)
    f = tmp_path / "image"
    f.write_bytes(bytes(MiB))
    with Target(str(f)) as t:
        assert t.size == MiB and t.hold is None


# --- resolution on a hand-made sysfs ---------------------------------------------------------


class FakeSys:
    """A sysfs tree (``sys``), a /dev without nodes (the loop driver is not asked), a
    mountinfo and swaps; devices added by :meth:`disk`, :meth:`part`, :meth:`loop`."""

    def __init__(self, root: Path):
        self.root = root
        self.sys, self.dev = root / "sys", root / "dev"
        for d in ("dev/block", "class/block", "devices/virtual/block"):
            (self.sys / d).mkdir(parents=True, exist_ok=True)
        self.dev.mkdir()
        self.mountinfo, self.swaps = root / "mountinfo", root / "swaps"
        self.mountinfo.write_text("")
        self.swaps.write_text("Filename Type Size Used Priority\n")
        self.minor = 0

    def resolver(self, **kw) -> aliases.Resolver:
        return aliases.Resolver(str(self.sys), str(self.dev), str(self.mountinfo),
                                str(self.swaps), **kw)

    def _add(self, path: Path, size: int, major: int = 240, minor: int | None = None,
             **attrs) -> int:
        if minor is None:
            self.minor += 1
            minor = self.minor
        path.mkdir(parents=True)
        (path / "dev").write_text(f"{major}:{minor}\n")
        (path / "size").write_text(f"{size // 512}\n")
        for k, v in attrs.items():
            (path / k).parent.mkdir(parents=True, exist_ok=True)
            (path / k).write_text(f"{v}\n")
        (self.sys / "dev/block" / f"{major}:{minor}").symlink_to(path)
        (self.sys / "class/block" / path.name).symlink_to(path)
        return os.makedev(major, minor)

    def disk(self, name: str, size: int, **attrs) -> int:
        return self._add(self.sys / "devices/virtual/block" / name, size, **attrs)

    def part(self, disk: str, n: int, start: int, size: int) -> int:
        return self._add(self.sys / "devices/virtual/block" / disk / f"{disk}p{n}", size,
                         partition=n, start=start // 512)

    def loop(self, name: str, backing: str, size: int, offset: int = 0, **kw) -> int:
        rdev = self.disk(name, size, **kw)
        d = self.sys / "devices/virtual/block" / name / "loop"
        d.mkdir()
        (d / "backing_file").write_text(backing + "\n")
        (d / "offset").write_text(f"{offset}\n")
        return rdev

    def holders(self, name: str, *slaves: str) -> None:
        d = self.sys / "devices/virtual/block" / name / "slaves"
        d.mkdir()
        for s in slaves:
            (d / s).symlink_to(self.sys / "class/block" / s)


@pytest.fixture
def fake(tmp_path) -> FakeSys:
    return FakeSys(tmp_path)


def _fs_device(fake: FakeSys, path: Path, size: int = 64 * MiB) -> int:
    """Make the fake sysfs know the (real) device number of ``path``'s filesystem."""
    st = os.stat(path)
    return fake._add(fake.sys / "devices/virtual/block" / "fsdisk", size,
                     major=os.major(st.st_dev), minor=os.minor(st.st_dev))


def test_partitions_are_byte_ranges_of_their_disk(fake):
    r = fake.resolver()
    sdx = fake.disk("sdx", 100 * MiB, serial="S1")
    p1 = fake.part("sdx", 1, MiB, 10 * MiB)
    p2 = fake.part("sdx", 2, 11 * MiB, 20 * MiB)
    whole, a, b = r.device_footprint(sdx), r.device_footprint(p1), r.device_footprint(p2)
    assert [(p.what.rsplit("/", 1)[1], p.start, p.end) for p in a.pieces] == [
        ("sdxp1", 0, 10 * MiB), ("sdx", MiB, 11 * MiB)]
    assert a.pieces[1].names == {"serial:S1"} and "partition 1 of" in a.pieces[1].trail[0]
    assert aliases.collision(b, a) is None  # side by side on one disk
    col = aliases.collision(whole, a)
    assert col and col.theirs.start == MiB and "both reach" in col.words()


def test_loops_over_files_and_devices_and_dm_members(fake, tmp_path, monkeypatch):
    r = fake.resolver()
    img, other = tmp_path / "a.img", tmp_path / "b.img"
    img.write_bytes(bytes(4096))
    other.write_bytes(bytes(4096))
    _fs_device(fake, img)
    l1 = fake.loop("loop1", str(img), 8 * MiB)
    l2 = fake.loop("loop2", str(img), 4 * MiB, offset=4 * MiB)  # the same file, further on
    l3 = fake.loop("loop3", str(other), 8 * MiB)
    link = tmp_path / "hard.img"
    os.link(img, link)
    fa, fb, fc = (r.device_footprint(x) for x in (l1, l2, l3))
    assert aliases.collision(fa, fb) is not None  # one file, overlapping bytes
    assert aliases.collision(fa, fc) is None  # two files on one filesystem: apart
    col = aliases.collision(fa, r.footprint(str(link)))  # a hard link of loop1's file
    assert col and col.theirs.key == col.ours.key and col.theirs.key.startswith("file:")
    # a loop over a partition of loop1 (losetup /dev/loop1p1): its backing node is stat()ed
    p1 = fake.part("loop1", 1, MiB, 2 * MiB)
    node = fake.dev / "loop1p1"
    l4 = fake.loop("loop4", str(node), 2 * MiB)
    monkeypatch.setattr(aliases.os, "stat", _fake_stat({str(node): p1}, os.stat))
    f4 = r.device_footprint(l4)
    assert [p.start for p in f4.pieces if p.what.endswith("/loop1")] == [MiB]
    assert aliases.collision(fa, f4) is not None and aliases.collision(fc, f4) is None
    assert "loop device over" in f4.pieces[1].trail[0]
    monkeypatch.undo()
    dm = fake.disk("dm-0", 2 * MiB)
    fake.holders("dm-0", "loop3")
    assert aliases.collision(r.device_footprint(dm), fc) is not None  # dm-0 is on loop3
    gone = fake.loop("loop5", str(tmp_path / "deleted.img"), MiB)
    with pytest.raises(aliases.Unresolvable, match="cannot be found"):
        r.device_footprint(gone)


def test_a_file_and_the_device_it_lives_on(fake, tmp_path):
    r = fake.resolver()
    img = tmp_path / "image.img"
    img.write_bytes(bytes(4096))
    fs = _fs_device(fake, img)
    raw, f = r.device_footprint(fs), r.footprint(str(img))
    assert f.pieces[1].inside == str(img) and "is a file on" in f.pieces[1].trail[0]
    assert aliases.collision(raw, f) is not None  # writing the filesystem's device
    l1 = fake.loop("loop1", str(tmp_path / "else.img"), MiB)
    (tmp_path / "else.img").write_bytes(b"x")
    # a loop over another file of that filesystem does not touch the image
    assert aliases.collision(r.device_footprint(l1), f) is None
    # but a mounted filesystem's device may not be written raw, only through a file
    assert aliases.collision(r.device_footprint(l1), raw, raw_only=True) is None
    assert aliases.collision(raw, raw, raw_only=True) is not None


def test_the_same_serial_under_another_path(fake):
    r = fake.resolver(names_of=lambda n: frozenset({"wwn:0x5000"}) if n in ("sdy", "sdz")
                      else frozenset())
    a, b = fake.disk("sdy", 10 * MiB), fake.disk("sdz", 10 * MiB)
    col = aliases.collision(r.device_footprint(a), r.device_footprint(b))
    assert col and "the same disk by its wwn" in col.words()


def test_mounted_swap_and_held_devices_seen_through_aliases(fake, tmp_path, monkeypatch):
    r = fake.resolver()
    sdx = fake.disk("sdx", 100 * MiB)
    fake.part("sdx", 1, MiB, 10 * MiB)
    fake.mountinfo.write_text("36 35 240:2 / /mnt rw - ext4 /dev/sdx1 rw\n")
    loop = fake.loop("loop1", "/dev/sdx", 100 * MiB)
    # without the loop driver and a /dev node, the backing path is stat()ed: point it at a
    # path whose device number is sdx's (a fake node in the fake /dev)
    node = fake.dev / "sdx"
    monkeypatch.setattr(aliases.os, "stat", _fake_stat({str(node): sdx}, os.stat))
    (fake.sys / "devices/virtual/block/loop1/loop/backing_file").write_text(f"{node}\n")
    d = disk("loop1", transport="loop", size=100 * MiB)
    end = endpoint_from_disk(d, rdev=loop)
    problems = gate.in_use_problems(end, r)
    assert len(problems) == 1 and "mounted at /mnt" in problems[0], problems
    assert "loop device over" in problems[0]


def _fake_stat(nodes: dict[str, int], real):
    def fake_stat(path, *a, **k):
        if str(path) in nodes:
            return types.SimpleNamespace(st_mode=stat.S_IFBLK | 0o600, st_rdev=nodes[str(path)],
                                         st_dev=0, st_ino=0, st_size=0)
        return real(path, *a, **k)
    return fake_stat


# --- consent -----------------------------------------------------------------------------------


def E(d, p=None):
    return endpoint_from_disk(d, p)


def test_consents_name_the_target_in_their_own_way():
    sdb = E(disk("sdb", serial="ZA1", wwn="0x5000c500"))
    loop = E(disk("loop4", transport="loop", backing_file="/var/tmp/t.img"))
    C = gate.Consent
    assert gate.consent_problem(sdb, C.target_id("ZA1")) is None
    assert "expected 0x5000c500 or ZA1" in gate.consent_problem(sdb, C.target_id("sdb"))
    assert gate.consent_problem(loop, C.target_id("/var/tmp/t.img")) is None
    assert gate.consent_problem(sdb, C.typed("sdb")) is None
    assert gate.consent_problem(sdb, C.typed("ZA1")) is None
    assert gate.consent_problem(sdb, C.typed("sdc")).startswith("not confirmed")
    assert gate.consent_problem(sdb, C.menu("ZA1")) is None
    assert "ZA1 was asked for" in gate.consent_problem(sdb, C.menu("sdb"))
    assert gate.consent_problem(loop, C.menu("loop4")) is None
    assert gate.consent_problem(sdb, C.unattended("wwn", "naa.5000C500")) is None
    assert gate.consent_problem(sdb, C.unattended("serial", "ZA1")) is None
    why = gate.consent_problem(sdb, C.unattended("serial", "OTHER"))
    assert "rtk.consent=serial:OTHER does not name the disk found" in why and "sdb" in why
    assert "has neither serial nor WWN" in gate.consent_problem(
        loop, C.unattended("serial", "x"))
    assert "is gone" in gate.consent_problem(sdb, C.program("/nonexistent/rtk-disk"))


def test_write_problems_order_and_messages_without_devices():
    """Hand-built ends (deep=False): the inventory's records, most serious first."""
    src = disk("sda", serial="S")
    dst = disk("sdb", serial="T", mountpoints=["/mnt"])
    part = partition(src, 1, MiB, 10 * MiB)
    got = gate.write_problems(E(dst), [gate.Input("/dev/sda", "source", endpoint=E(src))],
                              deep=False, consent=gate.Consent.menu("X"))
    assert got[0] == "the target /dev/sdb is in use: mounted at /mnt"
    assert "does not name the target" in got[-1]
    same = gate.write_problems(E(src, part), [gate.Input("/dev/sda", "image",
                                                          endpoint=E(src))], deep=False)
    assert "is a partition of the image" in same[0]


# --- the runtime guard ------------------------------------------------------------------------


def test_the_runtime_guard_records_a_product_open_outside_the_gate():
    import writeguard

    dev = _some_block_device()
    if dev is None:
        pytest.skip("no block device node here")
    start = len(writeguard.violations)
    for fake_file, flags in ((ROOT / "toolkit" / "sneaky.py", os.O_RDWR),
                             (ROOT / "toolkit" / "disks" / "gate.py", os.O_RDWR),
                             (ROOT / "toolkit" / "sneaky.py", os.O_RDONLY),
                             (ROOT / "tests" / "helper.py", os.O_WRONLY)):
        code = compile("hook('open', (dev, None, flags))\n", str(fake_file), "exec")
        exec(code, {"hook": writeguard._hook, "dev": dev, "flags": flags})
    got = writeguard.violations[start:]
    del writeguard.violations[start:]
    assert len(got) == 1 and got[0].startswith("toolkit/sneaky.py:1") and dev in got[0], got
