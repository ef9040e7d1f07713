"""Image restore on real loop devices, with images built by the real tools.

A 64 MiB GPT disk (ESP with FAT and EFI loaders, NTFS with Windows/System32,
ext4 with /etc/os-release) and an MBR disk (ext4, then NTFS last), as raw,
gzip, xz, zstd, qcow2, VHD (dynamic and fixed), VHDX and VMDK, restored onto
larger loop devices; a GPT disk with XFS last, grown with xfs_growfs (and one
the kernel cannot mount, which fails with a clear message); refusals leave a
marker in the target's first MiB; failures while writing leave no partition
table; an HTTP server that drops the connection is resumed. Needs root; about
a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import restore_images as ri
from conftest import MiB, rtk
from loopdev import fuse_disk, loop_device, marked_image

from toolkit import restore
from toolkit.restore import contents, fit

pytestmark = pytest.mark.host

MARKER = b"RTK-MARKER-" * 100


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    gpt = ri.build_gpt_image(d / "gpt.img")
    mbr = ri.build_mbr_image(d / "mbr.img")
    out = {"raw": gpt.path, "mbr": mbr.path}
    for kind in ("gzip", "xz", "zstd"):
        out[kind] = ri.compress(gpt.path, kind, d / f"gpt.img.{kind}")
    for fmt, opts in (("qcow2", ()), ("vhdx", ()), ("vmdk", ()),
                      ("vpc", ("-o", "force_size=on")),
                      ("vhd-fixed", ("-o", "subformat=fixed,force_size=on"))):
        driver = "vpc" if fmt.startswith("vhd-") else fmt
        out[fmt] = ri.convert(gpt.path, driver, d / f"gpt.{fmt}", *opts)
    out["built"], out["built_mbr"] = gpt, mbr
    return out


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture
def target(tmp_path, loops):
    """``target(size, sector_size=512)`` -> a loop device with MARKER in its first MiB
    (and in the MiB before its end)."""
    count = itertools.count()

    def make(size: int = 96 * MiB, sector_size: int = 512) -> str:
        return loops(marked_image(tmp_path / f"target{next(count)}.img", size, MARKER),
                     sector_size)
    return make


def head_of(dev: str, n: int = MiB) -> bytes:
    with open(dev, "rb") as f:
        return f.read(n)


def no_table(dev: str) -> bool:
    """Nothing in the first MiB that blkid, sgdisk or a BIOS would take for a table."""
    pt = subprocess.run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", dev],
                        capture_output=True, text=True).stdout.strip()
    return pt == "" and head_of(dev) == bytes(MiB)


def do(image, dev, **opts) -> restore.RestoreResult:
    plan = restore.plan_restore(str(image), dev, restore.RestoreOptions(**opts),
                                source_role=())
    return restore.restore(plan)


def check_disk(dev: str, built: ri.Built, grown: bool) -> None:
    v = subprocess.run(["sgdisk", "-v", dev], capture_output=True, text=True).stdout
    assert "No problems found" in v, v
    info = contents.inspect_disk(dev)
    parts = {p["number"]: p for p in info["partitions"]}
    for p in parts.values():
        fs = p.get("fstype")
        cmd = {"vfat": ["fsck.vfat", "-n"], "ntfs": ["ntfsfix", "-n"],
               "ext4": ["e2fsck", "-fn"]}[fs]
        r = subprocess.run([*cmd, p["node"]], capture_output=True, text=True)
        assert r.returncode == 0, (fs, r.stdout, r.stderr)
        names = [k.split(":", 1)[1] for k in built.files if k.startswith(f"p{p['number']}:")]
        got = ri.file_hashes(p["node"], fs, names)
        assert got == {n: built.files[f"p{p['number']}:{n}"] for n in names}
    last = max(parts.values(), key=lambda p: p["start"])
    disk_end = int(Path(f"/sys/class/block/{os.path.basename(dev)}/size").read_text()) * 512
    end = last["start"] + last["size"]
    assert (end > disk_end - 2 * MiB) == grown, (end, disk_end)
    assert {s["os"] for s in info["systems"]} == {"Windows", "Linux"}


FORMATS = ["raw", "gzip", "xz", "zstd", "qcow2", "vpc", "vhd-fixed", "vhdx", "vmdk"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_restore_each_format_onto_a_larger_disk(images, target, fmt):
    dev = target()
    grow = fmt in ("raw", "zstd", "qcow2", "vmdk")
    res = do(images[fmt], dev, grow=grow)
    assert res.status == "ok", res.message
    assert res.verify and res.verify["match"]
    check_disk(dev, images["built"], grown=grow)
    if res.image_hash is not None:
        assert res.input_sha256 == ri.sha256_file(images[fmt])
    assert res.report and "Windows" in Path(res.report.text).read_text()


def test_mbr_image_grows_ntfs_last(images, target):
    dev = target(128 * MiB)
    res = do(images["mbr"], dev, grow=True)
    assert res.status == "ok", res.message
    assert any("ntfsresize" in s for s in res.fit)
    node = contents.partition_node(dev, 2)
    info = subprocess.run(["ntfsresize", "--info", "--force", node], capture_output=True,
                          text=True).stdout
    assert "Current volume size" in info
    vol = int(info.split("Current volume size:")[1].split()[0])
    assert vol > 100 * MiB
    assert subprocess.run(["ntfsfix", "-n", node], capture_output=True).returncode == 0


def test_cli_restore_with_sidecar_checksum(images, target, tmp_path):
    img = tmp_path / "disk.img.zst"
    img.write_bytes(Path(images["zstd"]).read_bytes())
    Path(str(img) + ".sha256").write_text(f"{ri.sha256_file(img)}  disk.img.zst\n")
    dev = target()
    r = rtk("restore", str(img), dev, "--yes", "--target-id", os.path.basename(dev))
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stdout and "report:" in r.stdout
    assert "from " + str(img) + ".sha256" in r.stderr


def test_refusals_leave_the_target_untouched(images, target):
    small = target(48 * MiB)
    # its filesystems cannot shrink enough (tests/test_restore_shrink_host.py: when they can)
    with pytest.raises(restore.Refused, match="does not fit the target.*the target has "
                                              "50331648 bytes"):
        do(images["raw"], small)
    assert head_of(small).startswith(MARKER)
    big4k = target(96 * MiB, sector_size=4096)
    with pytest.raises(restore.Refused, match="512-byte sectors"):
        do(images["xz"], big4k)
    assert head_of(big4k).startswith(MARKER)
    dev = target()
    with pytest.raises(restore.Refused, match="attached as SOURCE"):
        restore.plan_restore(str(images["raw"]), dev, source_role={dev})
    r = rtk("restore", str(images["raw"]), dev, "--yes", "--target-id", "wrong")
    assert r.returncode == 5 and "does not match" in r.stderr
    # a given checksum is checked before anything is written, container or stream
    for fmt in ("qcow2", "raw"):
        res = do(images[fmt], dev, sha256="0" * 64)
        assert (res.status, res.exit_code) == ("mismatch", 4), res.message
        assert "SHA-256 mismatch" in res.message and "nothing was written" in res.message
        assert head_of(dev).startswith(MARKER) and not res.wiped


def test_truncated_container_is_refused(images, target, tmp_path):
    bad = tmp_path / "half.qcow2"
    data = Path(images["qcow2"]).read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    dev = target()
    with pytest.raises(restore.Refused, match="damaged or truncated"):
        do(bad, dev)
    assert head_of(dev).startswith(MARKER)


@pytest.mark.parametrize("case", ["truncated-gzip", "corrupt-zstd"])
def test_failures_while_writing_leave_no_table(images, target, tmp_path, case):
    dev = target()
    src = Path(images["gzip" if case.endswith("gzip") else "zstd"]).read_bytes()
    bad = tmp_path / "bad"
    if case == "truncated-gzip":
        bad.write_bytes(src[:int(len(src) * 0.8)])
    else:
        b = bytearray(src)
        b[int(len(b) * 0.6)] ^= 0x5A
        bad.write_bytes(bytes(b))
    res = do(bad, dev)
    assert res.status == "failed", res.message
    assert no_table(dev), res.message
    assert "zeroed again" in res.message and res.wiped  # the result screen says so


def test_cancel_leaves_no_table(images, target):
    dev = target()
    cancel = threading.Event()
    plan = restore.plan_restore(str(images["raw"]), dev, restore.RestoreOptions(interval=0),
                                source_role=())

    def progress(p):
        if p.phase == "write" and p.done > 16 * MiB:
            cancel.set()
    res = restore.restore(plan, progress=progress, cancel=cancel)
    assert res.status == "cancelled" and res.exit_code == 1
    assert no_table(dev)


@pytest.mark.parametrize("fmt", ["zstd", "raw", "qcow2"])
def test_http_drop_is_resumed(images, target, fmt):
    srv = ri.RangeServer(Path(images[fmt]).parent, drop_after=3 * MiB)
    try:
        dev = target()
        url = srv.url(Path(images[fmt]).name)
        res = do(url, dev, grow=True)
        assert res.status == "ok", res.message
        assert res.resumes == 1 and not res.wiped
        assert res.input_sha256 == ri.sha256_file(images[fmt])
        check_disk(dev, images["built"], grown=True)
    finally:
        srv.stop()


def test_zero_chunks_are_zeroed_by_the_device_over_old_data(images, target):
    """The image's all-zero chunks are zeroed with BLKZEROOUT, not written: over a
    target full of old data they must still read back as zeros."""
    dev = target()
    with open(dev, "r+b") as f:  # old data everywhere, not just the marker
        f.write(os.urandom(96 * MiB))
    res = do(images["zstd"], dev)
    assert res.status == "ok", res.message
    image = Path(images["raw"]).read_bytes()
    with open(dev, "rb") as f:  # fitting rewrote the table at both ends
        assert f.read(len(image) - MiB)[MiB:] == image[MiB:-MiB]
    zero_chunks = sum(image[p:p + 8 * MiB] == bytes(8 * MiB)
                      for p in range(MiB, len(image), 8 * MiB))
    assert zero_chunks and res.zeroed_bytes == zero_chunks * 8 * MiB
    assert "zeroed by the device" in Path(res.report.text).read_text()


@pytest.fixture
def lying_target(tmp_path, need_root):
    """``make(ranges, writes="lost")``: a loop device over a FUSE file (old random
    data) that drops the writes in ``ranges`` while acknowledging them (a disk
    that lies), or with ``writes="eio"`` fails them (a failing disk)."""
    with contextlib.ExitStack() as stack:
        def make(lost: list[tuple[int, int]], size: int = 96 * MiB, writes: str = "lost"
                 ) -> str:
            backing = tmp_path / "lying.img"
            backing.write_bytes(os.urandom(size))
            disk = stack.enter_context(fuse_disk(backing, tmp_path / "fuse", lost,
                                                 writes=writes))
            return stack.enter_context(loop_device(disk, partitions=False))
        yield make


@pytest.mark.parametrize("fmt", ["zstd", "qcow2", "qcow2-pieces"])
def test_a_target_that_drops_writes_fails_verification(images, lying_target, fmt,
                                                       monkeypatch):
    """The read-back reads the device, not what was meant to be written: a lost write
    (inside the image's data) is a mismatch naming its region, and no table is left.
    A stream is read back behind the writer (flushed every 8 MiB here); a container
    is compared piece by piece (16 MiB pieces for qcow2-pieces: the lost write is in
    the third or fourth, compared while or after the next one is converted)."""
    from toolkit.restore import qemu, write
    monkeypatch.setattr(write, "SYNC_EVERY", 8 * MiB)
    if fmt == "qcow2-pieces":
        fmt = "qcow2"
        monkeypatch.setattr(qemu, "PIECE", 16 * MiB)
    image = Path(images["raw"]).read_bytes()
    spot = next(p for p in range(40 * MiB, len(image), 4096)
                if image[p:p + 4096] != bytes(4096))
    dev = lying_target([(spot, 4096)])
    res = do(images[fmt], dev)
    assert res.status == "mismatch" and res.exit_code == 4, res.message
    assert res.verify and not res.verify["match"]
    if fmt == "zstd":  # per region, 8 MiB each
        assert res.verify["read_while_writing"] >= 8 * MiB
        start = spot // (8 * MiB) * (8 * MiB)
        assert f"in bytes {start}-{start + 8 * MiB} (1 regions)" in res.message, res.message
    else:
        assert f"at byte {spot} (qemu-img compare)" in res.message, res.message
    assert no_table(dev), res.message


def test_a_target_that_fails_writes_stops_the_restore_cleanly(images, target):
    """A write error in mid-image (the device turned read-only under the open
    target: EPERM from then on): a clear failure, not a hang with the queues full."""
    dev = target()
    turned: list[int] = []

    def progress(p):
        if p.phase == "write" and p.done >= 16 * MiB and not turned:
            subprocess.run(["blockdev", "--setro", dev], check=True)
            turned.append(p.done)
    plan = restore.plan_restore(str(images["zstd"]), dev, restore.RestoreOptions(interval=0),
                                source_role=())
    done: list = []
    worker = threading.Thread(target=lambda: done.append(restore.restore(plan, progress)),
                              daemon=True)
    try:
        worker.start()
        worker.join(120)
    finally:
        subprocess.run(["blockdev", "--setrw", dev], check=True)
    assert done, "the restore hung after a write error"
    res = done[0]
    assert turned and res.status == "failed", res.message
    assert "write error on the target" in res.message, res.message
    assert head_of(dev) == bytes(MiB)  # the head was never written


def test_a_hashing_failure_stops_the_restore_cleanly(images, target, hashing_fails_at):
    """Should the hashing stage fail in mid-image (here made to: a bug, or memory), the
    restore stops writing at once and fails with that named, instead of the writer
    waiting for it forever (or writing the rest of the image unhashed)."""
    dev = target()
    hashing_fails_at(8 * MiB)
    plan = restore.plan_restore(str(images["zstd"]), dev, restore.RestoreOptions(interval=0),
                                source_role=())
    done: list = []
    written: list[int] = []

    def progress(p):
        if p.phase == "write":
            written.append(p.done)
    worker = threading.Thread(target=lambda: done.append(restore.restore(plan, progress)),
                              daemon=True)
    worker.start()
    worker.join(120)
    assert done, "the restore hung after the hasher failed"
    res = done[0]
    assert res.status == "failed", res.message
    assert "hashing the image failed at image byte" in res.message, res.message
    assert "made to fail" in res.message
    # nothing written after the failure: at most the 8 MiB chunk before it (1-9 MiB,
    # hashed in full), which the writer may or may not have taken before the failure
    assert written and max(written) <= 9 * MiB
    assert no_table(dev)


def test_an_image_under_one_mib_is_restored_and_verified(target, tmp_path):
    """The whole image is its held-back head: written last, verified all the same."""
    img = tmp_path / "tiny.img"
    img.write_bytes(os.urandom(512 * 1024))
    for name in ("tiny.img", "tiny.img.zst"):
        if name.endswith(".zst"):
            subprocess.run(["zstd", "-q", "-f", str(img), "-o", str(tmp_path / name)],
                           check=True)
        dev = target()
        res = do(tmp_path / name, dev)
        assert res.status == "ok" and res.verify["match"], res.message
        assert res.image_size == 512 * 1024 and head_of(dev, 512 * 1024) == img.read_bytes()


def test_container_verification_names_the_differing_byte(images, target):
    """qemu-img compare runs in pieces at once; a difference is named by its disk byte."""
    from toolkit.restore import qemu
    dev = target()
    assert do(images["qcow2"], dev).status == "ok"
    size = Path(images["raw"]).stat().st_size
    seen: list[float] = []
    assert qemu.compare_range(str(images["qcow2"]), "qcow2", dev, MiB, size - MiB,
                              seen.append, threading.Event()) is None
    assert qemu.COMPARE_PIECES > 1 and seen and abs(max(seen) - 1.0) < 1e-9
    spot = 40 * MiB + 7 * 512  # in the third of four pieces
    with open(dev, "r+b") as f:
        f.seek(spot)
        old = f.read(1)
        f.seek(spot)
        f.write(bytes([old[0] ^ 0xFF]))
    out = qemu.compare_range(str(images["qcow2"]), "qcow2", dev, MiB, size - MiB,
                             lambda f: None, threading.Event())
    assert out == f"the target differs from the image at byte {spot} (qemu-img compare)"


def in_pieces_with_logged_qemu_img(monkeypatch, tmp_path: Path, special: str = "") -> Path:
    """Verified restores in 16 MiB pieces, through a qemu-img that logs "start|end
    COMMAND OFFSET" (the source view's offset) around the real one, and first runs
    ``special`` (shell) when its arguments match it; returns the log's path."""
    from toolkit.restore import qemu
    log, wrapper = tmp_path / "runs", tmp_path / "qemu-img"
    wrapper.write_text(
        "#!/bin/sh\n"
        "off=$(echo \"$*\" | sed -n 's/.*driver=raw,offset=\\([0-9]*\\),.*/\\1/p')\n"
        f'echo "start $1 $off" >> {log}\n'
        f"{special}\n"
        'qemu-img "$@"\nrc=$?\n'
        f'echo "end $1 $off" >> {log}\nexit $rc\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(qemu, "PIECE", 16 * MiB)
    monkeypatch.setattr(qemu, "QEMU_IMG", str(wrapper))
    return log


PIECES_AT = [MiB + k * 16 * MiB for k in range(4)]  # 16 MiB pieces of the 64 MiB image


def test_a_verified_container_restore_compares_while_it_converts(images, target, tmp_path,
                                                              monkeypatch):
    """Each piece is compared once converted (and flushed by qemu-img), while the next
    is converted: with the last conversion made to take a second, the first pieces are
    compared before it ends; the pieces' offsets are right (the disk checks out); a
    cancel in mid-way stops both."""
    from toolkit.restore import qemu
    slow_last = f'case "$1 $off" in "convert {PIECES_AT[-1]}") sleep 1;; esac'
    log = in_pieces_with_logged_qemu_img(monkeypatch, tmp_path, slow_last)
    dev = target()
    plan = restore.plan_restore(str(images["qcow2"]), dev, restore.RestoreOptions(),
                                source_role=())
    log.write_text("")  # the plan's own reads (its partitions' first sectors, the ESP)
    res = restore.restore(plan)
    assert res.status == "ok" and res.verify["match"], res.message
    check_disk(dev, images["built"], grown=False)
    runs = log.read_text().splitlines()
    converted = sorted(int(x.split()[2]) for x in runs if x.startswith("end convert")
                       and int(x.split()[2]) >= MiB)
    assert converted == PIECES_AT
    compared = [int(x.split()[2]) for x in runs if x.startswith("start compare")]
    assert runs.index(f"start compare {compared[0]}") < runs.index(
        f"end convert {PIECES_AT[-1]}")
    assert res.verify["read_while_writing"] >= 32 * MiB  # two pieces in that second

    monkeypatch.setattr(qemu, "QEMU_IMG", "qemu-img")  # a cancel terminates qemu-img itself
    cancel = threading.Event()
    seen: list[str] = []

    def progress(p):
        seen.append(p.phase)
        if p.phase == "write" and p.done >= 20 * MiB:
            cancel.set()
    plan = restore.plan_restore(str(images["qcow2"]), dev, restore.RestoreOptions(interval=0),
                                source_role=())
    res = restore.restore(plan, progress, cancel)
    assert res.status == "cancelled", res.message
    assert "write" in seen and "verify" not in seen
    assert no_table(dev)


def test_a_conversion_failing_midway_fails_the_verified_restore(images, target, tmp_path,
                                                                monkeypatch):
    """The third piece's qemu-img convert fails: the restore fails with its words, the
    comparison stops, and no table is left."""
    fail = f'case "$1 $off" in "convert {PIECES_AT[2]}") echo made to fail >&2; exit 1;; esac'
    log = in_pieces_with_logged_qemu_img(monkeypatch, tmp_path, fail)
    dev = target()
    res = do(images["qcow2"], dev)
    assert res.status == "failed", res.message
    assert "qemu-img convert failed: made to fail" in res.message, res.message
    runs = log.read_text().splitlines()
    assert f"start convert {PIECES_AT[3]}" not in runs  # nothing converted after it
    assert no_table(dev)


def test_zeros_are_written_where_the_target_cannot_zero(tmp_path):
    """A target without BLKZEROOUT (a regular file here): the zeros are written."""
    from toolkit.jobs.progress import Reporter
    from toolkit.restore.write import Target, write_stream

    data = os.urandom(MiB) + bytes(16 * MiB) + os.urandom(MiB)
    path = tmp_path / "target"
    path.write_bytes(os.urandom(24 * MiB))
    with Target(str(path)) as t:
        reader = io.BytesIO(data[MiB:])
        end, digest, back = write_stream(reader, t, head=data[:MiB], algorithm="sha256",
                                         reporter=Reporter(None, 1), cancel=threading.Event())
        assert back is None  # no read-back asked for
        assert (end, t.zeroout, t.zeroed) == (len(data), False, 0)
    assert path.read_bytes()[MiB:len(data)] == data[MiB:]
    assert digest.hexdigest == hashlib.sha256(data).hexdigest()  # head included


@pytest.fixture(scope="module")
def xfs_image(tmp_path_factory):
    return ri.build_xfs_image(tmp_path_factory.mktemp("xfs") / "xfs.img")


def xfs_sb(node: str, *fields: str) -> dict[str, int]:
    """Superblock fields (``dblocks``, ``blocksize``...) read with ``xfs_db -r``."""
    out = subprocess.run(["xfs_db", "-r", "-c", "sb 0", *[f"-cp {f}" for f in fields], node],
                         capture_output=True, text=True, check=True).stdout
    return {k.strip(): int(v, 0) for k, v in (line.split("=") for line in out.splitlines())}


@contextlib.contextmanager
def mounted(what: str, where: Path, *options: str):
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", ",".join(["ro", *options]), what, str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def leftovers(before: set[str]) -> set[str]:
    """fit's temporary XFS mount points still there, and mounts of them."""
    tmp = Path(tempfile.gettempdir())
    dirs = {str(p) for p in tmp.glob("rtk-xfs-*")} - before
    mounts = {line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if "/rtk-xfs-" in line.split()[1]}
    return dirs | mounts


def test_gpt_image_grows_xfs_last(xfs_image, target, tmp_path):
    """The XFS root (last) is mounted on a temporary directory and grown by xfs_growfs.
    Meanwhile the image's own XFS is mounted read-only (a copy being looked at: the
    same UUID), which XFS refuses for a second mount without ``nouuid``."""
    before_dirs = {str(p) for p in Path(tempfile.gettempdir()).glob("rtk-xfs-*")}
    (_n, start, length), = [p for p in ri._partitions(xfs_image.path) if p[0] == 2]
    dev = target(400 * MiB)
    with mounted(str(xfs_image.path), tmp_path / "orig", "loop", f"offset={start}",
                 f"sizelimit={length}") as orig:
        src = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(orig)], capture_output=True,
                             text=True, check=True).stdout.strip()
        before = xfs_sb(src, "dblocks", "blocksize")
        res = do(xfs_image.path, dev, grow=True)
    assert res.status == "ok", res.message
    assert any("xfs_growfs" in s for s in res.fit), res.fit
    assert not leftovers(before_dirs)
    v = subprocess.run(["sgdisk", "-v", dev], capture_output=True, text=True).stdout
    assert "No problems found" in v, v
    parts = {p["number"]: p for p in contents.partitions(dev)}
    disk_end = int(Path(f"/sys/class/block/{os.path.basename(dev)}/size").read_text()) * 512
    end = parts[2]["start"] + parts[2]["size"]
    assert disk_end - 2 * MiB < end <= disk_end, (end, disk_end)
    node = parts[2]["node"]
    r = subprocess.run(["xfs_repair", "-n", node], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    after = xfs_sb(node, "dblocks", "blocksize")
    assert before == {"dblocks": length // 4096, "blocksize": 4096}
    assert after["blocksize"] == 4096
    assert parts[2]["size"] - MiB < after["dblocks"] * 4096 <= parts[2]["size"], after
    with mounted(node, tmp_path / "restored") as mnt:
        got = {f"p2:{n}": ri.sha256_file(mnt / n.lstrip("/")) for n in ("/etc/os-release",
                                                                         "/srv/data.bin")}
    assert got == {k: v for k, v in xfs_image.files.items() if k.startswith("p2:")}
    assert ri.file_hashes(parts[1]["node"], "ext4", ["/grub/grub.cfg"]) == \
        {"/grub/grub.cfg": xfs_image.files["p1:/grub/grub.cfg"]}


@pytest.mark.parametrize("case", ["newer-xfs", "kernel-without-xfs"])
def test_xfs_that_cannot_be_mounted_fails_clearly(xfs_image, target, tmp_path, monkeypatch,
                                                  case):
    """xfs_growfs needs the filesystem mounted. A real mount failure: the image's XFS has
    an incompatible feature this kernel does not know (an image from a newer system).
    ``kernel-without-xfs``: fit reads a /proc/filesystems without xfs, as on a kernel
    without the module, and says so. The restore is done (table and data kept), exit 1."""
    img = tmp_path / "newer.img"
    subprocess.run(["cp", "--sparse=always", str(xfs_image.path), str(img)], check=True)
    with loop_device(img) as src:
        node = contents.partition_node(src, 2)
        incompat = xfs_sb(node, "features_incompat")["features_incompat"]
        subprocess.run(["xfs_db", "-x", "-c", "sb 0", "-c",
                        f"write -d features_incompat {incompat | 0x80000000:#x}", node],
                       capture_output=True, check=True)
    if case == "kernel-without-xfs":
        lines = Path("/proc/filesystems").read_text().splitlines()
        fake = tmp_path / "filesystems"
        fake.write_text("".join(f"{x}\n" for x in lines if x.split()[-1] != "xfs"))
        monkeypatch.setattr(fit, "FILESYSTEMS", str(fake))
    before_dirs = {str(p) for p in Path(tempfile.gettempdir()).glob("rtk-xfs-*")}
    dev = target(400 * MiB)
    res = do(img, dev, grow=True)
    assert res.status == "failed" and res.exit_code == 1, res.message
    assert res.message.startswith(f"restored {xfs_image.size} bytes onto {dev}, verified, but "
                                  "fitting"), res.message
    assert "partition 2 fills the disk now, its filesystem does not" in res.message
    assert "xfs_growfs works only on a mounted filesystem" in res.message
    if case == "newer-xfs":
        assert "Superblock has unknown incompatible features (0x80000000)" in res.message, \
            res.message
    else:
        assert "this kernel cannot mount XFS" in res.message, res.message
    assert "zeroed" not in res.message
    assert not leftovers(before_dirs)
    v = subprocess.run(["sgdisk", "-v", dev], capture_output=True, text=True).stdout
    assert "No problems found" in v, v
    grown = contents.partition_node(dev, 2)
    assert xfs_sb(grown, "dblocks")["dblocks"] == 300 * MiB // 4096


def test_a_read_error_while_reading_the_target_back_is_a_failure_not_a_mismatch(
        images, target, monkeypatch):
    """EIO on the target during the read-back behind the writer: the bytes were never
    compared, so the restore failed (exit 1); it is no verification mismatch (exit 4)."""
    from toolkit.blockio import blockdev

    dev = target()
    rdev = os.stat(dev).st_rdev
    real = blockdev.read_exact

    def read_exact(fd, view, offset):
        if offset >= 4 * MiB and os.fstat(fd).st_rdev == rdev:
            raise OSError(5, "Input/output error", f"offset {offset}")
        return real(fd, view, offset)
    monkeypatch.setattr(blockdev, "read_exact", read_exact)
    res = do(images["raw"], dev)
    assert (res.status, res.exit_code) == ("failed", 1), res.message
    assert "verification did not finish" in res.message and "Input/output error" in res.message
    assert head_of(dev) == bytes(MiB)  # the head was never written
