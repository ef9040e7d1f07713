"""State that outlives the boot, on real loop devices and filesystems.

An iso-hybrid image made as live-build makes ours (xorriso with isohdpfx.bin,
-partition_offset 16, an EFI image, -isohybrid-gpt-basdat; or a copy of build/rtk.iso)
gets its RTK-DATA partition from the README's own commands (read from README.md, run
with /dev/sdX replaced by a loop device) and from iso/make_usb_image.sh; the boot step
finds it, mounts it and moves the state directory onto it; its disk is then refused as
the target of a copy and of a restore. Several RTK-DATA partitions: the lowest UUID
wins, the other is logged. The menu's "choose a disk" keeps the state on a real
filesystem. And mapfiles and reports rewritten in a loop by a child process killed
with SIGKILL at random points are always the old or the new version.

The host kernel parses no partition tables (tests/loopdev.py): ``partx -a`` adds the
partitions where udev and the kernel would on the live system. Needs root; ~40 s.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, MiB, wait_worker
from conftest import own_disks as _own_disks
from loopdev import make_image, run
from screen import press

from toolkit import restore
from toolkit.blockio.mapfile import Mapfile
from toolkit.copy import engine as copymod
from toolkit.jobs import report
from toolkit.system import paths, state

pytestmark = pytest.mark.host

ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture
def unmount_data():
    """Listed after ``loops``: the data partition is unmounted before its loop device goes."""
    yield
    data = paths.data_mount()
    while os.path.ismount(data):
        subprocess.run(["umount", data], check=False)


@pytest.fixture(scope="module")
def hybrid_iso(tmp_path_factory) -> Path:
    """A small iso-hybrid image with live-build's xorriso options (MBR: partition 1 the
    ISO from sector 64, partition 2 the EFI image), else a copy of build/rtk.iso."""
    d = tmp_path_factory.mktemp("iso")
    iso = d / "hybrid.iso"
    if shutil.which("xorriso") and ISOHDPFX.exists() and shutil.which("mkfs.vfat"):
        tree = d / "binary"
        for sub in ("isolinux", "boot/grub", "live"):
            (tree / sub).mkdir(parents=True)
        shutil.copy("/usr/lib/ISOLINUX/isolinux.bin", tree / "isolinux")
        (tree / "live" / "marker").write_bytes(os.urandom(256 * 1024))
        efi = tree / "boot/grub/efi.img"
        make_image(efi, 2 * MiB)
        run("mkfs.vfat", "-n", "EFI", str(efi))
        run("xorriso", "-as", "mkisofs", "-R", "-r", "-J", "-joliet-long", "-l",
            "-iso-level", "3", "-isohybrid-mbr", str(ISOHDPFX), "-partition_offset", "16",
            "-V", "RTK", "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
            "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-eltorito-alt-boot",
            "-e", "boot/grub/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
            "-isohybrid-apm-hfsplus", "-o", str(iso), str(tree))
    elif (ROOT / "build" / "rtk.iso").exists():
        shutil.copy(ROOT / "build" / "rtk.iso", iso)
    else:
        pytest.fail("needs xorriso and isolinux (build_iso.sh installs them) or build/rtk.iso")
    table = run("sfdisk", "--dump", str(iso))
    assert "label: dos" in table and "type=ef" in table, table
    return iso


def own_disks(*paths: str):
    """The test's loop devices as the USB sticks they stand for (an RTK-DATA on a fixed
    disk is not mounted at boot unless rtk.data= names it)."""
    import dataclasses
    inner = _own_disks(*paths)
    return lambda: [dataclasses.replace(d, transport="usb", removable=True) for d in inner()]


def readme_blocks() -> list[str]:
    """The shell blocks of the README's RTK-DATA subsection."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Keeping state across reboots: the RTK-DATA partition", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def changed_offsets(a: Path, b: str, size: int) -> list[int]:
    """Offsets below ``size`` where the file ``a`` and the device ``b`` differ."""
    out, chunk = [], 1 << 16
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for base in range(0, size, chunk):
            x, y = fa.read(chunk), fb.read(min(chunk, size - base))
            if x != y:
                out += [base + i for i in range(len(x)) if x[i] != y[i]]
    return out


