"""Build disk images for the restore tests with the real tools.

:func:`build_gpt_image`: a GPT disk with an ESP (mkfs.vfat, ``EFI/BOOT/BOOTX64.EFI``
and ``EFI/Microsoft/Boot/bootmgfw.efi`` copied in with mcopy), an NTFS
partition (mkntfs, ``Windows/System32`` written through an ntfs-3g FUSE
mount) and an ext4 partition last (mkfs.ext4 -d, with ``/etc/os-release``).
:func:`build_mbr_image`: an MBR disk with ext4 first and NTFS last.
:func:`build_xfs_image`: a GPT disk with ext4 first and XFS last (mkfs.xfs -p, a
protofile, so nothing is mounted; 300 MiB, mkfs.xfs's minimum, sparse). Each
filesystem is made in its own file and copied into the disk image at its
partition's offset, so no loop device is needed. :func:`convert` and
:func:`compress` make the other formats with qemu-img, gzip, xz and zstd.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conftest import MiB

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n'


def run(*cmd: str, input: str | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}{p.stdout}")
    return p.stdout


@dataclass
class Built:
    path: Path
    size: int
    files: dict[str, str] = field(default_factory=dict)  # "pN:/path" -> sha256
    sha256: str = ""


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _place(disk: Path, fs: Path, start: int) -> None:
    """Copy ``fs`` into the (new, sparse) ``disk`` at ``start``, leaving zeros as holes."""
    zeros = bytes(4 * MiB)
    with open(fs, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(start)
        while chunk := src.read(4 * MiB):
            if chunk == zeros[:len(chunk)]:
                dst.seek(len(chunk), os.SEEK_CUR)
            else:
                dst.write(chunk)


def _fat(path: Path, size: int, files: dict[str, bytes]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    run("mkfs.vfat", "-F", "32", "-n", "ESP", str(path))
    dirs = sorted({os.path.dirname(p) for p in files})
    made: set[str] = set()
    for d in dirs:
        acc = ""
        for part in d.strip("/").split("/"):
            acc += "/" + part
            if acc not in made:
                run("mmd", "-i", str(path), "::" + acc)
                made.add(acc)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            local = Path(tmp) / "f"
            local.write_bytes(data)
            run("mcopy", "-i", str(path), str(local), "::" + name)


def _ntfs(path: Path, size: int, files: dict[str, bytes], start_sector: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    run("mkntfs", "-F", "-Q", "-L", "WINDOWS", "-p", str(start_sector), "-H", "255", "-S", "63",
        str(path))
    with tempfile.TemporaryDirectory() as mnt:
        run("ntfs-3g", str(path), mnt)
        try:
            for name, data in files.items():
                target = Path(mnt) / name.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        finally:
            run("umount", mnt)


def _ext4(path: Path, size: int, files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as root:
        for name, data in files.items():
            target = Path(root) / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        run("mkfs.ext4", "-q", "-F", "-L", "linux", "-d", root, str(path), f"{size // 1024}k")


def _xfs(path: Path, size: int, files: dict[str, bytes]) -> None:
    """mkfs.xfs with a protofile listing ``files`` (no mount needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree: dict = {}
        for i, (name, data) in enumerate(files.items()):
            *dirs, base = name.strip("/").split("/")
            node = tree
            for d in dirs:
                node = node.setdefault(d, {})
            node[base] = Path(tmp) / f"f{i}"
            node[base].write_bytes(data)

        def lines(node: dict) -> list[str]:
            out = []
            for name, v in node.items():
                if isinstance(v, dict):
                    out += [f"{name} d--755 0 0", *lines(v), "$"]
                else:
                    out.append(f"{name} ---644 0 0 {v}")
            return out
        proto = Path(tmp) / "proto"
        proto.write_text("\n".join(["rtk", "0 0", "d--755 0 0", *lines(tree), "$"]) + "\n")
        with open(path, "wb") as f:
            f.truncate(size)
        run("mkfs.xfs", "-q", "-f", "-L", "root", "-p", str(proto), str(path))


def _payload(seed: int, n: int) -> bytes:
    import random
    return random.Random(seed).randbytes(n)


def build_gpt_image(path: Path, size: int = 64 * MiB) -> Built:
    """GPT: p1 ESP (FAT32, 34 MiB), p2 NTFS (12 MiB), p3 ext4 (the rest), each with files."""
    with open(path, "wb") as f:
        f.truncate(size)
    run("sgdisk", "-n", "1:2048:+34M", "-t", "1:ef00", "-c", "1:EFI system",
        "-n", "2:0:+12M", "-t", "2:0700", "-c", "2:Windows",
        "-n", "3:0:0", "-t", "3:8300", "-c", "3:Linux", str(path))
    parts = _partitions(path)
    esp_files = {"/EFI/BOOT/BOOTX64.EFI": _payload(1, 70000),
                 "/EFI/Microsoft/Boot/bootmgfw.efi": _payload(2, 50000)}
    ntfs_files = {"/Windows/System32/ntoskrnl.exe": _payload(3, 300000),
                  "/Users/data.bin": _payload(4, 1 << 20)}
    ext_files = {"/etc/os-release": OS_RELEASE.encode(),
                 "/home/user/data.bin": _payload(5, 2 << 20)}
    built = Built(path, size)
    with tempfile.TemporaryDirectory() as tmp:
        for (num, start, length), (maker, files) in zip(
                parts, [(_fat, esp_files), (_ntfs, ntfs_files), (_ext4, ext_files)], strict=True):
            fs = Path(tmp) / f"p{num}"
            if maker is _ntfs:
                _ntfs(fs, length, files, start // 512)
            else:
                maker(fs, length, files)
            _place(path, fs, start)
            built.files.update({f"p{num}:{k}": hashlib.sha256(v).hexdigest()
                                for k, v in files.items()})
    built.sha256 = sha256_file(path)
    return built


def build_mbr_image(path: Path, size: int = 64 * MiB) -> Built:
    """MBR: p1 ext4 (24 MiB), p2 NTFS (the rest, last: grown with ntfsresize)."""
    with open(path, "wb") as f:
        f.truncate(size)
    run("sfdisk", "-q", str(path), input="label: dos\n2048,49152,83\n51200,,7\n")
    parts = _partitions(path)
    built = Built(path, size)
    with tempfile.TemporaryDirectory() as tmp:
        (n1, s1, l1), (n2, s2, l2) = parts
        ext = {"/etc/os-release": OS_RELEASE.encode()}
        ntfs = {"/Windows/System32/ntoskrnl.exe": _payload(6, 100000)}
        _ext4(Path(tmp) / "a", l1, ext)
        _ntfs(Path(tmp) / "b", l2, ntfs, s2 // 512)
        _place(path, Path(tmp) / "a", s1)
        _place(path, Path(tmp) / "b", s2)
        built.files.update({f"p{n1}:{k}": hashlib.sha256(v).hexdigest() for k, v in ext.items()})
        built.files.update({f"p{n2}:{k}": hashlib.sha256(v).hexdigest()
                            for k, v in ntfs.items()})
    built.sha256 = sha256_file(path)
    return built


def build_xfs_image(path: Path) -> Built:
    """GPT: p1 ext4 (8 MiB, a /boot), p2 XFS (300 MiB, last: grown with xfs_growfs)."""
    size = 310 * MiB
    with open(path, "wb") as f:
        f.truncate(size)
    run("sgdisk", "-n", "1:2048:+8M", "-t", "1:8300", "-c", "1:boot",
        "-n", "2:0:+300M", "-t", "2:8300", "-c", "2:root", str(path))
    (n1, s1, l1), (n2, s2, l2) = _partitions(path)
    boot = {"/grub/grub.cfg": b"set default=0\n"}
    root = {"/etc/os-release": OS_RELEASE.encode(), "/srv/data.bin": _payload(7, 3 << 20)}
    built = Built(path, size)
    with tempfile.TemporaryDirectory() as tmp:
        _ext4(Path(tmp) / "a", l1, boot)
        _xfs(Path(tmp) / "b", l2, root)
        _place(path, Path(tmp) / "a", s1)
        _place(path, Path(tmp) / "b", s2)
    for n, files in ((n1, boot), (n2, root)):
        built.files.update({f"p{n}:{k}": hashlib.sha256(v).hexdigest() for k, v in files.items()})
    built.sha256 = sha256_file(path)
    return built


def _partitions(path: Path) -> list[tuple[int, int, int]]:
    """(number, start byte, size bytes) from partx, which reads the table itself."""
    out = run("partx", "-g", "-b", "-o", "NR,START,SECTORS", str(path))
    rows = []
    for line in out.splitlines():
        nr, start, sectors = line.split()
        rows.append((int(nr), int(start) * 512, int(sectors) * 512))
    return rows


def convert(raw: Path, fmt: str, out: Path, *options: str) -> Path:
    """``qemu-img convert -O FMT`` (fmt: qcow2, vpc, vhdx, vmdk)."""
    run("qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(out))
    return out


def compress(raw: Path, kind: str, out: Path) -> Path:
    """gzip, xz or zstd with the command line tools, as an image would be published."""
    cmd = {"gzip": ["gzip", "-1", "-c"], "xz": ["xz", "-0", "-T1", "-c"],
           "zstd": ["zstd", "-q", "-1", "-c"]}[kind]
    with open(out, "wb") as f:
        subprocess.run([*cmd, str(raw)], stdout=f, check=True)
    return out


def file_hashes(device_part: str, fstype: str, names: list[str]) -> dict[str, str]:
    """sha256 of files read from a partition without mounting (mtools, ntfscat, debugfs)."""
    out = {}
    for name in names:
        if fstype == "vfat":
            data = subprocess.run(["mtype", "-i", device_part, "::" + name],
                                  capture_output=True, check=True).stdout
        elif fstype == "ntfs":
            data = subprocess.run(["ntfscat", device_part, name], capture_output=True,
                                  check=True).stdout
        else:
            data = subprocess.run(["debugfs", "-R", f"cat {name}", device_part],
                                  capture_output=True, check=True).stdout
        out[name] = hashlib.sha256(data).hexdigest()
    return out


class RangeServer:
    """An HTTP server on 127.0.0.1 serving ``directory`` with Range support.

    ``drop_after``: bytes sent on every GET without Range before the server
    closes the connection mid-body (a resumed GET, with Range, gets the rest);
    ``ranges=False`` makes it ignore Range (answers 200 with the whole file,
    dropped again), like a server that cannot resume. ``tls``: (certificate,
    key) files, e.g. from :func:`self_signed`: the server speaks HTTPS.
    """

    def __init__(self, directory: Path, drop_after: int | None = None, ranges: bool = True,
                 tls: tuple[Path, Path] | None = None):
        import http.server
        import threading

        server = self
        self.directory, self.drop_after, self.ranges = Path(directory), drop_after, ranges
        self.dropped: set[str] = set()
        self.completed: list[str] = []  # names whose whole answer was sent
        self.requests: list[tuple[str, str | None]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                path = server.directory / name
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start, end = 0, len(data)
                if rng and server.ranges:
                    spec = rng.split("=", 1)[1]
                    a, _, b = spec.partition("-")
                    if a == "":
                        start = len(data) - int(b)
                    else:
                        start = int(a)
                        end = int(b) + 1 if b else len(data)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
                self.end_headers()
                body = data[start:end]
                if server.drop_after is not None and not rng \
                        and len(body) > server.drop_after:
                    server.dropped.add(name)
                    self.wfile.write(body[:server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    import socket
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
                server.completed.append(name)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # the dropped connections are on purpose
        if tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, tls))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, by openssl."""
    cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert))
    return cert, key


SAMPLES = Path(__file__).resolve().parent / "fixtures" / "qemu-samples"


def qemu_sample(name: str, directory: Path) -> Path:
    """One of QEMU's native-tool samples (fixtures/qemu-samples), decompressed into
    ``directory``, its zeros left as holes."""
    import bz2
    out = Path(directory) / name
    d = bz2.BZ2Decompressor()
    with open(SAMPLES / f"{name}.bz2", "rb") as src, open(out, "wb") as f:
        while chunk := src.read(1 << 16):
            data = d.decompress(chunk)
            for i in range(0, len(data), 1 << 16):
                piece = data[i:i + (1 << 16)]
                if piece.count(0) == len(piece):
                    f.seek(len(piece), os.SEEK_CUR)
                else:
                    f.write(piece)
        f.truncate(f.tell())
    return out


def small_dirty_vhdx(directory: Path, name: str = "dirty-32M.vhdx") -> Path:
    """QEMU's VHDX whose log was never replayed (iotest-dirtylog-10G-4M.vhdx) with its
    virtual disk size set to 32 MiB in its metadata region (no checksum covers it): the
    same log (it maps the disk's 18th MiB, 0xa5 bytes), a disk quick to restore."""
    import struct
    import uuid
    path = qemu_sample("iotest-dirtylog-10G-4M.vhdx", directory).rename(Path(directory) / name)
    meta_guid = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e").bytes_le
    size_guid = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8").bytes_le
    with open(path, "r+b") as f:
        fd = f.fileno()
        table = os.pread(fd, 64 << 10, 192 << 10)  # the region table
        count, = struct.unpack_from("<I", table, 8)
        offset = next(struct.unpack_from("<Q", table, 32 + 32 * i)[0] for i in range(count)
                      if table[16 + 32 * i:32 + 32 * i] == meta_guid)
        region = os.pread(fd, 64 << 10, offset)
        n, = struct.unpack_from("<H", region, 10)
        at = next(struct.unpack_from("<I", region, 48 + 32 * i)[0] for i in range(n)
                  if region[32 + 32 * i:48 + 32 * i] == size_guid)
        os.pwrite(fd, struct.pack("<Q", 32 * MiB), offset + at)
    return path


def replayed_raw(image: Path, directory: Path) -> Path:
    """qemu-img's raw image of a copy of ``image`` whose log qemu-img replayed."""
    copy = Path(directory) / "replayed-by-hand.vhdx"
    run("cp", "--sparse=always", str(image), str(copy))
    run("qemu-img", "check", "-r", "all", "-f", "vhdx", str(copy))
    out = Path(directory) / "replayed-by-hand.raw"
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(copy), str(out))
    copy.unlink()
    return out
