"""The one reader -> hasher -> consumer pipeline (toolkit.blockio.pipeline), and the
verifications built on it, without devices (regular files stand in for disks)."""

from __future__ import annotations

import os
import threading
import time
import types

import blake3
import pytest
from conftest import MiB

from toolkit.blockio import blockdev
from toolkit.blockio import verify as bverify
from toolkit.blockio.hashing import HashStage, RegionHasher
from toolkit.blockio.pipeline import BAD, DATA, ZERO, Pipeline
from toolkit.copy.result import CopyResult, conclude
from toolkit.jobs.progress import Reporter
from toolkit.restore.write import Failed, ReadBack

pytestmark = pytest.mark.unit

SIZE = 8 * MiB
TIMEOUT = 10  # seconds: a pipeline that has not ended by then hangs


@pytest.fixture
def image(tmp_path):
    data = os.urandom(SIZE)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    h = RegionHasher("blake3", SIZE, MiB)
    h.update(0, memoryview(data))
    fd = os.open(path, os.O_RDONLY)
    yield fd, h.digest()
    os.close(fd)


@pytest.fixture
def reads_fail_from(monkeypatch):
    """``reads_fail_from(pos)``: reading a device at ``pos`` or later raises
    MemoryError("made to fail"), as a bug or a full memory would in the reader."""
    real = blockdev.read_exact

    def arm(pos: int) -> None:
        def read_exact(fd, view, offset):
            if offset >= pos:
                raise MemoryError("made to fail")
            return real(fd, view, offset)
        monkeypatch.setattr(blockdev, "read_exact", read_exact)
    return arm


def _verify(how: str, fd: int, digest):
    cancel = threading.Event()
    if how == "read back":
        return bverify.verify_against(fd, digest, cancel=cancel, chunk_size=MiB)
    if how == "compare":
        return bverify.compare_devices(fd, fd, SIZE, "blake3", reporter=Reporter(None, 1),
                                       cancel=cancel, chunk_size=MiB)
    return bverify.hash_device(fd, digest, Reporter(None, 1), cancel, MiB)


@pytest.mark.parametrize("how", ["read back", "compare", "hash"])
def test_a_reader_failure_during_a_verification_is_a_failure_not_a_mismatch(
        how, image, reads_fail_from):
    """A reader that fails (MemoryError, a bug) while reading a target back: the
    verification did not finish (exit 1), it did not find a difference (exit 4)."""
    fd, digest = image
    reads_fail_from(3 * MiB)
    out = _verify(how, fd, digest)
    assert not out.match
    assert out.error and "made to fail" in out.error, out
    result = CopyResult("copy", "ok", "", {}, None, SIZE, 0.0, 0.0, "blake3", verify=out)
    conclude(result, threading.Event())
    assert (result.status, result.exit_code) == ("failed", 1), result.message
    assert "verification did not finish" in result.message


@pytest.mark.parametrize("how", ["read back", "compare", "hash"])
def test_the_verifications_still_match(how, image):
    fd, digest = image
    out = _verify(how, fd, digest)
    assert out.match and not out.error, out


def _read_back(fd: int, digest) -> ReadBack:
    """A restore's read-back over ``fd``, the writer having flushed all of it."""
    head = os.pread(fd, MiB, 0)
    back = ReadBack(types.SimpleNamespace(fd=fd, size=SIZE), "blake3", MiB, head, MiB)
    back.start()
    back.advance(4 * MiB)  # read while the writer writes the rest
    return back


def test_a_restores_read_back_fails_on_a_reader_failure(image, reads_fail_from):
    fd, digest = image
    assert _read_back(fd, digest).finish(digest, Reporter(None, 1), threading.Event()).match
    reads_fail_from(5 * MiB)
    back = _read_back(fd, digest)
    try:
        with pytest.raises(Failed, match="made to fail") as e:
            back.finish(digest, Reporter(None, 1), threading.Event())
        assert e.value.status == "failed"
    finally:
        back.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("rtk-read-back")]


# --- the pipeline itself ----------------------------------------------------------------

CHUNK = 64 * 1024


