"""The test-layer naming rule of tests/conftest.py: every test file, in tests/ or in any
directory below it, is ``test_<area>_<layer>.py`` and its tests carry that layer's
marker; the collection fails otherwise."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest

pytestmark = pytest.mark.unit


class Item:
    """What the rule reads of a collected test: its path, node id and markers."""

    def __init__(self, path: Path, *layers: str):
        self.path = path
        self.nodeid = f"{path.relative_to(conftest.ROOT)}::test_x"
        self.marks = [getattr(pytest.mark, m).mark for m in layers]

    def iter_markers(self):
        return iter(self.marks)


def check(*items: Item) -> str:
    """The collection's error for ``items`` ('' when they keep the rule)."""
    try:
        conftest.pytest_collection_modifyitems(None, None, list(items))
    except pytest.UsageError as e:
        return str(e)
    return ""


@pytest.mark.parametrize("where", [conftest.TESTS, conftest.TESTS / "vmlab",
                                   conftest.TESTS / "a" / "b"])
def test_the_rule_applies_in_tests_and_below(where):
    assert check(Item(where / "test_disks_unit.py", "unit"),
                 Item(where / "test_disks_host.py", "host")) == ""
    wrong = check(Item(where / "test_disks.py", "unit"))
    assert "test_disks.py is not named test_<area>_<layer>.py" in wrong
    wrong = check(Item(where / "test_disks_unit.py", "host"))
    assert "is marked host, in a file of the unit layer" in wrong


def test_a_file_outside_tests_is_not_ours():
    assert check(Item(conftest.ROOT / "bench" / "test_whatever.py", "unit")) == ""
