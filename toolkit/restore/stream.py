"""Byte streams over a :class:`~toolkit.restore.source.Source`: hashing and decompression.

:class:`Input` hands out the source's bytes (after a few bytes already read for
detection) and hashes them (SHA-256, the value ``sha256sum IMAGE`` prints)
as they pass; with ``background=True`` a thread of its own reads and hashes
ahead (a download overlaps the decompression). :func:`decompressor` wraps it
in a reader that yields the decompressed bytes: gzip and xz with the
standard library, zstd with the ``zstandard`` package (:class:`ZstdStream`,
which decompresses straight into the caller's buffer: ``readinto``);
concatenated members/streams/frames are followed. An input that ends inside
a member is an error (:class:`CorruptImage`), as is corrupt data, so a
truncated download can never pass for a complete image. Its message is plain
("the image is truncated or corrupt: the gzip stream ends early at byte N",
N counted in the file as stored) and is shown as it is, without a class name.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import queue
import threading
import zlib

import zstandard

from toolkit.restore import detect
from toolkit.restore.source import CHUNK, Source


class CorruptImage(ValueError):
    """The image's data is invalid or ends early."""


class Input:
    """The raw bytes of the source, from the start; ``sha256`` of everything read so far.

    ``background``: a thread reads the source ahead (up to ``depth`` pieces)
    and hashes it, so a download and its SHA-256 overlap the decompression;
    ``sha256`` is complete once :meth:`read` has returned ``b""``. Call
    :meth:`close` to stop it early.
    """

    def __init__(self, source: Source, prefix: bytes = b"", *, background: bool = False,
                 depth: int = 16):
        self.source, self.prefix = source, prefix
        self.sha256 = hashlib.sha256()
        self.consumed = 0
        self.piece, self.offset = b"", 0
        self.error: BaseException | None = None
        self.thread = None
        if background:
            self.sha256.update(prefix)
            self.pieces: queue.Queue = queue.Queue(depth)
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._fill, daemon=True, name="rtk-download")
            self.thread.start()

    def _fill(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.source.read(CHUNK)
                self.sha256.update(data)
                if not self._put(data) or not data:
                    return
        except BaseException as e:  # noqa: BLE001 - raised by read() in the consumer
            self._put(e)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.pieces.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _next_piece(self, n: int) -> bytes:
        if self.thread is None:
            data = self.source.read(n)
            self.sha256.update(data)
            return data
        if self.piece is None:  # the end, or an error, was handed out
            if self.error is not None:
                raise self.error
            return b""
        if self.offset >= len(self.piece):
            item = self.pieces.get()
            if isinstance(item, BaseException):
                self.piece, self.error = None, item
                raise item
            self.piece, self.offset = item, 0
            if not item:
                self.piece = None
                return b""
        data = self.piece[self.offset:self.offset + n]
        self.offset += len(data)
        return data

    def read(self, n: int = CHUNK) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix[:n], self.prefix[n:]
            if self.thread is None:
                self.sha256.update(data)
        else:
            data = self._next_piece(n)
        self.consumed += len(data)
        return data

    def close(self) -> None:
        """Stop the background reader; it ends when its current read returns."""
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=5)


def _new(kind: str):
    if kind == detect.GZIP:
        return zlib.decompressobj(wbits=31)
    if kind == detect.XZ:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    raise ValueError(f"unknown compression {kind}")


class Decompressed:
    """gzip or xz: ``read(n)``: up to ``n`` decompressed bytes, ``b""`` at the (complete) end.

    Memory stays bounded whatever the compression ratio (a disk image's zeros
    compress thousands of times): the decompressor is asked for at most ``n`` bytes.
    """

    def __init__(self, raw: Input, kind: str):
        self.raw, self.kind = raw, kind
        self.obj = _new(kind)
        self.buf = b""  # input not yet given to the decompressor
        self.done = False
        self.pending = memoryview(b"")  # output not yet handed out
        self.offset = 0

    def _input(self) -> bytes:
        data, self.buf = self.buf or self.raw.read(CHUNK), b""
        if not data:
            raise CorruptImage(f"the image is truncated or corrupt: the {self.kind} stream "
                               f"ends early at byte {self.raw.consumed}")
        return data

    def _next_member(self) -> bool:
        """After the end of a member: start the next one, or report the end of the input."""
        data, self.buf = self.obj.unused_data + self.buf, b""
        while True:
            if self.kind == detect.XZ:
                data = data.lstrip(b"\0")  # stream padding
            if data:
                break
            data = self.raw.read(CHUNK)
            if not data:
                return False
        self.obj, self.buf = _new(self.kind), data
        return True

    def _step(self, n: int) -> bytes:
        try:
            if self.kind == detect.GZIP:
                out = b"" if self.buf else self.obj.decompress(b"", n)  # output still held
                if out:
                    return out
                out = self.obj.decompress(self._input(), n)
                self.buf = b"" if self.obj.eof else self.obj.unconsumed_tail
                return out
            return self.obj.decompress(self._input() if self.obj.needs_input else b"", n)
        except (zlib.error, lzma.LZMAError) as e:
            raise CorruptImage(f"the image is corrupt: the {self.kind} data is corrupt near "
                               f"byte {self.raw.consumed} ({e})") from None

    def read(self, n: int = CHUNK) -> bytes:
        while self.offset >= len(self.pending) and not self.done:
            if self.obj.eof and not self._next_member():
                self.done = True
                break
            out = self._step(n)
            if out:
                self.pending, self.offset = memoryview(out), 0
        # hand out from the pending output without copying what stays behind
        out = bytes(self.pending[self.offset:self.offset + n])
        self.offset += len(out)
        return out


ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE = 0x184D2A50  # to 0x184D2A5F


