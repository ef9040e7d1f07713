"""The write gate (:mod:`toolkit.disks.gate`) on real devices: every alias of the target
that a careful technician can build (symlinks, a second device node, a partition, the
backing file, a hard link of it, another loop device over it, a loop device over the
source or over a partition of the target, a file on a filesystem on a loop device over
the target...) given as the image or the source is refused with exit 5, the target's
bytes hashed before and after; random alias chains are refused; distinct devices, and
two partitions of one disk side by side, are still accepted. The menu shows the
refusal on the screen. Needs root; about half a minute.

No udev here: partitions of a loop device appear through ``partx -a`` (BLKPG), their
nodes through devtmpfs; the inventory and the gate read sysfs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import MiB, choose, own_disks, rtk, words
from screen import press
from writeguard import write_guard  # noqa: F401  (the runtime write guard, autouse)

from toolkit import restore
from toolkit.copy import engine as copymod
from toolkit.errors import Refused

pytestmark = pytest.mark.host


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def digest(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while data := f.read(4 * MiB):
            h.update(data)
    return h.hexdigest()


_TEMPLATES: dict[tuple, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def templates(tmp_path_factory):
    """Where :func:`gpt_image` keeps what it built once (sfdisk per image is slow)."""
    _TEMPLATES.clear()
    _TEMPLATES["dir"] = tmp_path_factory.mktemp("templates")
    yield
    _TEMPLATES.clear()


def gpt_table(path: Path, *parts: tuple[int, int | None]) -> None:
    """A GPT on ``path`` with partitions (start MiB, size MiB or None: to the end)."""
    script = "label: gpt\n" + "".join(
        f"start={a * 2048}" + (f", size={n * 2048}" if n else "") + "\n" for a, n in parts)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)],
                   input=script, text=True, check=True, capture_output=True)


def gpt_image(path: Path, size: int, seed: int = 1,
              parts: tuple[tuple[int, int | None], ...] = ((1, None),)) -> Path:
    """``size`` random bytes with a GPT over them: what probing takes for a raw disk
    image (built once per size, seed and table, then copied)."""
    key = (size, seed, parts)
    if key not in _TEMPLATES:
        built = _TEMPLATES["dir"] / f"t{len(_TEMPLATES)}.img"
        with open(built, "wb") as f:
            f.write(random.Random(seed).randbytes(size))
        gpt_table(built, *parts)
        _TEMPLATES[key] = built
    shutil.copyfile(_TEMPLATES[key], path)
    return path


def mkfs(dev: str) -> None:
    """ext4 with nothing left for later (no lazy init writing behind our back)."""
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)


class Devices:
    """Loop devices, nodes, filesystems and mounts of one test, undone in reverse order."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path):
        self.stack, self.tmp = stack, tmp
        self.n = 0

    def path(self, name: str) -> Path:
        self.n += 1
        return self.tmp / f"{self.n}-{name}"

    def loop(self, backing, *, partitions: bool = False, offset: int | None = None,
             sizelimit: int | None = None) -> str:
        args = ["losetup", "-f", "--show"]
        if offset is not None:
            args += ["-o", str(offset)]
        if sizelimit is not None:
            args += ["--sizelimit", str(sizelimit)]
        dev = run(*args, str(backing)).strip()

        def detach() -> None:
            subprocess.run(["partx", "-d", dev], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
        self.stack.callback(detach)
        run("blockdev", "--setrw", dev)  # a reused loop device may keep a SOURCE test's ro
        if partitions:
            subprocess.run(["partx", "-a", dev], capture_output=True, check=False)
        return dev

    def symlink(self, to) -> str:
        p = self.path("link")
        p.symlink_to(to)
        return str(p)

    def mknod(self, dev: str) -> str:
        p = self.path("node")
        os.mknod(p, stat.S_IFBLK | 0o600, os.stat(dev).st_rdev)
        return str(p)

    def hardlink(self, to) -> str:
        self.n += 1
        p = Path(to).parent / f"{self.n}-hardlink"  # a hard link stays on its filesystem
        os.link(to, p)
        return str(p)

    def mount(self, dev: str) -> Path:
        mnt = self.path("mnt")
        mnt.mkdir()
        run("mount", dev, str(mnt))
        self.stack.callback(lambda: subprocess.run(["umount", "-l", str(mnt)], check=False))
        return mnt


@pytest.fixture
def devs(tmp_path, need_root, rtk_dirs):
    with contextlib.ExitStack() as stack:
        yield Devices(stack, tmp_path)


def partitioned(devs: Devices, size: int = 48 * MiB) -> tuple[str, Path]:
    """A loop device with two partitions (1 MiB-17 MiB, 17 MiB-41 MiB), random bytes;
    partition 2 holds a GPT disk image."""
    key = ("partitioned", size)
    if key not in _TEMPLATES:
        img = gpt_image(_TEMPLATES["dir"] / f"p{size}.img", size, seed=7,
                        parts=((1, 16), (17, 24)))
        inner = gpt_image(devs.path("inner.img"), 24 * MiB, seed=8)
        with open(img, "r+b") as f:
            f.seek(17 * MiB)
            f.write(inner.read_bytes())
        _TEMPLATES[key] = img
    img = devs.path("disk.img")
    shutil.copyfile(_TEMPLATES[key], img)
    dev = devs.loop(img, partitions=True)
    assert os.path.exists(f"{dev}p2"), "partx gave no partitions"
    return dev, img


def refused_cli(cmd: str, given: str, target: str, *, also: tuple[str, ...] = ()) -> str:
    """``rtk CMD GIVEN TARGET --yes --target-id NAME``: exit 5, the target's bytes
    unchanged, the message names both sides. Its stderr."""
    os.sync()  # what a filesystem built for the case still had to write
    before = digest(target)
    p = rtk(cmd, given, target, "--yes", "--target-id", os.path.basename(target), *also)
    assert digest(target) == before, f"{cmd} {given} {target} wrote the target: {p.stdout}"
    assert p.returncode == 5, (p.returncode, p.stdout, p.stderr)
    text = " ".join(p.stderr.split())
    assert given in text and target in text, text
    return text


# --- the cases the issue lists ------------------------------------------------------------


def test_restore_image_is_a_symlink_to_the_target(devs):
    target = devs.loop(gpt_image(devs.path("t.img"), 32 * MiB))
    text = refused_cli("restore", devs.symlink(target), target)
    assert "the image" in text and "same device" in text


def test_restore_image_is_a_second_node_of_the_target(devs):
    target = devs.loop(gpt_image(devs.path("t.img"), 32 * MiB))
    text = refused_cli("restore", devs.mknod(target), target)
    assert "same device" in text


def test_restore_image_is_a_partition_of_the_target(devs):
    target, _img = partitioned(devs)
    text = refused_cli("restore", f"{target}p2", target)
    assert "partition" in text


def test_restore_image_is_the_targets_backing_file(devs):
    img = gpt_image(devs.path("t.img"), 32 * MiB)
    target = devs.loop(img)
    text = refused_cli("restore", str(img), target)
    assert "backing file" in text


def test_restore_image_is_a_hard_link_of_the_targets_backing_file(devs):
    img = gpt_image(devs.path("t.img"), 32 * MiB)
    target = devs.loop(img)
    text = refused_cli("restore", devs.hardlink(img), target)
    assert "backing file" in text


def test_restore_image_is_another_loop_over_the_targets_backing_file(devs):
    img = gpt_image(devs.path("t.img"), 32 * MiB)
    target = devs.loop(img)
    other = devs.loop(img)
    text = refused_cli("restore", other, target)
    assert str(img) in text


def test_copy_onto_a_loop_device_over_the_source(devs):
    source = devs.loop(gpt_image(devs.path("s.img"), 16 * MiB))
    target = devs.loop(source)  # losetup -f --show /dev/loopS
    text = refused_cli("copy", source, target)
    assert "source" in text


def test_copy_from_a_loop_over_a_partition_of_the_target(devs):
    target, _img = partitioned(devs)
    source = devs.loop(f"{target}p1")
    text = refused_cli("copy", source, target)
    assert f"{target}p1" in text


def test_copy_from_a_loop_over_a_hard_link_of_the_targets_backing_file(devs):
    img = gpt_image(devs.path("t.img"), 32 * MiB)
    target = devs.loop(img)
    source = devs.loop(devs.hardlink(img))
    refused_cli("copy", source, target)


def test_restore_file_on_a_filesystem_on_a_loop_over_the_target(devs):
    """The target is not mounted and holds nothing the inventory sees; the image lives
    in a filesystem on a loop device over it (a loop device is no holder)."""
    target = devs.loop(gpt_image(devs.path("t.img"), 48 * MiB))
    inner = devs.loop(target, offset=8 * MiB)
    mkfs(inner)
    mnt = devs.mount(inner)
    image = gpt_image(mnt / "image.img", 8 * MiB)
    text = refused_cli("restore", str(image), target)
    assert inner in text


# --- the opening ------------------------------------------------------------------------------


def test_a_symlink_swapped_between_check_and_open_does_not_win(devs, monkeypatch):
    from toolkit.disks import gate
    from toolkit.disks.endpoint import resolve
    from toolkit.disks.inventory import list_disks

    a = devs.loop(gpt_image(devs.path("a.img"), 8 * MiB, seed=4))
    b = devs.loop(gpt_image(devs.path("b.img"), 8 * MiB, seed=5))
    link = Path(devs.symlink(a))
    target = resolve(str(link), list_disks())
    real = os.open

    def swapping(path, flags, *args, **kw):
        if str(path) == str(link) and flags & os.O_RDWR:
            link.unlink()
            link.symlink_to(b)  # between the gate's check and its open
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(gate.os, "open", swapping)
    before = digest(b)
    with pytest.raises(Refused, match="changed between the check and the open"):
        gate.open_target(target)
    monkeypatch.undo()
    assert digest(b) == before


def test_a_loop_device_bound_to_another_file_is_another_disk(devs):
    from toolkit.disks import gate
    from toolkit.disks.endpoint import resolve
    from toolkit.disks.inventory import list_disks

    dev = devs.loop(gpt_image(devs.path("a.img"), 8 * MiB, seed=4))
    other = gpt_image(devs.path("other.img"), 8 * MiB, seed=5)
    target = resolve(dev, list_disks())
    run("losetup", "-d", dev)
    if subprocess.run(["losetup", dev, str(other)], capture_output=True).returncode:
        pytest.skip(f"{dev} was taken by someone else meanwhile")
    with pytest.raises(Refused, match="not the disk that was checked"):
        gate.open_target(target)


def test_the_gate_checks_the_consent_it_is_given(devs):
    from toolkit.disks import gate

    src = devs.loop(gpt_image(devs.path("s.img"), 8 * MiB, seed=4))
    dst = devs.loop(gpt_image(devs.path("d.img"), 8 * MiB, seed=5))
    plan = copymod.plan_copy(src, dst)
    before = digest(dst)
    for consent in (gate.Consent.menu("loop999"), gate.Consent.target_id("SOMEONE"),
                    gate.Consent.unattended("serial", "X")):
        with pytest.raises(Refused):
            copymod.copy(plan, copymod.CopyOptions(verify=False), consent=consent)
    image = gpt_image(devs.path("i.img"), 4 * MiB)
    res = restore.restore(restore.plan_restore(str(image), dst, source_role=()),
                          consent=gate.Consent.typed("loop999"))
    assert res.status == "refused" and "not confirmed" in res.message, res.message
    assert digest(dst) == before


# --- legitimate pairs -----------------------------------------------------------------------


def test_distinct_loop_devices_over_distinct_files_are_accepted(devs):
    a = devs.loop(gpt_image(devs.path("a.img"), 8 * MiB, seed=2))
    b = devs.loop(gpt_image(devs.path("b.img"), 16 * MiB, seed=3))
    plan = copymod.plan_copy(a, b)
    assert plan.target.node == b
    p = rtk("copy", a, b, "--yes", "--target-id", os.path.basename(b), "--no-verify")
    assert p.returncode == 0, p.stderr
    image = gpt_image(devs.path("c.img"), 8 * MiB)
    p = rtk("restore", str(image), b, "--yes", "--target-id", os.path.basename(b),
            "--no-verify")
    assert p.returncode == 0, p.stderr


def test_partitions_side_by_side_are_accepted_the_whole_disk_refused(devs):
    """p1 onto p2 of one disk is a legitimate copy; a file on p1's filesystem restored
    onto p2 too; onto the whole disk it is not."""
    disk, _img = partitioned(devs)
    p1, p2 = f"{disk}p1", f"{disk}p2"
    before = digest(p1)
    p = rtk("copy", p1, p2, "--yes", "--target-id", os.path.basename(p2), "--no-verify")
    assert p.returncode == 0, p.stderr
    assert digest(p1) == before
    mkfs(p1)
    mnt = devs.mount(p1)
    image = gpt_image(mnt / "image.img", 8 * MiB)
    plan = restore.plan_restore(str(image), p2, restore.RestoreOptions(), source_role=())
    assert plan.target.node == p2
    with pytest.raises(Refused) as e:
        restore.plan_restore(str(image), disk, restore.RestoreOptions(), source_role=())
    assert str(image) in str(e.value) and disk in str(e.value)


# --- random alias chains ------------------------------------------------------------------


def kernel_name(dev: str) -> str:
    rdev = os.stat(dev).st_rdev
    return os.path.basename(os.readlink(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"))


def build_chain(devs: Devices, rnd: random.Random, target: str) -> tuple[str, list[str]]:
    """From ``target``, 2-5 steps, each an alias of (or a device inside, or a file on a
    filesystem inside) what the previous one named; the last one and the steps."""
    cur, kind, steps = target, "dev", []
    for _ in range(rnd.randint(2, 5)):
        if kind == "dev":
            name = kernel_name(cur)
            size = int(Path(f"/sys/class/block/{name}/size").read_text()) * 512
            options = ["symlink", "mknod", "loop"]
            if size >= 24 * MiB:
                options += ["offset-loop", "fs-file"]
            if os.path.exists(f"/dev/{name}p1"):
                options.append("partition")
            step = rnd.choice(options)
            if step == "symlink":
                cur = devs.symlink(cur)
            elif step == "mknod":
                cur = devs.mknod(cur)
            elif step == "loop":
                cur = devs.loop(cur)
            elif step == "offset-loop":
                cur = devs.loop(cur, offset=rnd.choice([1, 2, 4]) * MiB)
            elif step == "partition":
                cur = f"/dev/{name}p{rnd.choice([1, 2])}"
            else:  # a file on a filesystem on a loop device over it
                inner = devs.loop(cur, offset=MiB)
                mkfs(inner)
                mnt = devs.mount(inner)
                cur, kind = str(gpt_image(mnt / "f.img", 12 * MiB, seed=9)), "file"
        else:
            step = rnd.choice(["hardlink", "symlink", "loop", "loop"])
            if step == "hardlink":
                cur = devs.hardlink(cur)
            elif step == "symlink":
                cur = devs.symlink(cur)
            else:
                cur, kind = devs.loop(cur, partitions=True), "dev"
        steps.append(f"{step} {cur}")
    return cur, steps


def test_random_alias_chains_are_refused(tmp_path, need_root, rtk_dirs):
    rnd = random.Random(13)
    for i in range(24):
        with contextlib.ExitStack() as stack:
            devs = Devices(stack, tmp_path / f"chain{i}")
            devs.tmp.mkdir()
            target, _img = partitioned(devs, 64 * MiB)
            # a loop device over a file of its own is a fine source (before the chain puts
            # a mounted filesystem on the target)
            apart = devs.loop(gpt_image(devs.path("apart.img"), 8 * MiB, seed=i))
            assert copymod.plan_copy(apart, target).source.node == apart
            given, steps = build_chain(devs, rnd, target)
            os.sync()
            before = digest(target)
            with pytest.raises(Refused) as e:
                if stat.S_ISBLK(os.stat(given).st_mode):
                    copymod.plan_copy(given, target)
                else:
                    restore.plan_restore(given, target, restore.RestoreOptions(),
                                         source_role=())
            assert target in str(e.value), (steps, str(e.value))
            assert digest(target) == before, steps


# --- the menu --------------------------------------------------------------------------------


def test_menu_shows_why_a_loop_over_the_source_cannot_be_the_target(devs, log_dir):
    from tui.app import App

    source = devs.loop(gpt_image(devs.path("s.img"), 16 * MiB))
    target = devs.loop(source)
    app = App(log_dir=str(log_dir), list_disks=own_disks(source, target))
    press(app, "c")
    screen = choose(app, [d.path for d in app.copy.disks], source)
    assert "choose the TARGET" in screen, screen
    reasons = {d.path: r for d, r in app.copy.target_choices(app.copy.source)}
    assert reasons[target] is not None, reasons
    screen = words(press(app, *["down"] * 5))
    assert "cannot be chosen:" in screen, screen
    assert target in screen and source in screen and "loop device over" in screen, screen
