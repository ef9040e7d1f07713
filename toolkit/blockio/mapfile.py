"""GNU ddrescue mapfiles: which parts of a copy are done, failed or still to do.

The format (``info ddrescue``, "Mapfile structure"): comment lines starting with
``#``, a status line ``0xPOS  STATUS  PASS``, then one line per block,
``0xPOS  0xSIZE  STATUS``, the blocks contiguous and non-overlapping. Block
statuses: ``?`` non-tried, ``*`` non-trimmed (a failed read of a large block),
``/`` non-scraped (a failed read of a small block), ``-`` bad sector(s),
``+`` finished. ``ddrescuelog`` and ``ddrescue`` read the files written here,
and this module reads theirs.

:class:`Mapfile` always tiles ``[0, size)`` exactly, adjacent blocks of the
same status merged. ``# rtk-KEY: VALUE`` comment lines carry metadata (which
source and target the map belongs to, the source's fingerprint, when it was copied and
verified: :mod:`toolkit.copy.binding`), kept in the order set; ddrescue ignores them.
When there are any, a last ``# rtk-check: blake3 HEX`` line holds the BLAKE3 of those
lines and the block lines (:meth:`Mapfile.check_text`), keyed with nothing secret: it
tells an accidental edit or a naive rewrite of a line apart (:attr:`Mapfile.intact`), not
a determined forger, who can compute it too.
"""

from __future__ import annotations

import errno
import os
import stat
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

import blake3

from toolkit.atomic import write_atomic

NON_TRIED, NON_TRIMMED, NON_SCRAPED, BAD, FINISHED = "?", "*", "/", "-", "+"
BLOCK_STATUSES = (NON_TRIED, NON_TRIMMED, NON_SCRAPED, BAD, FINISHED)
# Status line characters (the phase the copy is in).
PHASE_COPYING, PHASE_TRIMMING, PHASE_SCRAPING, PHASE_FINISHED = "?", "*", "/", "+"
PHASE_STATUSES = ("?", "*", "/", "-", "F", "G", "+")
CHECK = "check"  # the rtk line that checks the others


class MapfileError(ValueError):
    pass


def _key(block: tuple[int, int, str]) -> int:
    return block[0]


