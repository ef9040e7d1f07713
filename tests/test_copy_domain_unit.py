"""A copy's scope without devices (toolkit/copy/scope.py): a domain checked against the
source, in words; which targets free blocks to zeros (toolkit/blockio/zeroing.py, on a
fake sysfs); a mapfile bound to its domain (toolkit/copy/binding.py); the messages and
the report of a domain copy (toolkit/copy/result.py, report.py); range arithmetic."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import MiB

from toolkit.blockio import zeroing
from toolkit.blockio.ranges import intersect, merge, subtract, total
from toolkit.blockio.verify import VerifyOutcome
from toolkit.copy.report import report_data, report_text
from toolkit.copy.result import CopyResult, conclude
from toolkit.copy.scope import DISCARDED, LEFT, Scope, domain_problem
from toolkit.copy.usedblocks import Domain, DomainPart
from toolkit.errors import Refused

pytestmark = pytest.mark.unit

SIZE = 64 * MiB


def used(ranges, size=SIZE, sector=512) -> Domain:
    return Domain(size, sector, ranges, [DomainPart(1, MiB, size - MiB, "ntfs", "Vol1",
                                                    "partclone.ntfs", MiB, "")])


def test_range_arithmetic():
    assert merge([(10, 5), (0, 3), (3, 2), (20, 0), (12, 10)]) == [(0, 5), (10, 12)]
    assert intersect([(0, 10), (20, 10)], [(5, 20)]) == [(5, 5), (20, 5)]
    assert subtract([(0, 100)], [(10, 10), (15, 10), (90, 20)]) == [(0, 10), (25, 65)]
    assert total([(0, 3), (10, 2)]) == 5


def test_a_scope_is_the_domain_or_everything():
    whole = Scope.of(None, SIZE, 512)
    assert whole.ranges == [(0, SIZE)] and whole.free() == [] and whole.record() is None
    assert whole.summary() == "the whole source: 67.1 MB"
    d = used([(0, MiB), (4 * MiB, MiB)])
    s = Scope.of(d, SIZE, 512)
    assert s.bytes == 2 * MiB and s.free() == [(MiB, 3 * MiB), (5 * MiB, SIZE - 5 * MiB)]
    assert s.within([(0, SIZE)]) == [(0, MiB), (4 * MiB, MiB)]
    rec = s.record()
    assert rec["digest"] == d.digest() and rec["bytes"] == 2 * MiB and "ranges" not in rec
    assert rec["summary"] == d.summary()


@pytest.mark.parametrize("domain, why", [
    (used([(0, MiB)], size=2 * SIZE), "was worked out for a source of 134217728 bytes; this "
                                      "source has 67108864 bytes: it is another disk's"),
    (used([(0, MiB)], sector=4096), "counts 4096-byte sectors; this source has 512-byte"),
    (used([(MiB, MiB), (0, 512)]), "its range at byte 0 (512 bytes) is out of order"),
    (used([(0, 2 * MiB), (MiB, MiB)]), "overlapping"),
    (used([(SIZE - 512, 1024)]), "outside the source"),
    (used([(100, 512)]), "not on a sector boundary"),
])
def test_a_domain_that_does_not_fit_the_source_is_refused_in_words(domain, why):
    with pytest.raises(Refused) as e:
        Scope.of(domain, SIZE, 512)
    assert why in str(e.value) and "the domain to copy (used blocks of" in str(e.value)


def _sysfs(root: Path, name: str, attrs: dict[str, str]) -> Path:
    for rel, value in attrs.items():
        p = root / name / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value + "\n")
    return root


@pytest.mark.parametrize("thin, mode, frees", [
    ("1", "writesame_16_unmap", True), ("1", "writesame_10_unmap", True),
    ("1", "writesame", False),  # zeros written by the device: not a free
    ("0", "writesame_16_unmap", False),  # not thin-provisioned
    ("1", "write", False),
])
def test_a_scsi_lun_frees_to_zeros_only_thin_with_unmap(tmp_path, thin, mode, frees):
    root = _sysfs(tmp_path, "sdb", {"device/scsi_disk/2:0:0:1/thin_provisioning": thin,
                                    "device/scsi_disk/2:0:0:1/zeroing_mode": mode})
    how = zeroing.frees_to_zeros("/dev/sdb", root)
    assert bool(how) is frees, how
    if frees:
        assert "LBPRZ" in how and mode in how


def test_a_partition_is_judged_by_its_disk(tmp_path):
    root = _sysfs(tmp_path, "sdb", {"device/scsi_disk/2:0:0:1/thin_provisioning": "1",
                                    "device/scsi_disk/2:0:0:1/zeroing_mode":
                                    "writesame_16_unmap"})
    (root / "sdb" / "sdb1").mkdir()
    (root / "sdb" / "sdb1" / "partition").write_text("1\n")
    (root / "sdb1").symlink_to(root / "sdb" / "sdb1")
    assert zeroing.frees_to_zeros("/dev/sdb1", root)


def test_a_loop_device_frees_to_zeros_over_a_file_that_offers_write_zeroes(tmp_path):
    backing = tmp_path / "f.img"
    backing.write_bytes(b"x")
    root = _sysfs(tmp_path / "sys", "loop7", {"loop/backing_file": str(backing),
                                              "queue/write_zeroes_max_bytes": "4294966784"})
    assert "holes punched" in zeroing.frees_to_zeros("/dev/loop7", root)
    (root / "loop7" / "queue" / "write_zeroes_max_bytes").write_text("0\n")
    assert zeroing.frees_to_zeros("/dev/loop7", root) is None
    (root / "loop7" / "loop" / "backing_file").write_text("/dev/sda\n")  # over a device
    assert zeroing.frees_to_zeros("/dev/loop7", root) is None
    assert zeroing.frees_to_zeros("/dev/nvme0n1", root) is None  # anything else: no


def test_a_mapfile_is_bound_to_its_domain():
    d = used([(0, MiB)])
    meta = {"domain": json.dumps({"digest": d.digest(), "bytes": d.bytes(),
                                  "summary": d.summary()})}
    assert domain_problem("m", meta, d) is None
    other = used([(0, 2 * MiB)])
    why = domain_problem("m", meta, other)
    assert why.startswith(f"it was written for a copy of {d.summary()} (domain "
                          f"{d.digest()[:16]}), this is a copy of {other.summary()}")
    assert "the whole source" in domain_problem("m", meta, None)
    assert domain_problem("m", {}, None) is None  # no domain either side
    assert "written for a copy of the whole source" in domain_problem("m", {}, d)
    assert "cannot be read" in domain_problem("m", {"domain": "{oops"}, None)


END = {"path": "/dev/loop1", "node": "/dev/loop1", "size": SIZE, "logical_sector_size": 512,
       "transport": "loop"}


def _result(**kw) -> CopyResult:
    d = used([(0, MiB), (4 * MiB, MiB)])
    base = dict(operation="copy", status="ok", message="", source=END,
                target={**END, "path": "/dev/loop2", "node": "/dev/loop2"}, size=SIZE,
                started=0.0, finished=1.0, algorithm="blake3", copied_bytes=2 * MiB,
                domain=Scope.of(d, SIZE, 512).record(),
                free_blocks={"action": "discarded", "text": DISCARDED, "bytes": SIZE - 2 * MiB,
                             "how": "a loop device over a file"})
    base.update(kw)
    return CopyResult(**base), d


def test_a_domain_copy_says_what_it_covered_and_what_became_of_the_free_blocks():
    r, d = _result(verify=VerifyOutcome(True, "read back target", read_back_bytes=2 * MiB))
    conclude(r, threading.Event())
    assert r.message == (f"copied {2 * MiB} bytes, verified: {d.summary()}, identical; "
                         f"free blocks: {DISCARDED}")
    r, d = _result(free_blocks={"action": "left", "text": LEFT, "bytes": 1, "how": None})
    conclude(r, threading.Event())
    assert r.message == f"copied {2 * MiB} bytes: {d.summary()}, not verified; free blocks: {LEFT}"
    r, d = _result(unreadable=[(512, 512)], verify=VerifyOutcome(True, "read back target"))
    conclude(r, threading.Event())
    assert r.status == "unreadable" and r.message.endswith(f"the rest verified); free blocks: "
                                                           f"{DISCARDED}")


def test_a_domain_copys_report():
    r, d = _result(verify=VerifyOutcome(True, "read back target and compared with source",
                                        read_back_bytes=MiB, read_while_writing=MiB // 2,
                                        compared_bytes=MiB, covered="X", seconds=1.0))
    conclude(r, threading.Event())
    data = report_data(r)
    assert data["copy"]["domain"]["digest"] == d.digest()
    assert data["copy"]["free_blocks"]["action"] == "discarded"
    v = data["verify"]
    assert (v["read_back_bytes"], v["compared_bytes"], v["covered"]) == (MiB, MiB, "X")
    assert v["bytes_per_second"] == MiB // 2 + MiB  # what was read after the copy ended
    rows = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                  report_text(r).splitlines()) if v}
    assert rows["domain"] == f"{d.summary()} (digest {d.digest()})"
    assert rows["free blocks"] == f"{DISCARDED} (a loop device over a file)"
    assert rows["read back"] == "1048576 bytes, 524288 of them while the copy ran"
    assert rows["compared"] == "1048576 bytes with the source, after the copy"


def test_a_domain_copy_says_its_hash_and_verdict_are_the_domains_and_why_parts_are_in_full(
        capsys):
    """The hash of a used-blocks copy is of the domain's bytes (``rtk verify --hash`` of
    the whole disk can never match it): the report, ``rtk copy`` and the menu say so; the
    report lists each part with why it was copied in full."""
    from screen import render

    from toolkit.cli.copy import _finish
    from tui.views.copy import CopyResultView
    d = Domain(SIZE, 512, [(0, 2 * MiB)], [
        DomainPart(1, MiB, 40 * MiB, "ntfs", "C", None, 40 * MiB,
                   "a dynamic disk (LDM) partition: its volumes may span partitions: "
                   "copied in full"),
        DomainPart(2, 41 * MiB, 20 * MiB, "ext4", None, "partclone.extfs", MiB, "")])
    r, _d = _result(domain=d.as_dict(), verify=VerifyOutcome(
        True, "read back target", read_back_bytes=2 * MiB, source_hash="ab" * 32,
        target_hash="ab" * 32))
    conclude(r, threading.Event())
    text = report_text(r)
    assert (f"partition 1 {MiB}-{41 * MiB} ntfs: a dynamic disk (LDM) partition: its "
            "volumes may span partitions: copied in full") in " ".join(text.split())
    assert f"partition 2 {41 * MiB}-{61 * MiB} ext4: mapped by partclone.extfs" in text
    assert f"source (of the used-blocks domain, {d.bytes()} bytes)" in text
    _finish(r)
    out = capsys.readouterr().out
    assert f"blake3 of the used-blocks domain ({d.bytes()} bytes): {'ab' * 32}" in out, out
    screen = render(type("A", (), {"root": CopyResultView(r, lambda: None)})(), (100, 30))
    assert "VERIFIED IDENTICAL (USED BLOCKS: 2.1 MB of 67.1 MB)" in screen, screen
