"""Consent: what a person (or the boot parameters) named a write target with, and
whether it names the target (:func:`consent_problem`), part of the write gate's decision
(:mod:`toolkit.disks.gate`).

The front ends collect it: ``rtk copy/restore --target-id``, the serial typed at the
prompt, the menu's typed confirmation (:func:`menu_word`), ``rtk.consent=``; a Python
caller's consent is the path it named the target by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from toolkit.disks.endpoint import Endpoint
from toolkit.disks.identity import identity_of, wwn_key

TARGET_ID, TYPED, MENU, UNATTENDED, PROGRAM = (
    "--target-id", "typed at the prompt", "typed in the menu", "rtk.consent", "the program")


@dataclass(frozen=True)
class Consent:
    """What a person (or the boot parameters) named the target with, as the caller
    collected it. ``how`` says where it came from, which decides what it may be:

    - ``--target-id`` (``rtk copy/restore --yes``): the serial or WWN; a disk with
      neither (a loop device) by its kernel name, node or backing file;
    - typed at the prompt: the serial/WWN or the device name (``sdb``, ``/dev/sdb``);
    - typed in the menu: exactly the word the screen asked for (the serial/WWN, else
      the kernel name);
    - ``rtk.consent=serial:X`` / ``wwn:Y``: only a serial or a WWN;
    - the program: a Python caller (tests, benchmarks) that named the target by its
      path: that path must still lead to the target.
    """

    how: str
    value: str
    kind: str = ""  # rtk.consent: "serial" or "wwn"

    @classmethod
    def target_id(cls, value: str) -> Consent:
        return cls(TARGET_ID, value)

    @classmethod
    def typed(cls, value: str) -> Consent:
        return cls(TYPED, value.strip())

    @classmethod
    def menu(cls, value: str) -> Consent:
        return cls(MENU, value.strip())

    @classmethod
    def unattended(cls, kind: str, value: str) -> Consent:
        return cls(UNATTENDED, value, kind)

    @classmethod
    def program(cls, path: str) -> Consent:
        return cls(PROGRAM, path)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}" if self.kind else self.value


def menu_word(target: Endpoint) -> str:
    """What the menu asks the technician to type: the serial/WWN, else the kernel name."""
    return target.disk.identity or target.disk.name


def accepted_names(target: Endpoint, how: str = TARGET_ID) -> set[str]:
    """What a consent given ``how`` may be for ``target``."""
    d = target.disk
    ident = {x for x in (d.serial, d.wwn) if x}
    if how == TARGET_ID:
        if ident:
            return ident
        names = {d.name, d.path, target.node, os.path.basename(target.node)}
        if d.backing_file:
            names.add(d.backing_file)
        return names
    if how == TYPED:
        names = {os.path.basename(target.node), target.node}
        if target.identity:
            names.add(target.identity)
        return names
    if how == MENU:
        return {menu_word(target)}
    return ident


def consent_problem(target: Endpoint, consent: Consent) -> str | None:
    """Why ``consent`` does not name ``target`` (None: it does)."""
    label = target.label()
    if consent.how == TARGET_ID:
        names = accepted_names(target, TARGET_ID)
        if consent.value in names:
            return None
        return (f"--target-id {consent.value} does not match the target {label}: "
                f"expected {' or '.join(sorted(names))}")
    if consent.how == TYPED:
        if consent.value in accepted_names(target, TYPED):
            return None
        return f"not confirmed: {consent.value or 'nothing'!r} does not name the target {label}"
    if consent.how == MENU:
        if consent.value == menu_word(target):
            return None
        return (f"the confirmation typed in the menu ({consent.value or 'nothing'}) does not "
                f"name the target {label}: {menu_word(target)} was asked for")
    if consent.how == UNATTENDED:
        d = target.disk
        if consent.kind not in ("serial", "wwn"):
            return f"rtk.consent={consent}: consent is serial: or wwn:"
        if not d.serial and not d.wwn:
            return (f"{d.name} has neither serial nor WWN, so no consent can name it: write "
                    "it from the menu instead")
        ok = (d.serial is not None and d.serial.strip() == consent.value.strip()
              if consent.kind == "serial"
              else bool(d.wwn) and wwn_key(d.wwn) == wwn_key(consent.value))
        if ok:
            return None
        return (f"rtk.consent={consent} does not name the disk found, "
                f"{identity_of(d).summary()}: nothing was written")
    if consent.how == PROGRAM:
        try:
            rdev = os.stat(consent.value).st_rdev
        except OSError as e:
            return f"the target was named {consent.value}, which is gone ({e.strerror})"
        if target.rdev is not None and rdev != target.rdev:
            return (f"the target was named {consent.value}, which does not lead to "
                    f"{target.node} any more")
        return None
    return f"a consent of an unknown kind ({consent.how}) names nothing"