class Endless:
    """A reader that never ends by itself; it counts the chunks it read."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.count = fail_at, 0

    def __call__(self, feed) -> None:
        while not feed.stopped:
            buf = feed.buffer()
            if self.count == self.fail_at:
                raise RuntimeError("the reader made to fail")
            feed.put(DATA, self.count * CHUNK, CHUNK, buf)
            self.count += 1


def _run(body) -> list:
    """Run ``body()`` in a thread; what it returned or raised, or fail on a hang."""
    got: list = []

    def work():
        try:
            got.append(body())
        except BaseException as e:  # noqa: BLE001 - looked at below
            got.append(e)
    t = threading.Thread(target=work, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "the pipeline hung"
    assert time.monotonic() - t0 < TIMEOUT / 2
    names = {"t-reader", "t-stage"}
    assert not [t for t in threading.enumerate() if t.name in names], "a thread is left"
    return got


def _pipeline(reader, stage=None, cancel=None) -> Pipeline:
    return Pipeline(reader, chunk=CHUNK, buffers=3, stage=stage, cancel=cancel,
                    names=("t-reader", "t-stage"))


@pytest.mark.parametrize("staged", [False, True], ids=["reader-consumer", "with-stage"])
def test_a_reader_failure_reaches_the_consumer_after_what_was_read(staged):
    reader = Endless(fail_at=5)
    seen: list[int] = []

    def body():
        with _pipeline(reader, stage=(lambda item: item) if staged else None) as pipe:
            for _kind, pos, _n, _buf in pipe:
                seen.append(pos)
    [e] = _run(body)
    assert isinstance(e, RuntimeError) and "reader made to fail" in str(e)
    assert seen == [i * CHUNK for i in range(5)]  # every item before it, in order


def test_a_stage_failure_reaches_the_consumer_and_stops_the_reader():
    reader = Endless()

    def stage(item):
        if item[1] >= 4 * CHUNK:
            raise MemoryError("the stage made to fail")
        return item
    seen: list[int] = []

    def body():
        with _pipeline(reader, stage) as pipe:
            for _kind, pos, _n, _buf in pipe:
                seen.append(pos)
    [e] = _run(body)
    assert isinstance(e, MemoryError)
    assert seen == [i * CHUNK for i in range(4)]
    assert reader.count < 4 + 3 + 3  # stopped at once: at most the pool's worth more


def test_a_consumer_failure_stops_the_reader_and_the_stage():
    reader = Endless()

    def body():
        with _pipeline(reader, lambda item: item) as pipe:
            for _kind, pos, _n, _buf in pipe:
                if pos == 2 * CHUNK:
                    raise ValueError("the consumer made to fail")
    [e] = _run(body)
    assert isinstance(e, ValueError)
    assert reader.count < 3 + 3 + 3


def test_cancel_stops_the_reader_and_what_was_read_still_arrives():
    reader, cancel = Endless(), threading.Event()

    def body():
        n = 0
        with _pipeline(reader, cancel=cancel) as pipe:
            for _item in pipe:
                n += 1
                if n == 3:
                    cancel.set()
        return n
    [n] = _run(body)
    assert n == reader.count and 3 <= n < 3 + 3 + 2


def test_the_hash_stage_hashes_marks_zeros_and_passes_bad_items():
    data = os.urandom(CHUNK)
    hasher = RegionHasher("blake3", 3 * CHUNK, CHUNK)
    stage = HashStage(hasher, zeros=bytes(CHUNK))

    def reader(feed):
        for pos, content in ((0, data), (CHUNK, bytes(CHUNK))):
            buf = feed.buffer()
            buf.view[:CHUNK] = content
            feed.put(DATA, pos, CHUNK, buf)
        feed.put(ZERO, 2 * CHUNK, CHUNK, feed.buffer())  # not read: hashed as zeros
        feed.put(BAD, 3 * CHUNK, CHUNK, "Input/output error")

    def body():
        with _pipeline(reader, stage) as pipe:
            return [(kind, pos) for kind, pos, _n, _p in pipe]
    [kinds] = _run(body)
    assert kinds == [(DATA, 0), (ZERO, CHUNK), (ZERO, 2 * CHUNK), (BAD, 3 * CHUNK)]
    assert hasher.pos == 3 * CHUNK
    assert hasher.stream.hexdigest() == blake3.blake3(data + bytes(2 * CHUNK)).hexdigest()
    assert not stage.valid  # the bad item: the hash does not cover the stream


def test_a_failing_hasher_reaches_the_consumer_after_what_it_hashed():
    """The old hasher thread let the items flow on unhashed and kept its failure in an
    attribute for the writer to check; now the failure is the next item the writer
    gets, after those hashed before it, and the reader stops."""
    class Failing(RegionHasher):
        def update(self, pos, data):
            if pos >= 2 * CHUNK:
                raise RuntimeError("made to fail")
            return super().update(pos, data)
    reader, got = Endless(), []

    def body():
        stage = HashStage(Failing("blake3", 8 * CHUNK, CHUNK), zeros=bytes(CHUNK))
        with _pipeline(reader, stage) as pipe:
            for kind, pos, _n, _buf in pipe:
                got.append((kind, pos))
    [e] = _run(body)
    assert isinstance(e, RuntimeError) and str(e) == "made to fail"
    assert got == [(ZERO, 0), (ZERO, CHUNK)]  # fresh mmap buffers: zeros
