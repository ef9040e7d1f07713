"""Image restore, the parts that need no device: format detection by content,
GPT/MBR geometry, decompression with truncation and corruption, the HTTP
source's resume over a real server on 127.0.0.1, TLS verification against an HTTPS
server with a self-signed certificate (openssl), checksum files, the refusals
on inventory objects, the boot loader choice, qemu option strings."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import socket
import struct
import sys
import threading
import zlib

import pytest
import zstandard
from conftest import MiB, disk
from restore_images import RangeServer, run, self_signed

from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.restore import boot, checks, contents, detect, qemu, stream
from toolkit.restore import source as sourcemod
from toolkit.restore.write import Failed


def gpt_head(sector: int, disk_sectors: int) -> bytes:
    """A protective MBR and a GPT header (valid CRC) at LBA 1 for ``sector``-byte sectors."""
    head = bytearray(2 * sector + 4096)
    head[510:512] = b"\x55\xaa"
    head[446 + 4] = 0xEE
    hdr = bytearray(92)
    hdr[0:8] = b"EFI PART"
    struct.pack_into("<IIIIQQ", hdr, 8, 0x10000, 92, 0, 0, 1, disk_sectors - 1)
    struct.pack_into("<I", hdr, 16, zlib.crc32(bytes(hdr)))
    head[sector:sector + 92] = hdr
    return bytes(head)


def test_container_and_compression_by_magic():
    assert detect.compression(gzip.compress(b"x")) == "gzip"
    assert detect.compression(lzma.compress(b"x")) == "xz"
    assert detect.compression(zstandard.ZstdCompressor().compress(b"x")) == "zstd"
    assert detect.compression(b"\0" * 16) is None
    assert detect.container(b"QFI\xfb" + b"\0" * 100) == "qcow2"
    assert detect.container(b"vhdxfile" + b"\0" * 100) == "vhdx"
    assert detect.container(b"KDMV" + b"\0" * 100) == "vmdk"
    assert detect.container(b"# Disk DescriptorFile\n") == "vmdk"
    assert detect.container(b"conectix" + b"\0" * 600) == "vpc"
    footer = b"conectix" + b"\0" * 504
    assert detect.container(b"\0" * 512, b"\0" * 100 + footer) == "vpc"  # fixed VHD
    assert detect.container(b"\0" * 512, b"\0" * 612) == "raw"
    # names do not matter: a qcow2 called .img is qcow2
    assert detect.virtual_size_hint("qcow2", b"QFI\xfb" + b"\0" * 20 + struct.pack(">Q", 5 * MiB)) \
        == 5 * MiB


@pytest.mark.parametrize("sector", [512, 4096])
def test_gpt_geometry_gives_sector_and_disk_size(sector):
    g = detect.geometry(gpt_head(sector, 1000))
    assert (g.table, g.sector_size, g.disk_size) == ("gpt", sector, 1000 * sector)
    broken = bytearray(gpt_head(sector, 1000))
    broken[sector + 40] ^= 1  # CRC no longer matches
    assert detect.geometry(bytes(broken)).table != "gpt"


def test_mbr_geometry_gives_end_of_last_partition():
    head = bytearray(512)
    head[510:512] = b"\x55\xaa"
    head[446 + 4] = 0x83
    struct.pack_into("<II", head, 446 + 8, 2048, 4096)
    g = detect.geometry(bytes(head))
    assert (g.table, g.sector_size, g.min_size) == ("dos", None, 6144 * 512)


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n=MiB):
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def _all(kind, data):
    d = stream.decompressor(stream.Input(_Bytes(data)), kind)
    out = []
    while chunk := d.read(4 * MiB):
        assert len(chunk) <= 4 * MiB
        out.append(chunk)
    return b"".join(out)


DATA = os.urandom(300_000) + bytes(20 * MiB) + os.urandom(5000)
COMPRESS = {"gzip": lambda b: gzip.compress(b, 1), "xz": lambda b: lzma.compress(b, preset=0),
            "zstd": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b)}


@pytest.mark.parametrize("kind", COMPRESS)
def test_decompress_members_truncation_and_corruption(kind):
    c = COMPRESS[kind](DATA) + COMPRESS[kind](b"tail")
    assert _all(kind, c) == DATA + b"tail"
    with pytest.raises(stream.CorruptImage, match="ends early"):
        _all(kind, c[:len(c) // 3])
    bad = bytearray(c)
    bad[150_000] ^= 0x5A
    with pytest.raises(stream.CorruptImage):
        _all(kind, bytes(bad))
    assert stream.peek_decompressed(c[:65536], kind, MiB)[:1000] == DATA[:1000]


@pytest.mark.parametrize("background", [False, True])
def test_input_hashes_what_passes(background):
    i = stream.Input(_Bytes(b"world"), prefix=b"hello ", background=background)
    assert i.read(3) + i.read(100) + i.read(100) + i.read(100) == b"hello world"
    assert i.sha256.hexdigest() == hashlib.sha256(b"hello world").hexdigest()
    i.close()


class _Failing(_Bytes):
    def read(self, n=MiB):
        if self.pos >= 2 * MiB:
            raise OSError("connection lost for good")
        return super().read(n)


def test_background_input_hands_over_the_readers_error_every_time():
    i = stream.Input(_Failing(os.urandom(3 * MiB)), background=True)
    got = i.read(MiB) + i.read(MiB)
    assert len(got) == 2 * MiB
    for _ in range(2):  # never mistaken for the end of the image
        with pytest.raises(OSError, match="lost for good"):
            i.read(MiB)
    i.close()


def _zstd_frames(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


@pytest.mark.parametrize("kw", [{"write_checksum": True}, {"write_checksum": False},
                                {"write_content_size": False, "level": 19}])
def test_zstd_frames_tell_whole_from_cut_at_every_byte(kw):
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    c = _zstd_frames(os.urandom(1000) + bytes(300_000), **kw) + skippable + \
        _zstd_frames(b"tail", **kw)
    whole = stream.ZstdFrames()
    whole.feed(c)
    assert whole.complete() and whole.frames == 2
    for cut in range(1, len(c)):
        f = stream.ZstdFrames()
        f.feed(c[:cut])
        assert f.complete() == (cut == len(c) - len(skippable) - len(_zstd_frames(b"tail", **kw))
                                or cut == len(c) - len(_zstd_frames(b"tail", **kw))), cut


def test_zstd_frames_refuse_what_is_not_a_frame():
    f = stream.ZstdFrames()
    with pytest.raises(stream.CorruptImage, match="no frame starts there"):
        f.feed(_zstd_frames(b"abc") + b"garbage!")


def test_zstd_stream_reads_into_a_buffer_and_catches_a_cut_in_a_block():
    c = _zstd_frames(DATA, write_checksum=True)
    buf = bytearray(3 * MiB)
    for cut, ok in ((len(c), True), (len(c) - 2, False), (len(c) // 2, False)):
        z = stream.ZstdStream(stream.Input(_Bytes(c[:cut]), background=True))
        out = []
        try:
            while n := z.readinto(memoryview(buf)):
                out.append(bytes(buf[:n]))
        except stream.CorruptImage as e:
            assert not ok and "ends early" in str(e)
        else:
            assert ok and b"".join(out) == DATA


@pytest.fixture
def served(tmp_path):
    data = os.urandom(5 * MiB + 123)
    (tmp_path / "img").write_bytes(data)
    servers = []

    def make(**kw):
        s = RangeServer(tmp_path, **kw)
        servers.append(s)
        return s
    yield data, make
    for s in servers:
        s.stop()


def test_http_source_resumes_with_range_after_a_drop(served):
    data, make = served
    srv = make(drop_after=MiB + 17)
    with sourcemod.open_source(srv.url("img"), backoff=0.01) as src:
        got = b"".join(iter(lambda: src.read(256 * 1024), b""))
        assert src.resumes == 1
        assert src.tail(512) == data[-512:]
    assert got == data
    assert any(r and r.startswith(f"bytes={MiB + 17}-") for _n, r in srv.requests)


def test_http_source_without_range_fails_instead_of_corrupting(served):
    _data, make = served
    srv = make(drop_after=MiB, ranges=False)
    with sourcemod.open_source(srv.url("img"), backoff=0.01) as src, \
            pytest.raises(sourcemod.SourceError, match="cannot resume"):
        while src.read(256 * 1024):
            pass


def test_tail_from_a_server_without_range_downloads_nothing(tmp_path):
    """A server that ignores Range answers the tail request with the whole image: that
    answer is dropped after its headers, not downloaded."""
    (tmp_path / "big").write_bytes(bytes(64 * MiB))
    srv = RangeServer(tmp_path, ranges=False)
    try:
        with sourcemod.open_source(srv.url("big")) as src:
            assert src.read(MiB) == bytes(MiB)
            assert src.tail(512) is None
        assert [r for _n, r in srv.requests] == [None, "bytes=67108352-"]
        assert srv.completed == []  # neither the stream nor the tail's 200 went out whole
    finally:
        srv.stop()


@pytest.mark.parametrize("env", [False, True])
def test_https_source_verifies_tls(served, tmp_path, monkeypatch, env):
    """Refused without the CA, read with it as the CA file or with verification skipped;
    ``env``: $REQUESTS_CA_BUNDLE and $CURL_CA_BUNDLE set (requests lets them override a
    session's CA file and verify=False, so the source passes them per request)."""
    import certifi
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if env:
            monkeypatch.setenv(var, certifi.where())
        else:
            monkeypatch.delenv(var, raising=False)
    data, make = served
    srv = make(tls=self_signed(tmp_path))
    url = srv.url("img")
    with pytest.raises(sourcemod.SourceError, match=f"TLS verification failed for "
                                                    f"{re.escape(url)}: self-signed certificate"):
        sourcemod.open_source(url)
    for kw in ({"ca_file": str(tmp_path / "cert.pem")}, {"insecure": True}):
        with sourcemod.open_source(url, **kw) as src:
            assert src.size == len(data)
            assert src.tail(512) == data[-512:]
            assert b"".join(iter(src.read, b"")) == data


def test_check_ca_file(tmp_path):
    cert, _key = self_signed(tmp_path)
    der = tmp_path / "ca.cer"
    run("openssl", "x509", "-in", str(cert), "-outform", "der", "-out", str(der))
    assert sourcemod.check_ca_file(str(cert)) is None
    assert sourcemod.check_ca_file(str(tmp_path / "no.pem")) == \
        f"the CA file {tmp_path / 'no.pem'} does not exist"
    assert "is a directory" in sourcemod.check_ca_file(str(tmp_path))
    assert "holds no PEM certificate" in sourcemod.check_ca_file(str(der))
    with pytest.raises(sourcemod.SourceError, match="does not exist"):  # before connecting
        sourcemod.open_source("https://127.0.0.1:9/x", ca_file=str(tmp_path / "no.pem"))


def test_missing_url_and_sidecar(served, tmp_path):
    _data, make = served
    srv = make()
    assert sourcemod.read_small(srv.url("nothing.sha256")) is None
    (tmp_path / "img.sha256").write_text("ab" * 32 + "  img\n")
    assert checks.expected_sha256(srv.url("img"), None) == ("ab" * 32, srv.url("img.sha256"))
    with pytest.raises(ValueError):
        checks.expected_sha256("x", "not-hex")


def test_unreachable_server_is_a_clear_source_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/node1.img"
    with pytest.raises(sourcemod.SourceError) as e:
        sourcemod.open_source(url)
    assert str(e.value).startswith(f"cannot reach {url}: Connection refused"), str(e.value)


def test_parse_sha256_picks_the_named_line():
    text = f"{'1' * 64}  other.img\n{'2' * 64} *disk.img.zst\n"
    assert checks.parse_sha256(text, "disk.img.zst") == "2" * 64
    assert checks.parse_sha256(text, "missing") == "1" * 64
    assert checks.parse_sha256("garbage") is None


def _target(size=100 * MiB, sector=512, **kw) -> object:
    return endpoint_from_disk(disk("sdz", "SER1", size=size, sector=sector, model="M", **kw))


def test_refusals_name_both_figures():
    problems, _ = checks.check_target(_target(50 * MiB), "/img", 64 * MiB, 512)
    assert any("smaller than the image" in p and str(64 * MiB) in p and str(50 * MiB) in p
               for p in problems)
    problems, _ = checks.check_target(_target(sector=4096), "/img", 64 * MiB, 512)
    assert any("512-byte sectors" in p and "4096-byte" in p for p in problems)
    problems, _ = checks.check_target(_target(), "/img", 64 * MiB, 512, {"SER1"})
    assert any("attached as SOURCE" in p for p in problems)
    problems, _ = checks.check_target(_target(boot_medium=True), "/img", 64 * MiB, 512)
    assert any("boot medium" in p for p in problems)
    problems, warnings = checks.check_target(_target(), "/img", None, None)
    assert problems == [] and warnings


def test_boot_loader_choice():
    win = ["\\EFI\\BOOT\\BOOTX64.EFI", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"]
    assert boot.choose_loader(win) == ("\\EFI\\Microsoft\\Boot\\bootmgfw.efi",
                                       "Windows Boot Manager")
    deb = ["\\EFI\\BOOT\\BOOTX64.EFI", "\\EFI\\debian\\grubx64.efi", "\\EFI\\debian\\shimx64.efi"]
    assert boot.choose_loader(deb) == ("\\EFI\\debian\\shimx64.efi", "debian")
    assert boot.choose_loader(["\\EFI\\BOOT\\BOOTX64.EFI"]) is None
    inspected = {"partitions": [{"number": 1, "efi_loaders": deb}]}
    plan = boot.plan_boot("/dev/sdz", inspected, mode="uefi")
    assert plan.command == ["efibootmgr", "--create", "--disk", "/dev/sdz", "--part", "1",
                            "--label", "debian", "--loader", "\\EFI\\debian\\shimx64.efi"]
    assert boot.plan_boot("/dev/sdz", inspected, mode="bios").action == "none"


def test_qemu_options_escape_commas_and_choose_download(tmp_path):
    opts = qemu.source_opts("/a,b.qcow2", "qcow2", MiB, 10 * MiB)
    assert "file.file.filename=/a,,b.qcow2" in opts and f"offset={MiB}" in opts
    assert qemu.http_strategy(MiB, str(tmp_path), want_hash=True, ca_file=None) == "download"
    with pytest.raises(ValueError, match="SHA-256"):
        qemu.http_strategy(1 << 60, str(tmp_path), want_hash=True, ca_file=None)


def test_a_killed_compare_is_a_failure_not_a_match(tmp_path, monkeypatch):
    """A qemu-img compare killed by someone else (the OOM killer) compared nothing: the
    verification fails, naming the bytes, instead of counting them as equal. A real
    difference is still named by its byte, the other pieces ending or being stopped."""
    img, disk = tmp_path / "a.qcow2", tmp_path / "disk.raw"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M")
    with open(disk, "wb") as f:
        f.truncate(64 * MiB)
    args = (str(img), "qcow2", str(disk), MiB, 63 * MiB, lambda f: None, threading.Event())
    assert qemu.compare_range(*args) is None
    wrapper = tmp_path / "qemu-img"
    wrapper.write_text('#!/bin/sh\ncase "$*" in *compare*offset=1048576,*) kill -9 $$;; esac\n'
                       'exec qemu-img "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(qemu, "QEMU_IMG", str(wrapper))
    with pytest.raises(Failed, match=r"compare of bytes 1048576-\d+ was killed \(signal 9\)"):
        qemu.compare_range(*args)
    with open(disk, "r+b") as f:  # a difference in the last piece
        f.seek(60 * MiB)
        f.write(b"x")
    monkeypatch.setattr(qemu, "QEMU_IMG", "qemu-img")
    assert qemu.compare_range(*args) == ("the target differs from the image at byte "
                                        f"{60 * MiB} (qemu-img compare)")


def test_verified_conversion_piece_sizes():
    """An eighth of the image, in whole MiB, between 64 MiB and 1 GiB."""
    assert qemu.piece_size(2047 * MiB) == 256 * MiB
    assert qemu.piece_size(4095 * MiB) == 512 * MiB
    assert qemu.piece_size(100 << 30) == 1 << 30
    assert qemu.piece_size(9 * MiB) == 64 * MiB  # one piece
    assert qemu.piece_size(3 * (1 << 30) + 5) == 385 * MiB


def test_rtk_restore_loads_neither_the_copy_engine_nor_psutil():
    """`rtk restore` builds only its own subcommand's parser: the other subcommands'
    imports (the copy engine, psutil for `net`, iSCSI) cost start-up time."""
    code = ("import sys; from toolkit.cli import main as cli; "
            "cli.build_parser('restore').parse_args(['restore', 'a.img', '/dev/sdz']); "
            "import toolkit.restore.engine; "
            "print(sorted(m for m in ('toolkit.copy', 'psutil', 'toolkit.iscsi', 'requests') "
            "if m in sys.modules))")
    assert run(sys.executable, "-c", code).strip() == "[]"
    every = ("from toolkit.cli import main as cli; p = cli.build_parser(); "
             "[p.parse_args(a) for a in (['net', 'list'], ['copy', 'a', 'b'], "
             "['iscsi', 'list'], ['restore', 'a', 'b'], ['disks'])]")
    run(sys.executable, "-c", every)


def test_partition_node_names():
    assert contents.partition_node("/dev/sdb", 2) == "/dev/sdb2"
    assert contents.partition_node("/dev/loop3", 1) == "/dev/loop3p1"
    assert contents.partition_node("/dev/nvme0n1", 1) == "/dev/nvme0n1p1"


@pytest.mark.parametrize("status, code", [("ok", 0), ("refused", 5), ("mismatch", 4),
                                          ("failed", 1), ("cancelled", 1)])
def test_restore_report_has_the_exit_code(status, code, log_dir):
    """The JSON report says the exit code, as copy's does: the number a script or the
    report server sees is the one the command ended with."""
    import json
    from pathlib import Path

    from toolkit.restore.plan import ImageInfo
    from toolkit.restore.report import RestoreResult, write_restore_report
    image = ImageInfo("/img/node.raw", False, None, "raw", 4 * MiB, 4 * MiB, 512, "gpt")
    r = RestoreResult(status, "m", image, endpoint_from_disk(disk("sdz", "SER1")),
                      started=1.0, finished=2.0)
    assert r.exit_code == code and r.to_dict()["exit_code"] == code
    paths = write_restore_report(r)
    assert json.loads(Path(paths.json).read_text())["exit_code"] == code
