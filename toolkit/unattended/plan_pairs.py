"""A copy job's pairs in the plan file (``pairs:``, docs/unattended.md "Several pairs"):
:class:`CopyPair`, read from the file (:func:`pairs_from_file`) and checked with the rest
of the plan (:func:`check_pairs`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from toolkit.unattended.plan_file import PlanError
from toolkit.unattended.selectors import Selector, parse_consent, parse_selector

KEYS = ("source", "disk", "consent")


@dataclass(frozen=True)
class CopyPair:
    """One pair of a copy job: the SOURCE, the disk written, and the consent that must
    name that disk."""

    source: Selector
    disk: Selector
    consent: Selector

    def to_dict(self) -> dict:
        return {"source": str(self.source), "disk": str(self.disk),
                "consent": str(self.consent)}


def converter(key: str) -> Callable:
    """The command line's own check of a pair's ``key`` (a selector, or the consent)."""
    return parse_consent if key == "consent" else parse_selector


def pairs_from_file(items: list[dict], checked: Callable) -> tuple[CopyPair, ...]:
    """The pairs of a plan file that fits the schema; ``checked(convert, value, where)``
    collects each problem (:func:`toolkit.unattended.plan.from_file`)."""
    return tuple(CopyPair(*(checked(converter(k), p[k], f"plan.pairs[{i}].{k}")
                            for k in KEYS)) for i, p in enumerate(items))


def check_pairs(plan) -> None:
    """PlanError unless a plan with pairs is a copy job with no single pair's keys beside
    them, and no disk is the target of two pairs; a plan without pairs: its ``used_blocks``
    and ``concurrent`` are for copy only."""
    if not plan.pairs:
        if plan.mode == "restore" and (plan.used_blocks or plan.concurrent is not None):
            raise PlanError("used_blocks: and concurrent: (plan file) are for mode copy")
        return
    if plan.mode not in (None, "copy"):
        raise PlanError(f"pairs: (plan file) is a copy job: rtk.mode={plan.mode} does not copy "
                        "(rtk.mode=copy, or mode: copy)")
    given = [k for k in ("image", "disk", "consent") if getattr(plan, k)]
    if given:
        raise PlanError("pairs: (plan file) gives each pair's source, disk and consent: drop "
                        + ", ".join(f"rtk.{k}= ({k}:)" for k in given))
    seen: dict[str, int] = {}
    for i, p in enumerate(plan.pairs):
        if str(p.disk) in seen:
            raise PlanError(f"plan.pairs[{i}].disk: {p.disk} is plan.pairs[{seen[str(p.disk)]}]"
                            ".disk too: a disk can be the target of one pair only")
        seen[str(p.disk)] = i