def stick_size(iso: Path, extra: int) -> int:
    return (iso.stat().st_size // MiB + extra) * MiB


def blkid(dev: str) -> dict[str, str]:
    out = run("blkid", "-p", "-o", "export", dev)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.parametrize(("block", "fstype"), [(0, "ext4"), (1, "vfat")])
def test_readme_commands_add_rtk_data_to_a_written_stick(hybrid_iso, tmp_path, loops,
                                                         block, fstype):
    """The README's commands, exactly, on a "stick" (a loop device) of 128 MiB: the ISO
    written with dd, then the RTK-DATA partition; the ISO's bytes are untouched but for
    the MBR's partition entry 3."""
    commands = readme_blocks()[block]
    assert "sfdisk --append /dev/sdX" in commands and "RTK-DATA /dev/sdX3" in commands
    stick = loops(make_image(tmp_path / "stick.img", stick_size(hybrid_iso, 128)),
                  partitions=False)
    script = commands.replace("build/rtk.iso", str(hybrid_iso))
    script = script.replace("/dev/sdX3", f"{stick}p3").replace("/dev/sdX", stick)
    lines = [ln for ln in script.splitlines() if ln.strip()]
    # after the partition table changes, the host needs partx (the live kernel re-reads it)
    i = next(n for n, ln in enumerate(lines) if "sfdisk --append" in ln)
    lines.insert(i + 1, f"partx -a {stick} 2>/dev/null || true")
    subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], check=True,
                   capture_output=True, text=True)
    tags = blkid(f"{stick}p3")
    assert tags["LABEL"] == "RTK-DATA" and tags["TYPE"] == fstype
    assert tags["PART_ENTRY_NUMBER"] == "3"
    changed = changed_offsets(hybrid_iso, stick, hybrid_iso.stat().st_size)
    assert changed and all(446 + 32 <= i < 446 + 48 for i in changed)  # partition entry 3
    ok, skipped = state.data_partitions(own_disks(stick)())
    assert [v.path for v in ok] == [f"{stick}p3"] and not skipped


def test_usb_image_boot_and_the_state_on_it(hybrid_iso, tmp_path, loops, unmount_data):
    """build_iso.sh --usb-image's script; the boot step mounts its RTK-DATA partition and
    the state goes there; then that disk is refused as a copy or restore target."""
    img = tmp_path / "rtk-usb.img"
    size = stick_size(hybrid_iso, 96)
    subprocess.run([str(ROOT / "iso/make_usb_image.sh"), str(hybrid_iso), str(img), str(size)],
                   check=True, capture_output=True)
    assert img.stat().st_size == size
    assert os.stat(img).st_blocks * 512 < hybrid_iso.stat().st_size + 48 * MiB  # sparse
    stick = loops(img, partitions=True)
    assert blkid(f"{stick}p3")["LABEL"] == "RTK-DATA"
    log = Path(paths.state_dir())
    log.mkdir(parents=True)
    (log / "tools.log").write_text("before the mount\n")
    said = []
    assert state.boot(own_disks(stick), "boot=live quiet", said.append) == 0
    data = paths.data_mount()
    assert os.path.ismount(data) and f"using {stick}p3" in " ".join(said)
    assert os.path.realpath(log) == os.path.join(data, "rtk")
    assert state.persistent_state() and state.location().device == f"{stick}p3"
    written = report.write_report("copy", {"result": "ok"}, "copy report\n")
    assert os.path.realpath(written.json).startswith(data + "/")
    assert "state on" in (log / state.BOOT_LOG).read_text()
    # the partition's disk is now in use: never a target
    src = loops(make_image(tmp_path / "src.img", 96 * MiB))
    with pytest.raises(copymod.Refused, match=f"{os.path.basename(stick)}p3 mounted at {data}"):
        copymod.plan_copy(src, stick)
    raw = tmp_path / "image.raw"
    raw.write_bytes(os.urandom(MiB))
    with pytest.raises(restore.Refused, match=f"mounted at {data}"):
        restore.plan_restore(str(raw), stick)
    # after a "reboot" (unmounted, the link gone), the next boot finds the files again
    run("umount", data)
    os.unlink(log)
    assert state.boot(own_disks(stick), "", said.append) == 0
    assert (log / "tools.log").read_text() == "before the mount\n"
    assert os.path.exists(log / os.path.basename(written.json))


