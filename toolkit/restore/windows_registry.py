"""The storage drivers in an offline Windows SYSTEM hive, through
:mod:`toolkit.system.hivex` only: :func:`read_system` (the control sets, which one is
current, each wanted driver's ``Services`` key and ``StartOverride`` subkey in each),
:func:`plan_changes` (``Start`` 0 and ``StartOverride`` deleted, as edits and as the
report's records of old and new values), :func:`verify` (the changed hive read back).

``Select`` holds ``Current``, ``Default``, ``LastKnownGood`` and ``Failed`` as numbers:
``Current`` 1 is ``ControlSet001``, the set Windows boots with (``CurrentControlSet`` is
not stored: it is that link). ``Start``: 0 boot, 1 system, 2 automatic, 3 on demand,
4 disabled. ``StartOverride``: values named ``0``, ``1``... whose nonzero data keep the
driver from starting at boot whatever ``Start`` says (Windows 8 and later).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from toolkit.system import hivex
from toolkit.system.hivex import REG_DWORD, Delete, Key, SetValues, Value

CONTROL_SET = re.compile(r"controlset\d{3}", re.IGNORECASE)
OVERRIDE = "StartOverride"


@dataclass
class Driver:
    """One driver's key in one control set (names as the hive stores them)."""

    control_set: str
    name: str
    key: Key
    override: Key | None = None  # its StartOverride subkey, when it has one
    exact: dict[str, tuple[int, bytes]] | None = None  # its values byte for byte (hivexml)

    @property
    def path(self) -> str:
        return f"{self.control_set}\\Services\\{self.name}"

    @property
    def start(self) -> int | None:
        v = self.key.value("Start")
        return v.number if v is not None and v.type == REG_DWORD else None

    @property
    def boot(self) -> bool:
        """Windows starts it at boot: Start 0, no nonzero StartOverride value."""
        return self.start == 0 and (self.override is None or
                                    all(v.number == 0 for v in self.override.values or ()))


@dataclass
class System:
    control_sets: list[str]
    current: str | None
    current_from: str  # "Select\\Current", or why another set was taken
    drivers: list[Driver] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def boot_drivers(self) -> list[str]:
        """The image's boot controller: the wanted drivers starting at boot in the current
        control set."""
        return [d.name for d in self.drivers if d.control_set == self.current and d.boot]

    def has(self, name: str) -> bool:
        return any(d.name.casefold() == name.casefold() for d in self.drivers)

    def summary(self) -> dict:
        present: dict[str, list[str]] = {cs: [] for cs in self.control_sets}
        for d in self.drivers:
            present[d.control_set].append(f"{d.name} (Start {d.start}"
                                          f"{', StartOverride' if d.override else ''})")
        return {"control_sets": self.control_sets, "current_control_set": self.current,
                "current_from": self.current_from, "boot_drivers": self.boot_drivers(),
                "drivers": present, "problems": self.problems}


def _current(select: Key | None, sets: list[str]) -> tuple[str | None, str]:
    v = select.value("Current") if select is not None else None
    if v is not None and v.number:
        name = f"ControlSet{v.number:03d}"
        found = next((s for s in sets if s.casefold() == name.casefold()), None)
        if found:
            return found, "Select\\Current"
        why = f"Select\\Current names {name}, which is not there"
    else:
        why = "no Select\\Current" if select is None or select.problem is None else \
            f"Select unreadable ({select.problem})"
    pick = next((s for s in sets if s.casefold() == "controlset001"), sets[0] if sets else None)
    return pick, f"{why}: {pick} taken"


def read_system(hive: str, names: Iterable[str]) -> System:
    """The control sets of ``hive`` and, in each, the drivers among ``names`` (matched
    case-insensitively) that its ``Services`` key has. HiveError: not a hive hivex reads."""
    root = hivex.subkeys(hive, "\\") or []
    sets = sorted(n for n in root if CONTROL_SET.fullmatch(n))
    select = next((n for n in root if n.casefold() == "select"), None)
    keys = hivex.read(hive, ([select] if select else []) + [f"{cs}\\Services" for cs in sets])
    current, why = _current(keys.get(select) if select else None, sets)
    system = System(sets, current, why,
                    problems=[f"{k.path}: {k.problem}" for k in keys.values() if k.problem])
    wanted = {n.casefold() for n in names}
    found = [(cs, n) for cs in sets for n in keys[f"{cs}\\Services"].subkeys or ()
             if n.casefold() in wanted]
    dkeys = hivex.read(hive, [f"{cs}\\Services\\{n}" for cs, n in found])
    subs = {p: f"{p}\\{s}" for p, k in dkeys.items() if (s := k.subkey(OVERRIDE))}
    okeys = hivex.read(hive, subs.values())
    exact = hivex.exact_values(hive, dkeys) if dkeys else {}
    for cs, n in found:
        p = f"{cs}\\Services\\{n}"
        system.drivers.append(Driver(cs, n, dkeys[p], okeys.get(subs.get(p, "")), exact.get(p)))
    return system


