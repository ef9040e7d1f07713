"""Windows registry hive files, through Debian's hivex tools (package ``libhivex-bin``):
``hivexsh`` scripted on its standard input and ``hivexget``, wrapped once here.

- :func:`subkeys`, :func:`read`: one ``hivexsh`` script reads several keys at once (``cd``,
  ``lsval``, ``ls``); :func:`get`: one value as ``hivexget`` prints it.
- :func:`edit`: ``hivexsh -w`` with ``cd`` / ``setval`` / ``del``, then ``commit NEWFILE``:
  the hive itself is never written, the caller puts the new file in place.
- :func:`header`: the base block's sequence numbers (a hive saved cleanly has them equal;
  otherwise its transaction logs hold changes Windows replays at boot).

A file hivex cannot open (garbage, truncated, not a hive) raises :class:`HiveError`.

``setval`` replaces *all* the values of a key, so a key is changed by writing every value
back: numbers and binary data byte for byte (``hex:TYPE:BYTES``), strings as the text
``lsval`` shows (UTF-16LE with one terminating NUL: hivex shows a string up to its first
NUL). What ``lsval`` prints, from a real run (a key with a string, an expandable string,
a DWORD and a REG_MULTI_SZ)::

    "Start"=dword:00000003
    "ImagePath"=str(2):"System32\\\\drivers\\\\storahci.sys"
    "Group"="SCSI Miniport"
    "Owners"=hex(7):73,00,74,00,6f,00,72,00,00,00,00,00

(``"`` and ``\\`` escaped with ``\\``; ``"@"`` is the default value.) hivexsh prints a
REG_DWORD_BIG_ENDIAN (type 5) as ``dword:`` too: it is read, and would be written back,
as a REG_DWORD of the same number. A key whose
output does not parse this way (a string with a line break in it) is reported as
unreadable (:attr:`Key.problem`), never guessed at.
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.etree import ElementTree

from toolkit.system import tools

HIVEXSH = "hivexsh"
HIVEXGET = "hivexget"
REG_SZ, REG_EXPAND_SZ, REG_DWORD, REG_LINK = 1, 2, 4, 6
LINE_MAX = 8190  # hivexsh reads script lines into an 8192-byte buffer
_Q = r'"((?:[^"\\]|\\.)*)"'
_VALUE = re.compile(_Q + r"=(.*)")
_DWORD = re.compile(r"dword:([0-9a-f]{8})")
_HEX = re.compile(r"hex\((\d+)\):([0-9a-f]{2}(?:,[0-9a-f]{2})*)?")
_STR = re.compile(r"(?:str\((\d+)\):)?" + _Q)
_UNESCAPE = re.compile(r"\\(.)")


class HiveError(Exception):
    """hivex cannot open the file as a registry hive (garbage, truncated, not a hive)."""


@dataclass(frozen=True)
class Value:
    """One registry value: ``name`` ("" for the default value), ``type`` (REG_SZ 1,
    REG_EXPAND_SZ 2, REG_DWORD 4...), ``data``: the text of a string, the number of a
    DWORD, the bytes of anything else."""

    name: str
    type: int
    data: str | int | bytes

    @property
    def number(self) -> int | None:
        return self.data if isinstance(self.data, int) else None

    def raw(self) -> bytes:
        if isinstance(self.data, int):
            return self.data.to_bytes(4, "little")
        if isinstance(self.data, str):
            return self.data.encode("utf-16-le") + b"\0\0"
        return self.data

    def shown(self) -> str | int:
        """The value for a report: text, number, or hex bytes."""
        return self.data.hex() if isinstance(self.data, bytes) else self.data


@dataclass
class Key:
    """A key as read: its path (as asked), its values and subkey names; ``problem``:
    why they could not be read (then both are None)."""

    path: str
    values: list[Value] | None = None
    subkeys: list[str] | None = None
    problem: str | None = None

    def value(self, name: str) -> Value | None:
        return next((v for v in self.values or () if v.name.casefold() == name.casefold()),
                    None)

    def subkey(self, name: str) -> str | None:
        """The stored name of subkey ``name`` (matched case-insensitively), or None."""
        return next((k for k in self.subkeys or () if k.casefold() == name.casefold()), None)


def _lines(text: str) -> list[str]:
    """hivexsh's output lines: split at newlines only (a string value may hold a carriage
    return or another line separator that str.splitlines would split at)."""
    return [line for line in text.split("\n") if line]


def _unescape(s: str) -> str:
    return _UNESCAPE.sub(r"\1", s)


def parse_value(line: str) -> Value:
    """One ``lsval`` line -> :class:`Value`; ValueError when it is not one."""
    m = _VALUE.fullmatch(line)
    if not m:
        raise ValueError(f"not a value line: {line[:80]!r}")
    name, rest = _unescape(m.group(1)), m.group(2)
    name = "" if name == "@" else name
    if d := _DWORD.fullmatch(rest):
        return Value(name, REG_DWORD, int(d.group(1), 16))
    if h := _HEX.fullmatch(rest):
        return Value(name, int(h.group(1)), bytes.fromhex((h.group(2) or "").replace(",", "")))
    if s := _STR.fullmatch(rest):
        return Value(name, int(s.group(1) or REG_SZ), _unescape(s.group(2)))
    raise ValueError(f"value {name!r} is not in a form hivexsh writes: {rest[:80]!r}")


def parse_values(text: str) -> list[Value]:
    return [parse_value(line) for line in _lines(text)]


def _run(hive: str, lines: Sequence[str], *, write: bool = False, timeout: float = 300) -> str:
    """hivexsh on ``hive`` with ``lines`` as its script; its output, as bytes decoded as
    UTF-8 (no newline translation: a carriage return in a string stays one).
    HiveError when hivex cannot open the file, ToolError when a command fails (the script
    stops there), ValueError when the output is not UTF-8."""
    p = tools.run([HIVEXSH, *(["-w"] if write else []), hive], text=False,
                  input=("\n".join(lines) + "\n").encode(), check=False, timeout=timeout)
    err = p.stderr.decode(errors="replace")
    if p.returncode and "failed to open hive file" in err:
        why = err.split("failed to open hive file:", 1)[1].strip().splitlines()[0]
        raise HiveError(f"not a registry hive hivex can read ({why.rsplit(': ', 1)[-1]})")
    if p.returncode:
        raise tools.failure(p.args, p.returncode, err,
                            stdout=p.stdout.decode(errors="replace"))
    try:
        return p.stdout.decode()
    except UnicodeDecodeError as e:
        raise ValueError(f"hivexsh's output is not UTF-8 ({e.reason})") from None


def _cd(path: str) -> str:
    return "cd \\" + path.strip("\\")


def subkeys(hive: str, path: str) -> list[str] | None:
    """The subkey names of ``path`` (``\\ControlSet001``; ``\\`` the root), or None when
    the key does not exist."""
    try:
        return _lines(_run(hive, [_cd(path), "ls"]))
    except tools.ToolError as e:
        if "not found" in e.stderr:
            return None
        raise


def _parse_keys(paths: Sequence[str], out: str) -> list[Key]:
    """``hivexsh`` output of ``cd P``, ``cd``, ``lsval``, ``cd``, ``ls`` for each path:
    each ``cd`` without argument prints the key's path (a line starting with ``\\``,
    which neither a value line nor a key name can)."""
    chunks: list[tuple[str, list[str]]] = []
    for line in _lines(out):
        if line.startswith("\\"):
            chunks.append((line, []))
        elif chunks:
            chunks[-1][1].append(line)
        else:
            raise ValueError("output before the first key")
    if len(chunks) != 2 * len(paths):
        raise ValueError(f"{len(chunks)} parts for {len(paths)} keys")
    keys = []
    for i, path in enumerate(paths):
        (shown, vals), (again, subs) = chunks[2 * i], chunks[2 * i + 1]
        if shown != again or shown.casefold() != ("\\" + path.strip("\\")).casefold():
            raise ValueError(f"the output of {path} is not where it should be")
        keys.append(Key(path, parse_values("\n".join(vals)), subs))
    return keys


def read(hive: str, paths: Iterable[str]) -> dict[str, Key]:
    """The values and subkeys of each key in ``paths`` (keys known to exist), read in one
    script; when that fails, each key alone, and a key that cannot be read (or parsed) has
    its :attr:`Key.problem`. HiveError: the file is no hive hivex can read."""
    paths = list(dict.fromkeys(paths))
    if not paths:
        return {}
    script = [line for p in paths for line in (_cd(p), "cd", "lsval", "cd", "ls")]
    try:
        return {k.path: k for k in _parse_keys(paths, _run(hive, script))}
    except tools.ToolNotInstalled:
        raise
    except (tools.ToolError, ValueError) as e:
        if len(paths) <= 1:
            why = (e.last_line or str(e)) if isinstance(e, tools.ToolError) else str(e)
            return {p: Key(p, problem=why) for p in paths}
    return {p: read(hive, [p])[p] for p in paths}


HIVEXML = "hivexml"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
HBIN_START = 0x1000  # cell offsets in a hive count from the first hbin
BIG_DATA = 16344  # longer data is kept in a "db" list of cells: not read here


def _vk_data(hive: bytes, cell: int) -> tuple[int, bytes] | None:
    """(type, data) of the value record whose cell begins at file offset ``cell``, from
    the hive's own bytes (the vk record: "vk", name length, data length (its high bit:
    data kept in the offset field), data offset, type); None when it is not one, or its
    data is not in one cell."""
    vk = cell + 4
    if hive[vk:vk + 2] != b"vk" or len(hive) < vk + 20:
        return None
    length, offset, kind = struct.unpack_from("<III", hive, vk + 4)
    if length & 0x80000000:
        length &= 0x7FFFFFFF
        return (kind, hive[vk + 8:vk + 8 + length]) if length <= 4 else None
    start = HBIN_START + offset + 4
    if length > BIG_DATA or start + length > len(hive):
        return None
    return kind, hive[start:start + length]


def exact_values(hive: str, paths: Iterable[str]) -> dict[str, dict[str, tuple[int, bytes]]
                                                          | None]:
    """The values of each key in ``paths`` byte for byte: name -> (type, data), what
    ``lsval`` does not always show (a REG_DWORD of other than 4 bytes, a string with a NUL
    inside or none at its end, a REG_DWORD_BIG_ENDIAN). ``hivexml`` says where each value
    record lies in the file; the record and its data are read from there. A key absent,
    or with a value that cannot be read so, is None."""
    wanted = {("\\" + p.strip("\\")).casefold(): p for p in paths}
    values: dict[str, dict[str, tuple[int, bytes]]] = {}
    bad: set[str] = set()
    if not wanted:
        return {}
    with open(hive, "rb") as f:
        data = f.read()
    p = tools.run([HIVEXML, hive], check=False, text=False, timeout=600)
    if p.returncode:
        return dict.fromkeys(wanted.values())
    # hivexml prints names and text as they are: a control character (a "TCP\x01IP"
    # anywhere in the hive) is no XML. Made U+FFFD: only the records' offsets are used, and
    # a name so changed no longer matches lsval's, which leaves that key alone.
    text = _NOT_XML.sub("\ufffd", p.stdout.decode(errors="replace"))
    stack: list[str] = []
    value: str | None = None
    try:
        for event, el in ElementTree.iterparse(io.StringIO(text), ("start", "end")):
            if el.tag == "node" and event == "start":
                stack.append("" if el.get("root") else el.get("name", ""))
                if (path := wanted.get(("\\" + "\\".join(stack[1:])).casefold())) is not None:
                    values.setdefault(path, {})
            elif el.tag == "node":
                stack.pop()
                el.clear()
            elif el.tag == "value" and event == "start":
                value = el.get("key", "")
            elif el.tag == "value":
                value = None
                el.clear()
            elif el.tag == "byte_run" and event == "start" and value is not None:
                path = wanted.get(("\\" + "\\".join(stack[1:])).casefold())
                if path is not None:
                    got = _vk_data(data, int(el.get("file_offset", "-1")))
                    if got is None or value in values[path]:
                        bad.add(path)
                    else:
                        values[path][value] = got
                value = None  # the first run is the record; the others its data
    except (ElementTree.ParseError, ValueError, IndexError):
        return dict.fromkeys(wanted.values())
    return {p: None if p in bad else values.get(p) for p in wanted.values()}


def get(hive: str, path: str, name: str) -> str | None:
    """Value ``name`` of key ``path`` as ``hivexget`` prints it (a DWORD in decimal, a
    string as text), or None when the key or the value does not exist."""
    p = tools.run([HIVEXGET, hive, "\\" + path.strip("\\"), name], check=False, timeout=300)
    if p.returncode and "failed to open hive file" in p.stderr:
        raise HiveError(f"{hive}: not a registry hive hivex can read")
    return p.stdout.rstrip("\n") if p.returncode == 0 else None


@dataclass(frozen=True)
class SetValues:
    """Replace the values of key ``path`` with ``values`` (all of them: hivexsh's setval)."""

    path: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Delete:
    """Delete key ``path`` and everything below it."""

    path: str


def setval_lines(values: Sequence[Value]) -> list[str]:
    """The ``setval`` lines that write ``values``; ValueError when hivexsh cannot."""
    lines = [f"setval {len(values)}"]
    for v in values:
        if "\n" in v.name or v.name == "@":
            raise ValueError(f"value name {v.name!r} cannot be written by hivexsh")
        data = f"hex:{v.type}:{v.raw().hex()}"
        if len(data) > LINE_MAX or len(v.name) > LINE_MAX:
            raise ValueError(f"value {v.name!r} is too long for a hivexsh script line")
        lines += [v.name or "@", data]
    return lines


def edit(hive: str, out: str, edits: Sequence[SetValues | Delete]) -> None:
    """Apply ``edits`` to ``hive`` and write the result to the new file ``out`` (fsynced);
    ``hive`` itself is not written. ValueError before anything runs when an edit cannot be
    expressed in a hivexsh script."""
    lines: list[str] = []
    for e in edits:
        lines.append(_cd(e.path))
        lines += setval_lines(e.values) if isinstance(e, SetValues) else ["del"]
    if "\n" in out or os.path.exists(out):
        raise ValueError(f"{out}: not a new file")
    _run(hive, [*lines, f"commit {out}"], write=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def header(path: str) -> tuple[int, int] | None:
    """The two sequence numbers of the hive's base block, or None when the file does not
    begin with ``regf``. Equal: the hive was saved cleanly."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"regf":
        return None
    return int.from_bytes(head[4:8], "little"), int.from_bytes(head[8:12], "little")