def test_the_lowest_uuid_wins_and_the_other_is_logged(tmp_path, loops, unmount_data):
    devs = []
    for uuid in ("9a0c1c7e-0000-4000-8000-000000000002", "1b2c3d4e-0000-4000-8000-000000000001"):
        dev = loops(make_image(tmp_path / f"{uuid[:4]}.img", 32 * MiB), partitions=False)
        run("mkfs.ext4", "-q", "-L", "RTK-DATA", "-U", uuid, dev)
        devs.append(dev)
    said = []
    assert state.boot(own_disks(*devs), "", said.append) == 0
    text = "\n".join(said)
    assert f"using {devs[1]} ext4" in text and f"also found, not used: {devs[0]} ext4" in text
    record = json.loads((Path(paths.run_dir()) / state.STATE_RECORD).read_text())
    assert record["device"] == devs[1] and record["uuid"].startswith("1b2c")
    assert any(devs[0] in o for o in record["others"])


def test_a_fat_rtk_data_partition(hybrid_iso, tmp_path, loops, unmount_data):
    """FAT: mounted where the kernel has vfat (the live system's does); where it has not
    (this host's), said, and the state stays where it was."""
    img = tmp_path / "fat.img"
    subprocess.run([str(ROOT / "iso/make_usb_image.sh"), str(hybrid_iso), str(img),
                    str(stick_size(hybrid_iso, 96)), "vfat"], check=True, capture_output=True)
    stick = loops(img, partitions=True)
    assert blkid(f"{stick}p3")["TYPE"] == "vfat"
    said = []
    code = state.boot(own_disks(stick), "", said.append)
    if "vfat" in Path("/proc/filesystems").read_text():
        assert code == 0 and state.persistent_state()
    else:
        assert code == 1 and f"cannot mount {stick}p3 vfat" in " ".join(said)
        assert not os.path.islink(paths.state_dir())


def test_menu_keeps_the_state_on_a_chosen_disk(tmp_path, loops, unmount_data, monkeypatch):
    from tui.app import App
    from tui.controllers.state import StatePrompt

    dev = loops(make_image(tmp_path / "stick.img", 32 * MiB), partitions=False)
    run("mkfs.ext4", "-q", "-L", "STICK", dev)
    ram = tmp_path / "ram"
    ram.mkdir()
    run("mount", "-t", "tmpfs", "tmpfs", str(ram))
    try:
        log = ram / "rtk"
        monkeypatch.setenv("RTK_LOG_DIR", str(log))
        log.mkdir()
        (log / "tools.log").write_text("this boot\n")
        assert not state.persistent_state()
        app = App(log_dir=str(log), list_disks=own_disks(dev))
        started = []
        StatePrompt(app, list_disks=own_disks(dev)).before_long_job(
            lambda: started.append(1), busy=[])
        press(app, "right", "enter")  # Choose a disk
        screen = wait_worker(app)
        assert f'{dev}' in screen and '"STICK"' in screen
        press(app, "enter")
        wait_worker(app)
        press(app, "enter")  # OK
        assert started == [1] and state.persistent_state()
        assert os.path.realpath(log) == os.path.join(paths.data_mount(), "rtk")
        assert (log / "tools.log").read_text() == "this boot\n"
    finally:
        subprocess.run(["umount", paths.data_mount()], check=False)
        run("umount", "-l", str(ram))


