"""Whether a multicast stream is held whole before writing (toolkit/restore/spool.py): the
URL's spool= and size=, the bound on the stream's size (checked against the real
compressors), the room in a directory (RAM-backed: MemAvailable less a margin; FAT: 4 GiB),
the decision and what the plan says of it. No network, no device."""

from __future__ import annotations

import gzip
import lzma
import os

import pytest
import zstandard
from conftest import guest_probe

from toolkit.restore import multicast, spool
from toolkit.units import human_size

pytestmark = pytest.mark.unit

MiB, GiB = 1 << 20, 1 << 30
H = "ab" * 32


def test_spool_and_size_in_the_url():
    s = multicast.parse(f"udpcast://eth0@9000?sha256={H}&spool=always&size=123456")
    assert (s.spool, s.size, s.sha256) == ("always", 123456, H)
    assert multicast.parse("udpcast://9000").spool == "auto"
    assert multicast.parse("udpcast://9000").size is None


@pytest.mark.parametrize("bad, says", [
    ("udpcast://9000?spool=yes", "spool= expects auto, always, never"),
    ("udpcast://9000?size=-1", "size= expects the image file's size in bytes"),
    ("udpcast://9000?size=0", "size= expects"),
    ("udpcast://9000?size=1G", "size= expects"),
    ("udpcast://9000?spool=never&spool=auto", "repeated"),
])
def test_bad_spool_or_size_is_refused(bad, says):
    with pytest.raises(ValueError, match=says):
        multicast.parse(bad)


def test_the_bound_is_the_target_plus_a_256th_and_a_mib_or_the_given_size():
    assert spool.bound(256 * MiB) == (258 * MiB, "target")  # + 1 MiB (a 256th) + 1 MiB
    assert spool.bound(10**12, size=5 * 10**9) == (5 * 10**9, "size=")


@pytest.mark.parametrize("compress", [
    lambda b: zstandard.ZstdCompressor(level=3).compress(b),
    lambda b: zstandard.ZstdCompressor(level=19, threads=2).compress(b),
    lambda b: gzip.compress(b, 6),
    lambda b: lzma.compress(b, preset=6),
    lambda b: lzma.compress(b, preset=0),
], ids=["zstd-3", "zstd-19-mt", "gzip", "xz-6", "xz-0"])
@pytest.mark.parametrize("size", [4096, 3 * MiB + 17 * 512])
def test_data_that_does_not_compress_stays_within_the_bound(compress, size):
    """What the bound is for: random data grows a little in every compressor; a stream
    of an image that fits the target is never larger than the bound."""
    data = os.urandom(size)
    out = compress(data)
    assert len(out) > size  # it did grow
    assert len(out) <= spool.bound(size)[0]


def mountinfo(directory, fstype: str, source: str = "none") -> str:
    """The live guest's mountinfo, ``directory`` mounted as ``fstype``."""
    return guest_probe()["mountinfo"] + f"\n90 33 0:77 / {directory} rw - {fstype} {source} rw"


MEM = "MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:    6000000 kB\n"


def test_a_ram_backed_directory_keeps_a_tenth_of_the_ram_free(tmp_path):
    free = os.statvfs(tmp_path)
    free = free.f_bavail * free.f_frsize
    room, ram = spool.room(str(tmp_path), meminfo=MEM, mountinfo=mountinfo(tmp_path, "tmpfs"))
    assert ram
    # MemAvailable 6 GB less a tenth of 16 GB (more than 1 GiB), unless the disk has less
    assert room == min(free - spool.DISK_MARGIN, 6_000_000 * 1024 - 1_600_000 * 1024)


def test_a_small_machine_keeps_at_least_a_gib(tmp_path):
    mem = "MemTotal: 2000000 kB\nMemAvailable: 1500000 kB\n"
    room, _ = spool.room(str(tmp_path), meminfo=mem, mountinfo=mountinfo(tmp_path, "tmpfs"))
    assert room == 1_500_000 * 1024 - GiB
    mem = "MemTotal: 2000000 kB\nMemAvailable: 900000 kB\n"
    assert spool.room(str(tmp_path), meminfo=mem,
                      mountinfo=mountinfo(tmp_path, "tmpfs")) == (0, True)


def test_the_live_systems_tmp_is_ram(tmp_path):
    """/tmp of the live guest is a tmpfs, its root an overlay over tmpfs: both RAM."""
    probe = guest_probe()["mountinfo"]
    assert " /tmp rw" in probe and "- tmpfs" in probe.split(" /tmp rw", 1)[1].split("\n")[0]
    overlay = probe + f"\n90 33 0:26 / {tmp_path} rw - overlay overlay rw,lowerdir=/a," \
                      "upperdir=/run/live/overlay/rw,workdir=/w"
    assert spool.room(str(tmp_path), meminfo=MEM, mountinfo=overlay)[1]


