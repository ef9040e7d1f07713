"""What the restore does with its inputs before and while it writes, on real loop devices.

A given SHA-256 (``--sha256`` or ``IMAGE.sha256`` beside the image) is checked by a first
pass over the image before the first byte is written: a wrong one leaves the target's
bytes as they were (hashed before and after), for raw, zstd, gzip and qcow2 files and
for images served over HTTP (spooled to the temporary directory, so downloaded once;
downloaded twice when the spool does not fit). An HTTP download that drops and resumes
sends If-Range with the first answer's validator; a file that changed on the server is
never spliced: the download restarts from zero (the disk then holds the new file, whole)
or the restore fails clearly. Plain messages for inputs Python's errors leaked through:
a directory as the image, a truncated gzip, a target or image device that cannot be
opened (EACCES), Ctrl-C at the confirmation. Needs root; about a minute.

The HTTP server here (:class:`ValidatorServer`) is :class:`restore_images.RangeServer`'s
kind with what that one lacks: ETag / Last-Modified, If-Range, a file that changes when
the connection drops, and the bytes sent per file.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import restore_images as ri
from conftest import ROOT, RTK, MiB, own_disks, rtk

from toolkit import restore

pytestmark = pytest.mark.host

WRONG = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    gpt = ri.build_gpt_image(d / "gpt.img")
    out = {"raw": gpt.path, "zstd": ri.compress(gpt.path, "zstd", d / "gpt.img.zst"),
           "gzip": ri.compress(gpt.path, "gzip", d / "gpt.img.gz"),
           "qcow2": ri.convert(gpt.path, "qcow2", d / "gpt.qcow2")}
    out["built"] = gpt
    return out


@pytest.fixture(autouse=True)
def env(rtk_dirs, need_root):
    pass


@pytest.fixture
def target(tmp_path, loops):
    """``target(size)`` -> a loop device full of random bytes (so "unchanged" means it)."""
    made = []

    def make(size: int = 96 * MiB) -> str:
        path = tmp_path / f"target{len(made)}.img"
        with open(path, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        made.append(path)
        return loops(path)
    return make


def digest(dev: str, n: int | None = None) -> str:
    h, left = hashlib.sha256(), n
    with open(dev, "rb") as f:
        while left is None or left > 0:
            data = f.read(8 * MiB if left is None else min(8 * MiB, left))
            if not data:
                break
            h.update(data)
            left = None if left is None else left - len(data)
    return h.hexdigest()


def cli_restore(image, dev, *args: str, **kw) -> subprocess.CompletedProcess:
    return rtk("restore", str(image), dev, *args, "--yes", "--target-id", os.path.basename(dev),
               **kw)


def plan(image, dev, **opts) -> restore.RestorePlan:
    return restore.plan_restore(str(image), dev, restore.RestoreOptions(**opts), source_role=())


class Events:
    """A progress callback that keeps every event."""

    def __init__(self):
        self.events = []

    def __call__(self, p):
        self.events.append((p.phase, p.done, p.total))

    def phases(self) -> list[str]:
        return list(dict.fromkeys(e[0] for e in self.events))


class ValidatorServer:
    """HTTP on 127.0.0.1 serving ``files`` (name -> bytes) with Range and If-Range.

    ``validators``: "etag", "last-modified", "both" or "none": what the answers carry
    (the ETag and the date follow ``version``, bumped by :meth:`change`).
    ``honour_if_range=False``: a broken proxy that answers a ranged request with 206
    whatever its If-Range says. :meth:`arm` (``drop_after``, ``change``): every answer
    without Range is cut after ``drop_after`` body bytes; ``change`` (a function of the
    name, returning the new bytes) replaces the file at each cut, ``changes`` times.
    ``sent``: body bytes sent per name; ``requests``: (name, Range, If-Range).
    """

    def __init__(self, files: dict[str, bytes], *, validators: str = "etag",
                 honour_if_range: bool = True):
        import http.server
        import socket

        server = self
        self.files, self.validators, self.honour = dict(files), validators, honour_if_range
        self.version = {name: 1 for name in files}
        self.drop_after: int | None = None
        self.change = None
        self.changes = 0
        self.sent: dict[str, int] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                with server.lock:
                    server.requests.append((name, rng, if_range))
                    data = server.files.get(name)
                    etag, modified = server.etag(name), server.modified(name)
                if data is None:
                    self.send_error(404)
                    return
                if rng and if_range and server.honour and if_range not in (etag, modified):
                    rng = None  # RFC 9110 13.1.5: the whole new representation, 200
                start, end = 0, len(data)
                if rng:
                    a, _, b = rng.split("=", 1)[1].partition("-")
                    start, end = ((len(data) - int(b), len(data)) if a == "" else
                                  (int(a), int(b) + 1 if b else len(data)))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if server.validators in ("etag", "both"):
                    self.send_header("ETag", etag)
                if server.validators in ("last-modified", "both"):
                    self.send_header("Last-Modified", modified)
                self.end_headers()
                body = data[start:end]
                cut = server.drop_after
                if cut is not None and not self.headers.get("Range") and len(body) > cut:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    server.count(name, cut)
                    with server.lock:
                        if server.change and server.changes:
                            server.changes -= 1
                            server.files[name] = server.change(name)
                            server.version[name] += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                try:
                    self.wfile.write(body)
                    server.count(name, len(body))
                except OSError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # the dropped connections are on purpose
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def etag(self, name: str) -> str:
        return f'"{name}-v{self.version.get(name, 0)}"'

    def modified(self, name: str) -> str:
        return email.utils.formatdate(1_700_000_000 + 100 * self.version.get(name, 0),
                                      usegmt=True)

    def count(self, name: str, n: int) -> None:
        with self.lock:
            self.sent[name] = self.sent.get(name, 0) + n

    def arm(self, drop_after: int, change=None, changes: int = 1) -> None:
        self.drop_after, self.change, self.changes = drop_after, change, changes
        self.sent.clear()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def make(files, **kw) -> ValidatorServer:
        s = ValidatorServer(files, **kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


def two_versions(size: int = 24 * MiB) -> tuple[bytes, bytes]:
    """A raw image and a changed one that differs from it before and after 3 MiB, so
    that a splice of the two (cut anywhere in between) is neither."""
    v1 = bytearray(os.urandom(size))
    v2 = bytearray(v1)
    v2[2 * MiB:2 * MiB + 4096] = os.urandom(4096)
    v2[size - 2 * MiB:size - 2 * MiB + 4096] = os.urandom(4096)
    return bytes(v1), bytes(v2)


# --- a given checksum is checked before the first byte is written ---------------------------

@pytest.mark.parametrize("fmt", ["raw", "zstd", "gzip", "qcow2"])
def test_a_wrong_sha256_writes_nothing(images, target, fmt):
    dev = target()
    before = digest(dev)
    r = cli_restore(images[fmt], dev, "--sha256", WRONG)
    assert digest(dev) == before, r.stdout + r.stderr
    assert r.returncode == 4, r.stdout + r.stderr
    assert "SHA-256 mismatch" in r.stdout and "nothing was written" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("fmt", ["raw", "zstd", "gzip", "qcow2"])
def test_a_right_sha256_is_checked_first_then_restored(images, target, fmt):
    dev = target(64 * MiB)  # the image's size: the disk is the image, byte for byte
    built = images["built"]
    events = Events()
    p = plan(images[fmt], dev, sha256=ri.sha256_file(images[fmt]), interval=0)
    res = restore.restore(p, progress=events)
    assert res.status == "ok", res.message
    assert res.sha256_match and digest(dev) == built.sha256
    phases = events.phases()
    assert phases.index("checksum") < phases.index("write"), phases
    last = [e for e in events.events if e[0] == "checksum"][-1]
    assert last[1] == last[2] == os.path.getsize(images[fmt])  # bytes of the file as stored


@pytest.mark.parametrize("fmt", ["raw", "zstd"])
def test_a_wrong_sidecar_beside_an_http_image_writes_nothing(images, target, serve, fmt,
                                                            tmp_path):
    name = Path(images[fmt]).name
    srv = serve({name: Path(images[fmt]).read_bytes(), name + ".sha256": f"{WRONG}  {name}\n"
                 .encode()})
    dev = target()
    before = digest(dev)
    spool = tmp_path / "spool"
    spool.mkdir()
    r = cli_restore(srv.url(name), dev, "--tmpdir", str(spool))
    assert digest(dev) == before, r.stdout + r.stderr
    assert r.returncode == 4 and "SHA-256 mismatch" in r.stdout, r.stdout + r.stderr
    assert "nothing was written" in r.stdout and "from " + srv.url(name) + ".sha256" in r.stdout
    assert list(spool.iterdir()) == []  # the spooled copy is gone


def test_an_http_image_with_a_checksum_is_downloaded_once(images, target, serve, tmp_path):
    name = "gpt.img.zst"
    data = Path(images["zstd"]).read_bytes()
    srv = serve({name: data, name + ".sha256": f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                 .encode()})
    dev = target(64 * MiB)
    spool = tmp_path / "spool"
    spool.mkdir()
    p = plan(srv.url(name), dev, tmpdir=str(spool), interval=0)
    srv.sent.clear()
    events = Events()
    res = restore.restore(p, progress=events)
    assert res.status == "ok" and res.sha256_match, res.message
    assert digest(dev) == images["built"].sha256
    assert srv.sent[name] == len(data)  # spooled, then restored from the spool
    assert "checksum" in events.phases() and not any(spool.iterdir())


def test_an_http_image_whose_spool_does_not_fit_is_read_twice(target, serve, tmp_path):
    """The temporary directory is a 2 MiB tmpfs: a first pass over HTTP checks the hash,
    then the restore downloads the image again. A wrong hash writes nothing."""
    data = os.urandom(24 * MiB)
    good = hashlib.sha256(data).hexdigest()
    srv = serve({"raw.img": data})
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        dev = target(32 * MiB)
        before = digest(dev)
        p = plan(srv.url("raw.img"), dev, sha256=WRONG, tmpdir=str(small))
        srv.sent.clear()
        res = restore.restore(p)
        assert res.status == "mismatch" and "nothing was written" in res.message, res.message
        assert digest(dev) == before and srv.sent["raw.img"] == len(data)
        p = plan(srv.url("raw.img"), dev, sha256=good, tmpdir=str(small))
        srv.sent.clear()
        res = restore.restore(p)
        assert res.status == "ok", res.message
        assert srv.sent["raw.img"] == 2 * len(data)
        assert digest(dev, len(data)) == good
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_an_http_image_changed_between_check_and_restore_writes_nothing(target, serve,
                                                                        tmp_path):
    """Checked by a first pass (no room to spool), then changed on the server before the
    restore downloads it again: the new ETag is refused before anything is written."""
    v1, v2 = two_versions()
    srv = serve({"raw.img": v1})
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        dev = target(32 * MiB)
        before = digest(dev)
        p = plan(srv.url("raw.img"), dev, sha256=hashlib.sha256(v1).hexdigest(),
                 tmpdir=str(small), interval=0)

        def progress(pr):
            if pr.phase == "checksum" and pr.done == pr.total and srv.version["raw.img"] == 1:
                srv.files["raw.img"], srv.version["raw.img"] = v2, 2
        res = restore.restore(p, progress=progress)
        assert digest(dev) == before, res.message
        assert res.status in ("refused", "mismatch") and "nothing was written" in res.message
        assert "changed on the server" in res.message, res.message
    finally:
        subprocess.run(["umount", str(small)], check=False)


# --- HTTP resume: If-Range, a changed file is never spliced ---------------------------------

@pytest.mark.parametrize("validators", ["etag", "last-modified"])
def test_a_file_changed_during_the_download_is_not_spliced(target, serve, validators):
    v1, v2 = two_versions()
    srv = serve({"raw.img": v1}, validators=validators)
    dev = target(len(v1))
    p = plan(srv.url("raw.img"), dev)
    srv.arm(drop_after=3 * MiB, change=lambda _n: v2)
    res = restore.restore(p)
    first = srv.etag("raw.img").replace("v2", "v1") if validators == "etag" else None
    ranged = [r for r in srv.requests if r[1] == f"bytes={3 * MiB}-"]
    assert ranged and all(r[2] for r in ranged)  # every resume sends If-Range
    if first:
        assert ranged[0][2] == first
    on_disk = digest(dev, len(v1))
    assert on_disk != hashlib.sha256(v1[:3 * MiB] + v2[3 * MiB:]).hexdigest()  # no splice
    assert res.status == "ok", res.message  # restarted from zero: the new file, whole
    assert on_disk == hashlib.sha256(v2).hexdigest()
    assert any("changed on the server" in w and "restarted from byte 0" in w
               for w in res.warnings), res.warnings


def test_a_206_with_another_etag_is_not_spliced(target, serve):
    """A server (or proxy) that ignores If-Range and answers 206 from the new file."""
    v1, v2 = two_versions()
    srv = serve({"raw.img": v1}, honour_if_range=False)
    dev = target(len(v1))
    p = plan(srv.url("raw.img"), dev)
    srv.arm(drop_after=3 * MiB, change=lambda _n: v2)
    res = restore.restore(p)
    on_disk = digest(dev, len(v1))
    assert on_disk != hashlib.sha256(v1[:3 * MiB] + v2[3 * MiB:]).hexdigest()
    assert res.status == "ok", res.message
    assert on_disk == hashlib.sha256(v2).hexdigest()


def test_a_file_that_keeps_changing_fails_clearly(target, serve):
    v1, v2 = two_versions()
    versions = iter([v2, v1, v2, v1, v2, v1])
    srv = serve({"raw.img": v1})
    dev = target(len(v1))
    p = plan(srv.url("raw.img"), dev)
    srv.arm(drop_after=3 * MiB, change=lambda _n: next(versions), changes=6)
    res = restore.restore(p)
    assert res.status == "failed" and res.exit_code == 1, res.message
    assert "the image changed on the server during the download (ETag" in res.message
    assert "the disk is not usable" in res.message and "verified" not in res.message
    assert res.wiped and digest(dev, MiB) == hashlib.sha256(bytes(MiB)).hexdigest()


def test_a_changed_file_of_another_kind_stops_clearly(target, serve):
    """The new file is no longer a raw image (gzip): not restarted, not spliced: stopped."""
    import gzip
    v1, v2 = two_versions()
    srv = serve({"raw.img": v1})
    dev = target(len(v1))
    p = plan(srv.url("raw.img"), dev)
    srv.arm(drop_after=3 * MiB, change=lambda _n: gzip.compress(v2, 1))
    res = restore.restore(p)
    assert res.status == "failed", res.message
    assert "the image changed on the server during the download (ETag" in res.message
    assert "the new file is gzip-compressed" in res.message, res.message
    assert "the disk is not usable" in res.message and res.wiped
    assert digest(dev, MiB) == hashlib.sha256(bytes(MiB)).hexdigest()  # no table


def test_a_file_changed_during_the_spool_writes_nothing(target, serve, tmp_path):
    """With a checksum the image is spooled first: a change while spooling (the resume
    gets another ETag) stops there, before anything is written, and says why."""
    v1, v2 = two_versions()
    srv = serve({"raw.img": v1})
    dev = target(32 * MiB)
    before = digest(dev)
    spool = tmp_path / "spool"
    spool.mkdir()
    p = plan(srv.url("raw.img"), dev, sha256=hashlib.sha256(v1).hexdigest(),
             tmpdir=str(spool))
    srv.arm(drop_after=3 * MiB, change=lambda _n: v2)
    res = restore.restore(p)
    assert digest(dev) == before
    assert res.status == "refused" and "nothing was written" in res.message, res.message
    assert "changed on the server" in res.message and not any(spool.iterdir())


def test_a_server_without_validators(target, serve):
    """Resumed (the Content-Range total matches), with a warning that it cannot be told
    whether the file is the same; a changed length is not spliced."""
    v1, _v2 = two_versions()
    srv = serve({"raw.img": v1}, validators="none")
    dev = target(32 * MiB)
    p = plan(srv.url("raw.img"), dev)
    assert any("no ETag or Last-Modified" in w for w in p.warnings), p.warnings
    srv.arm(drop_after=3 * MiB)
    res = restore.restore(p)
    assert res.status == "ok" and res.resumes == 1, res.message
    assert digest(dev, len(v1)) == hashlib.sha256(v1).hexdigest()
    assert any("no ETag or Last-Modified" in w for w in res.warnings), res.warnings
    longer = _v2 + os.urandom(MiB)  # another file, and longer: no splice possible
    p = plan(srv.url("raw.img"), dev)
    srv.arm(drop_after=3 * MiB, change=lambda _n: longer)
    res = restore.restore(p)
    on_disk = digest(dev, len(longer))
    assert on_disk != hashlib.sha256(v1[:3 * MiB] + longer[3 * MiB:]).hexdigest()
    assert res.status == "ok" and on_disk == hashlib.sha256(longer).hexdigest(), res.message
    assert any("changed on the server" in w for w in res.warnings), res.warnings


# --- plain messages, no traceback -----------------------------------------------------------

def test_a_directory_as_the_image(target, tmp_path):
    adir = tmp_path / "adir"
    adir.mkdir()
    r = cli_restore(adir, target())
    assert r.returncode == 5 and f"{adir} is a directory, not an image file" in r.stderr
    assert "Errno" not in r.stderr and "Traceback" not in r.stderr


def test_a_truncated_gzip_says_so_plainly(images, target, tmp_path):
    data = Path(images["gzip"]).read_bytes()
    for cut in (200_000, len(data) * 4 // 5):  # within the first MiB of output, and later
        bad = tmp_path / "bad.img.gz"
        bad.write_bytes(data[:cut])
        r = cli_restore(bad, target())
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "the image is truncated or corrupt: the gzip stream ends early at byte" in out
        assert "CorruptImage" not in out and "Traceback" not in out


def without_dac(*cmd: str, **kw) -> subprocess.CompletedProcess:
    """``cmd`` as root without CAP_DAC_OVERRIDE: a mode-000 device cannot be opened."""
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd],
                          cwd=ROOT, capture_output=True, text=True, **kw)


@pytest.fixture
def locked(loops, tmp_path):
    """``locked(dev)``: the device node's mode is 000 for the test."""
    done = []

    def lock(dev: str) -> str:
        done.append((dev, os.stat(dev).st_mode & 0o7777))
        os.chmod(dev, 0)
        return dev
    yield lock
    for dev, mode in done:
        os.chmod(dev, mode)


