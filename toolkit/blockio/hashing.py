"""Hashing what is read or written: the whole-stream hash plus one short BLAKE3 digest per
region (:class:`RegionHasher`, its result a :class:`SourceDigest`), and
:class:`HashStage`, the pipeline's middle stage that feeds it
(:mod:`toolkit.blockio.pipeline`); for a copy read back behind its writer
(:mod:`toolkit.blockio.readback`), one short digest per piece copied, wherever it lies
(:class:`PieceHasher`, fed by :class:`PieceStage`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import blake3

from toolkit.blockio.pipeline import BAD, DATA, ZERO, Item
from toolkit.blockio.ranges import merge

ALGORITHMS = ("blake3", "sha256")
REGION_DIGEST = 16  # bytes of BLAKE3 per region
MAX_REGIONS = 1 << 20  # so region digests stay under 16 MiB whatever the disk size


def _blake3():
    """BLAKE3 using every core for large updates (the same digest as one thread)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def new_hasher(algorithm: str):
    if algorithm == "blake3":
        return _blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown hash algorithm {algorithm!r} (use one of {', '.join(ALGORITHMS)})")


@dataclass
class SourceDigest:
    """The hash of ``size`` bytes as read, and one BLAKE3 digest per region."""

    algorithm: str
    hexdigest: str
    size: int
    region_size: int
    regions: bytes