class ZstdFrames:
    """Follows the zstd frame format (RFC 8878) over the compressed bytes as they pass,
    block header by block header, to tell a complete stream from a cut one:
    ``zstandard``'s stream reader ends quietly when its input ends inside a frame.
    Costs a few Python steps per block (at most 128 KiB of output each)."""

    def __init__(self):
        self.state, self.need, self.have = "magic", 4, bytearray()
        self.skip = 0  # bytes of block content or skippable frame still to pass
        self.frames, self.checksum, self.consumed = 0, False, 0

    def feed(self, data) -> None:
        view, i = memoryview(data), 0
        self.consumed += len(view)
        while i < len(view):
            if self.skip:
                take = min(self.skip, len(view) - i)
                self.skip -= take
                i += take
                continue
            take = min(self.need - len(self.have), len(view) - i)
            self.have += view[i:i + take]
            i += take
            if len(self.have) == self.need:
                self._field(bytes(self.have))
                self.have.clear()

    def _field(self, b: bytes) -> None:
        at = self.consumed  # only for messages: near here
        if self.state == "magic":
            magic = int.from_bytes(b, "little")
            if magic == ZSTD_MAGIC:
                self.state, self.need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == SKIPPABLE:
                self.state, self.need = "skippable", 4
            else:
                raise CorruptImage(f"the image is corrupt: the zstd data is corrupt near byte "
                                   f"{at}: no frame starts there (magic {magic:#010x})")
        elif self.state == "skippable":
            self.skip, self.state, self.need = int.from_bytes(b, "little"), "magic", 4
        elif self.state == "descriptor":
            fhd = b[0]
            single = bool(fhd & 0x20)
            self.checksum = bool(fhd & 0x04)
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + \
                ((1 if single else 0), 2, 4, 8)[fhd >> 6]
            self.state, self.need = ("header", rest) if rest else ("block", 3)
        elif self.state == "header":
            self.state, self.need = "block", 3
        elif self.state == "block":
            h = int.from_bytes(b, "little")
            last, kind, size = h & 1, (h >> 1) & 3, h >> 3
            if kind == 3:
                raise CorruptImage(f"the image is corrupt: the zstd data is corrupt near byte "
                                   f"{at}: reserved block type")
            self.skip = 1 if kind == 1 else size  # RLE blocks hold one byte
            if not last:
                self.state, self.need = "block", 3
            elif self.checksum:
                self.state, self.need = "checksum", 4
            else:
                self._frame_done()
        elif self.state == "checksum":
            self._frame_done()

    def _frame_done(self) -> None:
        self.frames += 1
        self.state, self.need = "magic", 4

    def complete(self) -> bool:
        """The input so far is whole frames (at least one), nothing cut."""
        return (self.frames > 0 and self.state == "magic" and not self.have
                and not self.skip)


class _Tracked:
    """``raw`` as zstandard's source: its bytes pass through a :class:`ZstdFrames`."""

    def __init__(self, raw: Input, frames: ZstdFrames):
        self.raw, self.frames = raw, frames

    def read(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.frames.feed(data)
        return data


class ZstdStream:
    """The decompressed bytes of a zstd input: ``readinto(buffer)`` decompresses into the
    caller's buffer (no copy); ``read(n)``; concatenated and skippable frames followed;
    a cut or corrupt stream raises :class:`CorruptImage`."""

    def __init__(self, raw: Input):
        self.raw, self.frames = raw, ZstdFrames()
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            _Tracked(raw, self.frames), read_size=CHUNK, read_across_frames=True)

    def readinto(self, view) -> int:
        try:
            n = self.reader.readinto(view)
        except zstandard.ZstdError as e:
            raise CorruptImage(f"the image is corrupt: the zstd data is corrupt near byte "
                               f"{self.raw.consumed} ({e})") from None
        if not n and len(view) and not self.frames.complete():
            raise CorruptImage(f"the image is truncated or corrupt: the zstd stream ends "
                               f"early at byte {self.raw.consumed}")
        return n

    def read(self, n: int = CHUNK) -> bytes:
        buf = bytearray(n)
        k = self.readinto(buf)
        return bytes(buf) if k == n else bytes(memoryview(buf)[:k])


def decompressor(raw: Input, kind: str | None):
    """A reader of the image's bytes: ``raw`` itself, a :class:`ZstdStream`, or a
    :class:`Decompressed` over it (gzip, xz)."""
    if kind == detect.ZSTD:
        return ZstdStream(raw)
    return Decompressed(raw, kind) if kind else raw


def peek_decompressed(head: bytes, kind: str, limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` decompressed bytes of a compressed prefix (no errors for truncation)."""
    try:
        if kind == detect.ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(head),
                                                                read_across_frames=True)
            return reader.read(limit)
        return _new(kind).decompress(head, limit)
    except (zlib.error, lzma.LZMAError, zstandard.ZstdError) as e:
        raise CorruptImage(f"the image is corrupt: the {kind} data is corrupt at its start "
                           f"({e})") from None