def test_a_target_that_cannot_be_opened(images, target, locked):
    dev = locked(target())
    r = without_dac(*RTK, "restore", str(images["raw"]), dev, "--yes", "--target-id",
                    os.path.basename(dev))
    assert r.returncode == 5, r.stderr
    assert f"the target {dev}" in r.stderr and "permission denied" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "Errno" not in r.stderr


def test_an_image_device_that_cannot_be_opened(images, target, loops, locked, tmp_path):
    src = locked(loops(images["raw"]))
    r = without_dac(*RTK, "restore", src, target(), "--yes", "--target-id", "x")
    assert r.returncode == 5, r.stderr
    assert f"cannot open the image {src}: permission denied" in r.stderr
    assert "Traceback" not in r.stderr and "Errno" not in r.stderr


def test_unattended_names_the_target_it_cannot_open(images, target, monkeypatch):
    """Unattended mode used to say "cannot read the image ... (is the server up and
    reachable?)" for an EACCES on the target."""
    from toolkit.blockio import blockdev
    from toolkit.unattended import Console, RunReporter, run
    from toolkit.unattended.cmdline import Cmdline
    from toolkit.unattended.plan import read_plan

    dev = target()
    before = digest(dev)
    real = blockdev.open_device

    def open_device(path, **kw):
        if os.path.realpath(path) == dev:
            raise PermissionError(13, "Permission denied", path)
        return real(path, **kw)
    monkeypatch.setattr(blockdev, "open_device", open_device)
    size = 96 * MiB
    medium = str(Path(images["raw"]).parent)
    p = read_plan(Cmdline(f"rtk.mode=restore rtk.image=/{Path(images['raw']).name} "
                          f"rtk.disk=rule:transport=loop,size={size} "
                          "rtk.consent=serial:RTK-IN-1 rtk.done=poweroff"))
    con = Console(streams=[])
    out = run(p, console=con, power=lambda _a: None, medium=medium,
              list_disks=own_disks(dev, serials={dev: "RTK-IN-1"}), reporter=RunReporter(None))
    assert digest(dev) == before
    assert out.status == "refused", out.message
    assert f"the target {dev}" in out.message and "permission denied" in out.message
    assert "server up" not in out.message


