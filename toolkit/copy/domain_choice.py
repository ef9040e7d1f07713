"""Used blocks only, or every block: the front ends' one way to the used-blocks domain
(:mod:`toolkit.copy.usedblocks`: ``used_domain(source)``, ``recognised(source)``) and to
``CopyOptions(domain=...)`` (:mod:`toolkit.copy.engine`).

:func:`available` says whether this build has both; :func:`recognised` what a SOURCE
holds that a tool maps (the menu recommends used blocks only where it is not empty);
:func:`with_used_blocks` the copy's options with the domain of the source's used blocks,
or :class:`~toolkit.errors.Refused` in plain words (nothing written).
"""

from __future__ import annotations

import dataclasses

from toolkit.errors import Refused


def _module():
    try:
        from toolkit.copy import usedblocks
    except ImportError:
        return None
    return usedblocks


def available() -> bool:
    """Whether this build can copy used blocks only (the mapping and the engine's domain)."""
    from toolkit.copy.engine import CopyOptions
    mod = _module()
    return (mod is not None and hasattr(mod, "used_domain")
            and "domain" in {f.name for f in dataclasses.fields(CopyOptions)})


def recognised(source) -> list[str] | None:
    """The partitions (or the whole disk) of ``source`` whose filesystem a tool maps, in
    words ([]: none); None when this build cannot copy used blocks only."""
    if not available():
        return None
    try:
        return list(_module().recognised(source))
    except OSError:  # unreadable: nothing is recommended
        return []


def with_used_blocks(options, source):
    """``options`` with the domain of ``source``'s used blocks (every region no tool
    vouches for included, :func:`toolkit.copy.usedblocks.used_domain`)."""
    if not available():
        raise Refused("used blocks only: this build cannot map the used blocks (no "
                      "toolkit.copy.usedblocks): copy every block instead")
    try:
        domain = _module().used_domain(source)
    except OSError as e:  # the mapping tool failed (a ToolError), the source unreadable
        raise Refused(f"used blocks only: the used blocks of {source.node} cannot be "
                      f"mapped ({e.strerror or e}): copy every block instead") from None
    return dataclasses.replace(options, domain=domain)