def _record(d: Driver, key: str, value: str | None, old, new) -> dict:
    return {"control_set": d.control_set, "key": key, "value": value, "old": old, "new": new}


def _start_edit(d: Driver) -> tuple[SetValues, dict] | str | None:
    """The edit that makes ``d`` boot-start and its record; None: it is already; a string:
    why it is not changed."""
    start = d.key.value("Start")
    exact = d.exact
    if exact is None or {v.name for v in d.key.values or ()} != exact.keys():
        return f"{d.path}: its values could not be read byte for byte: not changed"
    if start is not None and exact[start.name][0] != REG_DWORD:
        return f"{d.path}: Start is not a REG_DWORD (type {exact[start.name][0]}): not changed"
    if start is not None and len(exact[start.name][1]) != 4:
        return f"{d.path}: Start is a REG_DWORD of {len(exact[start.name][1])} bytes, not 4: " \
            "not changed"
    if start is not None and start.number == 0:
        return None
    # every other value written back as the hive holds it, byte for byte (hivexsh's lsval
    # shows an 8-byte REG_DWORD as its first 4, a string up to its first NUL)
    values = [Value(v.name, REG_DWORD, 0) if v is start else Value(v.name, *exact[v.name])
              for v in d.key.values or ()]
    if start is None:
        values.append(Value("Start", REG_DWORD, 0))
    try:
        hivex.setval_lines(values)
    except ValueError as e:
        return f"{d.path}: {e}: not changed"
    return (SetValues(d.path, tuple(values)),
            _record(d, f"Services\\{d.name}", "Start", start.number if start else None, 0))


def plan_changes(system: System) -> tuple[list[SetValues | Delete], list[dict], list[str]]:
    """The edits that make every driver of ``system`` start at boot in every control set,
    the records of the values they change (``new`` None: deleted), and notes on drivers
    left as they are (a key that could not be read or written exactly)."""
    edits: list[SetValues | Delete] = []
    records: list[dict] = []
    notes: list[str] = []
    for d in system.drivers:
        if d.key.values is None or (d.override is not None and d.override.values is None):
            why = d.key.problem or (d.override.problem if d.override else None)
            notes.append(f"{d.path} could not be read ({why}): not changed")
            continue
        start = _start_edit(d)
        if isinstance(start, str):
            notes.append(start)
            continue
        if start is not None:
            edits.append(start[0])
            records.append(start[1])
        if d.override is not None:
            edits.append(Delete(d.override.path))
            key = f"Services\\{d.name}\\{d.override.path.rsplit(chr(92), 1)[-1]}"
            records += [_record(d, key, v.name, v.shown(), None) for v in d.override.values] \
                or [_record(d, key, None, "a key with no values", None)]
    return edits, records, notes


def _others(values: Sequence[Value] | None) -> list[Value]:
    return [v for v in values or () if v.name.casefold() != "start"]


def _others_exact(values: dict[str, tuple[int, bytes]]) -> dict[str, tuple[int, bytes]]:
    return {k: v for k, v in values.items() if k.casefold() != "start"}


def verify(before: System, after: System, edits: Sequence[SetValues | Delete],
           new_hive: str) -> list[str]:
    """What is wrong with the changed hive ``after`` (read from ``new_hive``), given the
    hive ``before`` and the ``edits`` made; empty when it is as planned."""
    if [s.casefold() for s in after.control_sets] != [s.casefold() for s in before.control_sets]:
        return [f"control sets {after.control_sets}, were {before.control_sets}"]
    was = {(d.control_set.casefold(), d.name.casefold()): d for d in before.drivers}
    now = {(d.control_set.casefold(), d.name.casefold()): d for d in after.drivers}
    if was.keys() != now.keys():
        return ["the drivers present changed: " + ", ".join(
            f"{cs}\\{n}" for cs, n in sorted(was.keys() ^ now.keys()))]
    started = {e.path.casefold() for e in edits if isinstance(e, SetValues)}
    deleted = {e.path.casefold() for e in edits if isinstance(e, Delete)}
    problems = []
    for k, b in was.items():
        a = now[k]
        if b.path.casefold() in started:
            if a.start != 0 or hivex.get(new_hive, a.path, "Start") != "0":
                problems.append(f"{a.path}: Start is {a.start}, not 0")
        elif a.start != b.start:
            problems.append(f"{a.path}: Start changed from {b.start} to {a.start}")
        if _others(a.key.values) != _others(b.key.values) or a.exact is None or \
                b.exact is None or _others_exact(a.exact) != _others_exact(b.exact):
            problems.append(f"{a.path}: values other than Start changed")
        gone = b.override is not None and b.override.path.casefold() in deleted
        if gone and a.override is not None:
            problems.append(f"{a.path}: {OVERRIDE} is still there")
        if not gone and (a.override is None) != (b.override is None):
            problems.append(f"{a.path}: {OVERRIDE} changed")
    return problems