class Mapfile:
    """The state of a copy of ``size`` bytes, as blocks ``(pos, size, status)``."""

    def __init__(self, size: int, status: str = NON_TRIED):
        if size < 0:
            raise MapfileError("negative size")
        self.size = size
        self.blocks: list[tuple[int, int, str]] = [(0, size, status)] if size else []
        self.current_pos = 0
        self.phase = PHASE_COPYING
        self.current_pass = 1
        self.meta: dict[str, str] = {}
        self.recorded_check: str | None = None  # the rtk-check line read (None: none)

    # --- queries -------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapfile) and (self.size, self.blocks) == (other.size,
                                                                           other.blocks)

    def status_at(self, pos: int) -> str:
        i = bisect_right(self.blocks, pos, key=_key) - 1
        p, s, st = self.blocks[i]
        if not p <= pos < p + s:
            raise IndexError(pos)
        return st

    def ranges(self, *statuses: str) -> Iterator[tuple[int, int]]:
        """``(pos, size)`` of every block with one of ``statuses``, in order."""
        for p, s, st in self.blocks:
            if st in statuses:
                yield p, s

    def bytes_with(self, *statuses: str) -> int:
        return sum(s for _p, s, st in self.blocks if st in statuses)

    @property
    def finished(self) -> bool:
        return self.bytes_with(FINISHED, BAD) == self.size

    # --- updates -------------------------------------------------------------

    def set(self, pos: int, size: int, status: str) -> None:
        """Mark ``[pos, pos+size)`` with ``status``, splitting and merging blocks."""
        if status not in BLOCK_STATUSES:
            raise MapfileError(f"bad block status {status!r}")
        if size <= 0:
            return
        end = pos + size
        if pos < 0 or end > self.size:
            raise MapfileError(f"range {pos}+{size} outside [0, {self.size})")
        b = self.blocks
        i = bisect_right(b, pos, key=_key) - 1  # the block holding pos
        j = bisect_left(b, end, key=_key)  # blocks i..j-1 overlap the range
        repl = []
        if i > 0:
            repl.append(b[i - 1])
        first, last = b[i], b[j - 1]
        if first[0] < pos:
            repl.append((first[0], pos - first[0], first[2]))
        repl.append((pos, size, status))
        last_end = last[0] + last[1]
        if last_end > end:
            repl.append((end, last_end - end, last[2]))
        if j < len(b):
            repl.append(b[j])
        merged: list[tuple[int, int, str]] = []
        for blk in repl:
            if merged and merged[-1][2] == blk[2]:
                p, s, st = merged[-1]
                merged[-1] = (p, s + blk[1], st)
            else:
                merged.append(blk)
        b[max(i - 1, 0):min(j + 1, len(b))] = merged

    def replace_status(self, old: str, new: str) -> None:
        for p, s in list(self.ranges(old)):
            self.set(p, s, new)

    # --- text ----------------------------------------------------------------

    def _meta_lines(self) -> list[str]:
        # in the order set (the identity lines first); one line each, whatever the value
        return [f"rtk-{k}: {' '.join(str(v).splitlines()).strip()}"
                for k, v in self.meta.items() if k != CHECK]

    def check_text(self) -> str:
        """``blake3 HEX`` of the rtk lines and the block lines, as written (ASCII)."""
        text = "\n".join(["rtk-check 1", *self._meta_lines(),
                          *(f"0x{p:08X}  0x{s:08X}  {st}" for p, s, st in self.blocks)])
        return f"blake3 {blake3.blake3(text.encode('ascii', errors='replace')).hexdigest()}"

    @property
    def intact(self) -> bool | None:
        """Whether the rtk-check line read matches the other lines; None: there was none."""
        if self.recorded_check is None:
            return None
        return self.recorded_check == self.check_text()

    def format(self, heading: list[str] | None = None) -> str:
        lines = [f"# {h}" for h in heading or []]
        lines += [f"# {x}" for x in self._meta_lines()]
        if self.meta:
            lines.append(f"# rtk-{CHECK}: {self.check_text()}")
        lines.append("# current_pos  current_status  current_pass")
        lines.append(f"0x{self.current_pos:08X}     {self.phase}               "
                     f"{self.current_pass}")
        lines.append("#      pos        size  status")
        lines += [f"0x{p:08X}  0x{s:08X}  {st}" for p, s, st in self.blocks]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Mapfile:
        """Read a mapfile; it must cover ``[0, end)`` without gaps or overlaps."""
        meta: dict[str, str] = {}
        check: str | None = None
        rows: list[list[str]] = []
        for n, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if stripped.startswith("# rtk-") and ":" in stripped:
                k, v = stripped[6:].split(":", 1)
                if k.strip() == CHECK:
                    check = v.strip()
                else:
                    meta[k.strip()] = v.strip()
            line = _strip_comment(raw)
            if line:
                rows.append([str(n)] + line.split())
        if not rows:
            raise MapfileError("it is empty: no status line 'POS STATUS [PASS]'")
        status_row, block_rows = rows[0], rows[1:]
        m = cls(0)
        m.meta, m.recorded_check = meta, check
        if len(status_row) not in (3, 4) or status_row[2] not in PHASE_STATUSES:
            raise MapfileError(f"line {status_row[0]}: expected the status line "
                               f"'POS STATUS [PASS]' with a STATUS of "
                               f"{' '.join(PHASE_STATUSES)}")
        m.current_pos = _int(status_row[1], status_row[0])
        m.phase = status_row[2]
        m.current_pass = _int(status_row[3], status_row[0]) if len(status_row) == 4 else 1
        pos = 0
        for row in block_rows:
            if len(row) != 4 or row[3] not in BLOCK_STATUSES:
                raise MapfileError(f"line {row[0]}: expected 'POS SIZE STATUS'")
            p, s = _int(row[1], row[0]), _int(row[2], row[0])
            if p != pos:
                raise MapfileError(f"line {row[0]}: block at {p:#x}, expected {pos:#x} "
                                   "(blocks must be contiguous from 0)")
            if s <= 0:
                raise MapfileError(f"line {row[0]}: block size must be positive")
            if m.blocks and m.blocks[-1][2] == row[3]:
                q, t, st = m.blocks[-1]
                m.blocks[-1] = (q, t + s, st)
            else:
                m.blocks.append((p, s, row[3]))
            pos = p + s
        m.size = pos
        return m

    @classmethod
    def load(cls, path: str) -> Mapfile:
        """Read the mapfile at ``path``. MapfileError, its message starting "the mapfile
        PATH" (``reason``: the rest), for anything else than a regular file that parses (a
        directory, a device: it is never read), and for an error reading it."""
        def error(why: str) -> MapfileError:
            e = MapfileError(f"the mapfile {path} {why}")
            e.reason = why  # without "the mapfile PATH", for callers that name it themselves
            return e
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                raise error("is a directory: give the path of a file")
            if not stat.S_ISREG(st.st_mode):
                raise error("is not a regular file (a device, a FIFO?): give the path of a "
                            "file")
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError as e:
            why = ("permission denied" if e.errno in (errno.EACCES, errno.EPERM) else
                   e.strerror or type(e).__name__)
            raise error(f"cannot be read: {why}") from None
        try:
            return cls.parse(text)
        except MapfileError as e:
            raise error(f"is not a GNU ddrescue mapfile: {e}") from None

    def save(self, path: str, heading: list[str] | None = None) -> None:
        """Write atomically (:func:`toolkit.atomic.write_atomic`): a temporary file, fsync,
        rename over, fsync the directory."""
        write_atomic(path, self.format(heading).encode("ascii", errors="replace"))


def _strip_comment(line: str) -> str:
    """'#' at the start of a line or after whitespace starts a comment."""
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def _int(token: str, lineno: str) -> int:
    """An integer in C++ syntax: 0x1F hexadecimal, 017 octal, 15 decimal."""
    try:
        if token.lower().startswith("0x"):
            value = int(token, 16)
        elif len(token) > 1 and token.startswith("0"):
            value = int(token, 8)
        else:
            value = int(token, 10)
    except ValueError:
        raise MapfileError(f"line {lineno}: bad number {token!r}") from None
    if value < 0:
        raise MapfileError(f"line {lineno}: negative number")
    return value