def test_a_disk_keeps_64_mib_and_fat_holds_4_gib_at_most(tmp_path):
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    room, ram = spool.room(str(tmp_path), meminfo=MEM,
                           mountinfo=mountinfo(tmp_path, "ext4", "/dev/sdb3"))
    assert not ram and room == max(free - 64 * MiB, 0)
    room, _ = spool.room(str(tmp_path), meminfo=MEM,
                         mountinfo=mountinfo(tmp_path, "vfat", "/dev/sdb3"))
    assert room == min(max(free - 64 * MiB, 0), 4 * GiB - 1)


def test_a_directory_that_is_not_there_has_no_room(tmp_path):
    assert spool.room(str(tmp_path / "nope")) == (0, False)  # no error: no room


def test_candidates_the_tmpdir_alone_else_tmp_then_rtk_data(tmp_path, monkeypatch):
    assert spool.candidates(str(tmp_path)) == [str(tmp_path)]
    monkeypatch.setenv("RTK_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    assert spool.candidates(None) == [str(tmp_path / "tmp")]
    monkeypatch.setattr("os.path.ismount", lambda p: p == str(tmp_path / "run" / "data"))
    assert spool.candidates(None) == [str(tmp_path / "tmp"), str(tmp_path / "run" / "data")]


def rooms(monkeypatch, **by_dir):
    monkeypatch.setattr(spool, "candidates", lambda tmpdir: list(by_dir))
    monkeypatch.setattr(spool, "room", lambda d, **kw: by_dir[d])


def test_auto_holds_it_where_the_bound_fits(monkeypatch):
    rooms(monkeypatch, **{"/tmp": (100 * MiB, True), "/run/rtk/data": (10 * GiB, False)})
    d = spool.decide("udpcast://9000", 64 * MiB)
    assert (d.hold, d.directory, d.ram, d.mode) == (True, "/tmp", True, "auto")
    d = spool.decide("udpcast://9000", 1 * GiB)  # 1 GiB + 5 MiB: not in RAM, on RTK-DATA
    assert (d.hold, d.directory, d.ram) == (True, "/run/rtk/data", False)
    note = spool.note(d)
    assert note.startswith("the multicast stream is held in /run/rtk/data (disk, room for ")
    assert "checked there (SHA-256, format, size) before anything is written" in note
    assert "a wrong image leaves the disk untouched" in note
    assert "SHA-256" not in spool.note(d, sha256=False)


def test_auto_without_room_streams_and_says_so(monkeypatch):
    rooms(monkeypatch, **{"/tmp": (100 * MiB, True), "/run/rtk/data": (200 * MiB, False)})
    d = spool.decide("udpcast://9000", 480 * 10**9)
    assert not d.hold and d.directory == "/run/rtk/data" and d.room == 200 * MiB
    note = spool.note(d)
    assert note.startswith("no room to hold the stream: a wrong image overwrites the disk but "
                           "leaves no valid partition table (it is written onto the disk as "
                           "it arrives, its first MiB last;")
    assert f"up to {human_size(d.bound)}, the target's size plus 1/256 and 1 MiB" in note
    assert f"the most room to hold it is {human_size(200 * MiB)} in /run/rtk/data" in note


def test_size_makes_the_bound_exact(monkeypatch):
    rooms(monkeypatch, **{"/tmp": (30 * GiB, True)})
    assert not spool.decide("udpcast://9000", 480 * 10**9).hold
    d = spool.decide("udpcast://9000?size=20000000000", 480 * 10**9)
    assert d.hold and (d.bound, d.bound_from) == (20 * 10**9, "size=")


def test_always_holds_it_in_the_most_room_and_says_what_happens_if_it_outgrows(monkeypatch):
    rooms(monkeypatch, **{"/tmp": (3 * GiB, True), "/run/rtk/data": (2 * GiB, False)})
    d = spool.decide("udpcast://9000?spool=always", 480 * 10**9)
    assert (d.hold, d.directory, d.mode) == (True, "/tmp", "always")
    note = spool.note(d)
    assert note.startswith("spool=always: the multicast stream is held in /tmp (RAM, room")
    assert "if it outgrows that room, the receive stops and nothing is written" in note


def test_never_streams_without_looking(monkeypatch):
    def no(*a, **kw):
        raise AssertionError("spool=never looks at no directory")
    monkeypatch.setattr(spool, "room", no)
    d = spool.decide("udpcast://9000?spool=never", 64 * MiB)
    assert not d.hold and d.mode == "never" and d.directory is None
    assert spool.note(d) == ("spool=never: the multicast stream is written onto the disk as it "
                             "arrives, its first MiB last: a wrong image overwrites the disk "
                             "but leaves no valid partition table")


def test_the_unknown_size_warning_says_why():
    assert "(zstd-compressed, without a GPT)" in spool.size_unknown("zstd")
    assert "(without a GPT, and not held first)" in spool.size_unknown(None)
