"""Byte streams over a :class:`~toolkit.restore.source.Source`: hashing and decompression.

:class:`Input` hands out the source's bytes (after a few bytes already read for
detection) and hashes them (SHA-256, the value ``sha256sum IMAGE`` prints)
as they pass. :func:`decompressor` wraps it in a reader that yields the
decompressed bytes: gzip and xz with the standard library, zstd with the
``zstandard`` package; concatenated members/streams/frames are followed. An
input that ends inside a member is an error (:class:`CorruptImage`), as is
corrupt data, so a truncated download can never pass for a complete image.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import zlib

import zstandard

from toolkit.restore import detect
from toolkit.restore.source import CHUNK, Source


class CorruptImage(ValueError):
    """The image's data is invalid or ends early."""


class Input:
    """The raw bytes of the source, from the start; ``sha256`` of everything read so far."""

    def __init__(self, source: Source, prefix: bytes = b""):
        self.source, self.prefix = source, prefix
        self.sha256 = hashlib.sha256()
        self.consumed = 0

    def read(self, n: int = CHUNK) -> bytes:
        if self.prefix:
            data, self.prefix = self.prefix[:n], self.prefix[n:]
        else:
            data = self.source.read(n)
        self.sha256.update(data)
        self.consumed += len(data)
        return data


def _new(kind: str):
    if kind == detect.GZIP:
        return zlib.decompressobj(wbits=31)
    if kind == detect.XZ:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if kind == detect.ZSTD:
        return zstandard.ZstdDecompressor().decompressobj()
    raise ValueError(f"unknown compression {kind}")


class Decompressed:
    """``read(n)``: up to ``n`` decompressed bytes, ``b""`` at the (complete) end.

    Memory stays bounded whatever the compression ratio (a disk image's zeros
    compress thousands of times): gzip and xz are asked for at most ``n``
    bytes; zstd's decompressor has no such limit, so it is fed input in pieces
    sized from the ratio seen so far (1 KiB at the worst: at most 32 MiB out).
    """

    def __init__(self, raw: Input, kind: str):
        self.raw, self.kind = raw, kind
        self.obj = _new(kind)
        self.buf = b""  # input not yet given to the decompressor, from self.pos on
        self.pos = 0
        self.done = False
        self.pending = memoryview(b"")  # output not yet handed out (zstd gives more than asked)
        self.offset = 0
        self.ratio = 4.0

    def _input(self, n: int) -> bytes:
        if self.pos >= len(self.buf):
            self.buf, self.pos = self.raw.read(CHUNK), 0
            if not self.buf:
                raise CorruptImage(f"the {self.kind} stream ends early (truncated image?) "
                                   f"after {self.raw.consumed} bytes")
        if self.kind != detect.ZSTD:
            data, self.buf = self.buf, b""
            return data
        take = int(min(CHUNK, max(1024, n / self.ratio)))
        data = self.buf[self.pos:self.pos + take]  # copies only what is taken
        self.pos += len(data)
        return data

    def _next_member(self) -> bool:
        """After the end of a member: start the next one, or report the end of the input."""
        data = self.obj.unused_data + self.buf[self.pos:]
        self.buf, self.pos = b"", 0
        while True:
            if self.kind == detect.XZ:
                data = data.lstrip(b"\0")  # stream padding
            if data:
                break
            data = self.raw.read(CHUNK)
            if not data:
                return False
        self.obj, self.buf, self.pos = _new(self.kind), data, 0
        return True

    def _step(self, n: int) -> bytes:
        try:
            if self.kind == detect.GZIP:
                out = b"" if self.buf else self.obj.decompress(b"", n)  # output still held
                if out:
                    return out
                out = self.obj.decompress(self.buf or self._input(n), n)
                self.buf = b"" if self.obj.eof else self.obj.unconsumed_tail
                return out
            if self.kind == detect.XZ:
                data = self._input(n) if self.obj.needs_input else b""
                return self.obj.decompress(data, n)
            data = self._input(n)
            out = self.obj.decompress(data)
            self.ratio = max(1.0, 0.5 * self.ratio + 0.5 * len(out) / len(data))
            return out
        except (zlib.error, lzma.LZMAError, zstandard.ZstdError) as e:
            raise CorruptImage(f"the {self.kind} data is corrupt near input byte "
                               f"{self.raw.consumed}: {e}") from None

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


def decompressor(raw: Input, kind: str | None):
    """A reader of the image's bytes: ``raw`` itself, or a :class:`Decompressed` over it."""
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
        raise CorruptImage(f"the {kind} data is corrupt at its start: {e}") from None