def test_ctrl_c_at_the_confirmation(images, target):
    dev = target()
    before = digest(dev)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RTK, "restore", str(images["raw"]), dev], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"to go on" not in out and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
        assert b"to go on" in out, out
        time.sleep(0.5)  # input() writes the prompt, then reads: Ctrl-C while it reads
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 5, text
    assert "Traceback" not in text and re.search(r"nothing (was )?written", text), text
    assert digest(dev) == before


def test_a_pipe_as_the_image_is_refused_plainly(target, tmp_path):
    """A pipe cannot be read twice (probed, checked, then written): refused, unread."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        try:
            fd = os.open(fifo, os.O_WRONLY)
            os.write(fd, os.urandom(MiB))
            os.close(fd)
        except OSError:
            pass
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        r = cli_restore(fifo, target(), timeout=60)
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets a waiting feeder go
    assert r.returncode == 5, r.stdout + r.stderr
    assert "is a pipe" in r.stderr and "Traceback" not in r.stderr


def test_nothing_is_left_in_the_temporary_directory(images, target, tmp_path):
    """A refused, a cancelled and a finished restore leave no spool behind."""
    spool = tmp_path / "spool"
    spool.mkdir()
    res = restore.restore(plan(images["zstd"], target(), sha256=WRONG, tmpdir=str(spool)))
    assert res.status == "mismatch"
    assert list(spool.iterdir()) == []


# --- an archive is not a disk image -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["tar.gz", "zip", "partclone"])
def test_an_archive_is_refused_not_written_as_raw(images, target, tmp_path, kind):
    """A tar.gz made by tar (its 512-byte records make a raw-looking size), a zip, a
    partclone image: refused in plain words before anything is written; the target is left
    byte for byte."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_bytes(os.urandom(3 * MiB))
    if kind == "tar.gz":
        arch = tmp_path / "backup.tar.gz"
        subprocess.run(["tar", "-czf", str(arch), "-C", str(files), "."], check=True)
        words = "this is a tar archive, not a disk image"
    elif kind == "zip":
        import zipfile
        arch = tmp_path / "backup.zip"
        with zipfile.ZipFile(arch, "w") as z:
            z.write(files / "a.txt", "a.txt")
        words = "this is a zip archive, not a disk image"
    else:
        arch = tmp_path / "sda1.ext4-ptcl-img"
        arch.write_bytes(b"partclone-image\0" + b"0.3.27\0" + bytes(4 * MiB - 23))
        words = "this is a partclone image"
    dev = target(32 * MiB)
    before = digest(dev)
    r = cli_restore(arch, dev)
    assert r.returncode == 5, r.stdout + r.stderr  # refused
    said = r.stdout + r.stderr
    assert words in said and "nothing was written" in said, said
    assert "Traceback" not in said
    assert digest(dev) == before