# --- SIGKILL at random points while a mapfile or a report is rewritten -------------------------

VERSIONS = r"""
import json
from toolkit.blockio.mapfile import Mapfile

def mapfile_version(n):
    # version n of a mapfile of 3000 blocks (about 100 kB), each version different
    m = Mapfile(1 << 40)
    step = 1 << 28
    for i in range(3000):
        m.set(i * step + (n % 7) * 4096, 4096 * (1 + (i + n) % 5), "+-/*"[(i + n) % 4])
    m.meta["seq"] = str(n)
    return m

def report_version(n):
    return json.dumps({"seq": n, "payload": [n] * 20000}, indent=1) + "\n"
"""
_versions: dict = {}
exec(VERSIONS, _versions)  # the child writes these versions, the test reads them
mapfile_version, report_version = _versions["mapfile_version"], _versions["report_version"]

CHILD = VERSIONS + r"""
import sys
from toolkit.jobs import report
kind, path = sys.argv[1], sys.argv[2]
def current():
    try:
        if kind == "mapfile":
            return int(Mapfile.load(path).meta["seq"])
        with open(path) as f:
            return json.load(f)["seq"]
    except (OSError, ValueError, KeyError):
        return 0
n = current()
print("ready", flush=True)
while True:
    n += 1
    if kind == "mapfile":
        mapfile_version(n).save(path)
    elif kind == "report":
        report._atomic_write(path, report_version(n))
    else:  # "naive": a rewrite in place, no temporary file: the test's check of itself
        with open(path, "w") as f:
            text = report_version(n)
            for i in range(0, len(text), 4096):
                f.write(text[i:i + 4096])
                f.flush()
    print(n, flush=True)
"""


def check(kind: str, path: str, acked: int) -> str | None:
    """None when ``path`` holds version ``acked`` or ``acked + 1``, whole; else why not."""
    try:
        if kind == "mapfile":
            m = Mapfile.load(path)
            seq = int(m.meta["seq"])
            whole = m == mapfile_version(seq)
        else:
            with open(path) as f:
                text = f.read()
            seq = json.loads(text)["seq"]
            whole = text == report_version(seq)
    except (ValueError, KeyError) as e:
        return f"does not parse: {e}"
    if not whole:
        return f"version {seq} is not whole"
    if seq not in (acked, acked + 1):
        return f"version {seq}, the last written was {acked}"
    return None


def kill_loop(kind: str, path: Path, rounds: int, rng: random.Random) -> list[str]:
    problems = []
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(path)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.001, 0.06))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        acked = [int(x) for x in out.split()]
        if not acked and not path.exists():
            continue
        last = acked[-1] if acked else _first_seq(kind, path)
        why = check(kind, str(path), last)
        if why:
            problems.append(why)
    return problems


def _first_seq(kind: str, path: Path) -> int:
    """Killed before its first acknowledgement: the version the file held before."""
    try:
        return int(Mapfile.load(str(path)).meta["seq"]) if kind == "mapfile" else \
            json.loads(path.read_text())["seq"]
    except (ValueError, KeyError):
        return 0


@pytest.mark.parametrize("kind", ["mapfile", "report"])
def test_sigkill_leaves_the_old_or_the_new_version(tmp_path, kind):
    path = tmp_path / ("copy.map" if kind == "mapfile" else "report.json")
    problems = kill_loop(kind, path, 50, random.Random(17))
    assert not problems, problems
    assert path.exists()


def test_the_kill_test_sees_a_torn_write(tmp_path):
    """The same test against a plain rewrite (no temporary file, no rename) finds torn
    files: it would catch a save that is not atomic."""
    problems = kill_loop("naive", tmp_path / "report.json", 20, random.Random(5))
    assert len(problems) >= 5, problems