class RegionHasher:
    """The whole-stream hash plus one short BLAKE3 digest per region, fed in order."""

    def __init__(self, algorithm: str, size: int, region_size: int):
        self.algorithm, self.size, self.region_size = algorithm, size, region_size
        self.stream = new_hasher(algorithm)
        self.region = _blake3()
        self.regions = bytearray(REGION_DIGEST * -(-size // region_size)) if size else b""
        self.pos = 0

    def update(self, pos: int, view: memoryview) -> bool:
        """Add the bytes at ``pos``; False (and nothing added) unless ``pos`` continues."""
        if pos != self.pos:
            return False
        self.stream.update(view)
        off = 0
        while off < len(view):
            boundary = (self.pos // self.region_size + 1) * self.region_size
            take = min(len(view) - off, boundary - self.pos)
            self.region.update(view[off:off + take])
            off += take
            self.pos += take
            if self.pos == boundary or self.pos == self.size:
                i = (self.pos - 1) // self.region_size
                self.regions[i * REGION_DIGEST:(i + 1) * REGION_DIGEST] = \
                    self.region.digest(length=REGION_DIGEST)
                self.region = _blake3()
        return True

    def digest(self) -> SourceDigest | None:
        if self.pos != self.size:
            return None
        return SourceDigest(self.algorithm, self.stream.hexdigest(), self.size,
                            self.region_size, bytes(self.regions))


def finish_digest(h: RegionHasher, size: int) -> SourceDigest:
    """The digest of the first ``size`` bytes fed to ``h`` (whose size was an upper bound)."""
    if h.pos % h.region_size and h.pos < h.size:
        i = h.pos // h.region_size
        h.regions[i * REGION_DIGEST:(i + 1) * REGION_DIGEST] = h.region.digest(length=REGION_DIGEST)
    count = -(-size // h.region_size)
    return SourceDigest(h.algorithm, h.stream.hexdigest(), size, h.region_size,
                        bytes(h.regions[:count * REGION_DIGEST]))


def region_size_for(size: int, chunk: int) -> int:
    """A multiple of ``chunk`` giving at most :data:`MAX_REGIONS` regions."""
    chunks = -(-size // chunk) if size else 1
    return chunk * -(-chunks // MAX_REGIONS)


class HashStage:
    """The pipeline's middle stage: feeds data items to a :class:`RegionHasher` (if
    any) and, given ``zeros``, turns all-zero data items into ("zero", pos, n,
    buffer) items, so that neither the hash nor the zero check holds up the
    consumer. The reader's own "zero" items (needs ``zeros``) are hashed as zeros.

    ``valid``: the hash has followed the stream (no gap, no unreadable chunk).
    With ``sink`` the data and zero items end here (the pipeline takes their
    buffers back): the consumer only gets "bad" items and the end. Should the
    hashing fail, the pipeline hands the failure to the consumer.
    """

    def __init__(self, hasher: RegionHasher | None, zeros: bytes | None = None,
                 sink: bool = False):
        self.hasher, self.zeros, self.sink = hasher, zeros, sink
        self.valid = hasher is not None

    def __call__(self, item: Item) -> Item | None:
        kind, pos, n, buf = item
        if kind == DATA:
            if self.valid:
                self.valid = False  # until the update returns
                self.valid = self.hasher.update(pos, buf.view[:n])
            if self.sink:
                return None
            if self.zeros is not None and buf.is_zero(n, self.zeros):
                return (ZERO, pos, n, buf)
        elif kind == ZERO:  # not read: the source holds no data there
            zeros = memoryview(self.zeros)
            for off in range(0, n, len(zeros)):
                if self.valid:
                    self.valid = False
                    self.valid = self.hasher.update(pos + off, zeros[:min(len(zeros), n - off)])
            if self.sink:
                return None
        elif kind == BAD:
            self.valid = False
        return item


# --- pieces: a copy read back behind its writer ----------------------------------------------

def piece_digest(view) -> bytes:
    """The 16-byte BLAKE3 digest of one piece (one thread: it runs beside other work)."""
    return blake3.blake3(view).digest(length=REGION_DIGEST)


class Walk:
    """Pieces expected one after the other along ``ranges``: :meth:`follows` says whether a
    piece continues the walk (and moves on); :attr:`complete`: all of them were, in order."""

    def __init__(self, ranges: Iterable[tuple[int, int]]):
        self._left = iter(merge(ranges))
        self.broken = False
        self.pos: int | None = None
        self.end = 0
        self._next()

    def _next(self) -> None:
        r = next(self._left, None)
        self.pos, self.end = (None, 0) if r is None else (r[0], r[0] + r[1])

    def follows(self, pos: int, n: int) -> bool:
        if self.broken or self.pos is None or pos != self.pos or pos + n > self.end:
            self.broken = True
            return False
        self.pos += n
        if self.pos == self.end:
            self._next()
        return True

    @property
    def complete(self) -> bool:
        return not self.broken and self.pos is None


MISSING = b""  # :meth:`PieceHasher.take` for a piece it has no digest of


class PieceHasher:
    """What a copy knows of the source's pieces, for the read-back behind the writer to
    compare the target's with: one 16-byte BLAKE3 digest per piece that passed the
    pipeline (an item: any position, any length up to the chunk), or None for a piece of
    zeros (one not read, or found all-zero: the target must read back zeros there).

    With ``ranges`` (the disk, or the part of it copied), also the hash (``algorithm``) of
    all of them in order (:meth:`source_digest`: the value of ``b3sum`` of the disk), as
    long as the pieces follow them without a gap or an unreadable piece.

    Fed in the pipeline's middle thread (:class:`PieceStage`); the consumer takes each
    item's digest with :meth:`take`, in the order of the items."""

    def __init__(self, algorithm: str, ranges: Iterable[tuple[int, int]] | None = None):
        self.algorithm = algorithm
        self.stream = new_hasher(algorithm) if ranges is not None else None
        self.walk = Walk(ranges or [])
        self._digests: deque[tuple[int, int, bytes | None]] = deque()

    def _feed(self, pos: int, n: int, view) -> None:
        if self.stream is not None and self.walk.follows(pos, n):
            self.stream.update(view)

    def update(self, pos: int, view: memoryview) -> None:
        self._digests.append((pos, len(view), piece_digest(view)))
        self._feed(pos, len(view), view)

    def zero(self, pos: int, n: int, zeros: bytes) -> None:
        self._digests.append((pos, n, None))
        if self.stream is not None and self.walk.follows(pos, n):
            z = memoryview(zeros)
            for off in range(0, n, len(z)):
                self.stream.update(z[:min(len(z), n - off)])

    def bad(self, pos: int, n: int) -> None:
        self.walk.broken = True  # the stream has a gap: no hash of the whole

    def take(self, pos: int, n: int) -> bytes | None:
        """The digest of the item at ``pos`` (None: zeros), :data:`MISSING` if none."""
        while self._digests:
            p, m, d = self._digests.popleft()
            if (p, m) == (pos, n):
                return d
            if p > pos:
                self._digests.appendleft((p, m, d))
                break
        return MISSING

    def source_digest(self, size: int) -> SourceDigest | None:
        """The hash of the whole stream, when the pieces covered ``ranges`` in order."""
        if self.stream is None or not self.walk.complete:
            return None
        return SourceDigest(self.algorithm, self.stream.hexdigest(), size, 0, b"")


class PieceStage:
    """The pipeline's middle stage of a copy read back behind its writer: each item to a
    :class:`PieceHasher`; given ``zeros``, an all-zero data item becomes a ("zero", ...)
    item (not written: the target reads back zeros), as :class:`HashStage` does."""

    def __init__(self, hasher: PieceHasher, zeros: bytes | None = None):
        self.hasher, self.zeros = hasher, zeros

    def __call__(self, item: Item) -> Item | None:
        kind, pos, n, buf = item
        if kind == DATA:
            if self.zeros is not None and buf.is_zero(n, self.zeros):
                self.hasher.zero(pos, n, self.zeros)
                return (ZERO, pos, n, buf)
            self.hasher.update(pos, buf.view[:n])
        elif kind == ZERO:
            self.hasher.zero(pos, n, self.zeros)
        elif kind == BAD:
            self.hasher.bad(pos, n)
        return item
