"""Hashing what is read or written: the whole-stream hash plus one short BLAKE3 digest per
region (:class:`RegionHasher`, its result a :class:`SourceDigest`), and
:class:`HashStage`, the pipeline's middle stage that feeds it
(:mod:`toolkit.blockio.pipeline`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import blake3

from toolkit.blockio.pipeline import BAD, DATA, ZERO, Item

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
