"""A copy's mapfile bound to its pair and the source's content, without devices: the
fingerprint's regions and comparison, identity records across a /dev rename, what a
mapfile says and why it is refused, the atomic save, ``--resume``/``--restart``, the
unattended plan's ``resume`` and the menu's question."""

from __future__ import annotations

import io
import json
import os

import pytest
from conftest import MiB, disk, partition
from screen import render

from toolkit.blockio.mapfile import Mapfile
from toolkit.cli.main import build_parser
from toolkit.copy import binding, fingerprint
from toolkit.copy import engine as copymod
from toolkit.copy.fingerprint import Fingerprint
from toolkit.disks.endpoint import endpoint_from_disk as E
from toolkit.disks.inventory import IscsiLocation
from toolkit.errors import Refused

pytestmark = pytest.mark.unit

TB = 10**12


# --- the fingerprint --------------------------------------------------------------------


@pytest.mark.parametrize("size", [16 * TB // 4096 * 4096, 24 * MiB + 3 * 512, 3 * MiB, 4096])
def test_regions_are_spread_over_the_disk_with_its_start_and_end(size):
    offs = fingerprint.offsets(size)
    n = fingerprint.region_length(size)
    assert offs == sorted(set(offs)) and all(p % 512 == 0 and p + n <= size for p in offs)
    assert offs[0] == 0 and offs[-1] == size - n  # the partition table, the backup GPT
    if size >= 16 * MiB:
        assert len(offs) == 16 and n == 64 * 1024
        assert MiB in offs and size - MiB in offs  # the first partition, the last MiB
        spread = [p for p in offs if p not in (0, MiB, size - MiB, size - n)]
        gaps = [b - a for a, b in zip(spread[:-1], spread[1:], strict=True)]  # evenly in between
        assert len(spread) == 12 and max(gaps) - min(gaps) <= 512


def test_fingerprint_finds_a_change_in_a_sampled_region(tmp_path):
    path = tmp_path / "src.img"
    size = 24 * MiB + 3 * 512
    path.write_bytes(os.urandom(size))
    first = fingerprint.take_path(str(path))
    assert first.difference(fingerprint.take_path(str(path))) is None
    assert len(first.samples) == 16 and first.size == size
    pos = fingerprint.offsets(size)[7] + 1000
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(b"\x00\xff")
    changed = first.difference(fingerprint.take_path(str(path)))
    assert changed == f"the region at byte {fingerprint.offsets(size)[7]} differs"
    grown = Fingerprint(size + 512, first.region, first.samples)
    assert first.difference(grown) == (f"its size differs: {size} bytes then, "
                                       f"{size + 512} bytes now")


def test_fingerprint_text_round_trip_and_unreadable_regions_are_not_compared():
    fp = Fingerprint(8 * MiB, 65536, ((0, "ab" * 16), (MiB, "-"), (2 * MiB, "cd" * 16)))
    text = fp.to_text()
    assert text == f"blake3 size={8 * MiB} region=65536 0:{'ab' * 16} {MiB}:- " \
                   f"{2 * MiB}:{'cd' * 16}"
    assert Fingerprint.from_text(text) == fp
    now = Fingerprint(8 * MiB, 65536, ((0, "ab" * 16), (MiB, "ee" * 16), (2 * MiB, "-")))
    assert fp.difference(now) is None  # unreadable then or now: not compared
    for bad in ("", "blake3 size=1", "blake3 size=1 region=2 0:XYZ"):
        with pytest.raises(ValueError):
            Fingerprint.from_text(bad)


# --- identities -------------------------------------------------------------------------


def test_identity_survives_a_dev_rename_not_another_disk():
    a = binding.identity_record(E(disk("sdb", serial="Z1Z2", model="ST4000NM")))
    renamed = binding.identity_record(E(disk("sdc", serial="Z1Z2", model="ST4000NM")))
    assert a == renamed and "sdb" not in json.dumps(a)
    other = binding.identity_record(E(disk("sdb", serial="Z9", model="ST4000NM")))
    assert binding.identity_difference(a, other, "target") == \
        "the target's serial differs: Z1Z2 then, Z9 now"
    d = disk("sdd", wwn="0x5000", transport="iscsi",
             iscsi=IscsiLocation(target="iqn.2026-01.x:san", portal="10.0.0.1:3260", lun=1,
                                 session="1"))
    moved = disk("sde", wwn="0x5000", transport="iscsi",
                 iscsi=IscsiLocation(target="iqn.2026-01.x:san", portal="192.168.1.9:3260",
                                     lun=1, session="7"))
    lun = binding.identity_record(E(d))
    assert lun["iscsi"] == "iqn.2026-01.x:san LUN 1"
    assert lun == binding.identity_record(E(moved))  # another portal: the same LUN
    part2 = binding.identity_record(E(d, partition(d, 2, MiB, 8 * MiB)))
    assert (part2["partition"], part2["start"]) == (2, MiB)
    assert "partition number" in binding.identity_difference(lun, part2, "source")
    assert binding.describe(part2).startswith("partition 2 of iscsi wwn 0x5000")


# --- the mapfile: its lines and its writing ------------------------------------------------


def test_metadata_lines_keep_their_order_and_stay_one_line(tmp_path):
    m = Mapfile(4 * MiB)
    m.meta.update(version="2", source=json.dumps({"serial": "A"}), fingerprint="x\ny")
    path = tmp_path / "m.map"
    m.save(str(path), ["Mapfile. test"])
    lines = [x for x in path.read_text().splitlines() if x.startswith("# rtk-")]
    assert lines[:3] == ['# rtk-version: 2', '# rtk-source: {"serial": "A"}',
                         "# rtk-fingerprint: x y"]
    assert len(lines) == 4 and lines[3] == f"# rtk-check: {m.check_text()}"  # last
    back = Mapfile.load(str(path))
    assert list(back.meta) == ["version", "source", "fingerprint"] and back.intact


def test_save_writes_fsyncs_renames_then_fsyncs_the_directory(tmp_path, monkeypatch):
    calls: list[str] = []
    real = {n: getattr(os, n) for n in ("open", "write", "fsync", "replace")}
    kinds: dict[int, str] = {}

    def fake_open(path, flags, *a):
        fd = real["open"](path, flags, *a)
        kinds[fd] = "dir" if flags & os.O_DIRECTORY else "tmp"
        return fd

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "write", lambda fd, d: calls.append("write") or real["write"](fd, d))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(f"fsync {kinds[fd]}")
                        or real["fsync"](fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append("rename") or
                        real["replace"](a, b))
    Mapfile(MiB).save(str(tmp_path / "a.map"))
    assert [c for i, c in enumerate(calls) if c != "write" or calls[i - 1] != "write"] == \
        ["write", "fsync tmp", "rename", "fsync dir"]


# --- what a mapfile says --------------------------------------------------------------------

SIZE = 8 * MiB
FP = Fingerprint(SIZE, 65536, ((0, "aa" * 16), (MiB, "bb" * 16)))


def plan(target_serial: str = "B"):
    return copymod.CopyPlan(E(disk("sda", serial="A", size=SIZE)),
                            E(disk("sdb", serial=target_serial, size=SIZE)))


def written(path: str, p, fp: Fingerprint = FP, done: int = SIZE, **meta) -> None:
    m = Mapfile(SIZE)
    m.set(0, done, "+")
    m.meta = {**binding.new_meta(p, fp, "2026-05-04T10:12:03+02:00"), **meta}
    m.save(path)


def test_nothing_there(log_dir):
    s = binding.inspect(plan(), fingerprint=FP)
    assert (s.kind, s.exists, s.default, s.problem) == ("none", False, True, None)
    assert s.path == copymod.default_mapfile(plan())


def test_interrupted_copy_of_this_pair(log_dir):
    p = plan()
    os.makedirs(log_dir)
    written(copymod.default_mapfile(p), p, done=2 * MiB)
    s = binding.inspect(p, fingerprint=FP)
    assert (s.kind, s.problem, s.finished) == ("ok", None, False)
    assert s.refusal() == (
        f"the mapfile {s.path} is of an interrupted copy of this pair, started on "
        "2026-05-04 10:12:03+02:00: 2.1 MB of 8.4 MB copied: --resume continues it, "
        "--restart discards it and copies everything again")


def test_finished_pair_verified_or_not(tmp_path):
    path = str(tmp_path / "m.map")
    written(path, plan(), finished="2026-05-04T11:00:00+02:00")
    s = binding.inspect(plan(), path, fingerprint=FP)
    assert s.finished and s.kind == "ok" and not s.default
    assert "this pair was already copied on 2026-05-04 11:00:00+02:00, not verified: " \
           "--resume does nothing but verify again" in s.refusal()
    written(path, plan(), finished="2026-05-04T11:00:00+02:00",
            verified=binding.verified_text(True, "2026-05-04T11:30:00+02:00",
                                           "read back target", "blake3"))
    s = binding.inspect(plan(), path, fingerprint=FP)
    assert s.meta["verified"] == ("identical 2026-05-04T11:30:00+02:00 (read back target, "
                                  "blake3)")
    assert "already copied on 2026-05-04 11:00:00+02:00, verified identical on " \
           "2026-05-04 11:30:00+02:00" in s.refusal()


def test_changed_source_says_where_and_since_when(tmp_path):
    path = str(tmp_path / "m.map")
    written(path, plan(), finished="2026-05-04T11:00:00+02:00")
    now = Fingerprint(SIZE, 65536, ((0, "aa" * 16), (MiB, "cc" * 16)))
    s = binding.inspect(plan(), path, fingerprint=now)
    assert s.kind == "changed"
    assert s.problem == ("the source changed since the copy started on "
                         f"2026-05-04 10:12:03+02:00: the region at byte {MiB} differs")
    assert s.refusal(binding.CLI).endswith(": start over with --restart (discards the mapfile "
                                           "and copies everything again; --resume is refused)")
    assert "already copied on" in s.refusal()  # what it says, then why not


def test_another_pair_names_both(tmp_path):
    path = str(tmp_path / "m.map")
    written(path, plan("B"))
    s = binding.inspect(plan("C"), path, fingerprint=FP)
    assert s.kind == "other"
    assert s.problem == (f"the mapfile {path} belongs to the copy of SOURCE sata serial A "
                         "(8.4 MB) onto TARGET sata serial B (8.4 MB), not of sata serial A "
                         "(8.4 MB) onto sata serial C (8.4 MB) (the target's serial differs: "
                         "B then, C now)")


def test_foreign_mapfile_only_when_named(tmp_path, log_dir):
    p = plan()
    os.makedirs(log_dir)
    plain = Mapfile(SIZE)
    plain.set(0, MiB, "+")
    plain.save(copymod.default_mapfile(p), ["Mapfile. Created by GNU ddrescue version 1.27"])
    s = binding.inspect(p, fingerprint=FP)
    assert s.foreign and s.problem == binding.NOT_NAMED
    assert "never used from the default place" in s.refusal()
    assert f"--mapfile {s.path} and --resume" in s.refusal()
    named = binding.inspect(p, s.path, fingerprint=FP)
    assert named.foreign and named.problem is None
    assert "its origin is unknown" in named.adopted_warning()
    small = tmp_path / "small.map"
    Mapfile(SIZE - 512).save(str(small))
    s = binding.inspect(p, str(small), fingerprint=FP)
    assert s.problem and "covers 8388096 bytes but the source has 8388608" in s.problem


def test_an_old_rtk_mapfile_is_not_bound(tmp_path):
    path = str(tmp_path / "old.map")
    m = Mapfile(SIZE)
    m.meta = {"source": "WD-ABC", "target": "loop-x"}  # the first format: keys only
    m.save(path)
    assert binding.inspect(plan(), path, fingerprint=FP).foreign


# --- the choices: command line, unattended plan, menu -------------------------------------


def test_cli_resume_and_restart_exclude_each_other(capsys):
    parser = build_parser()
    a = parser.parse_args(["copy", "/dev/a", "/dev/b", "--resume"])
    assert (a.resume, a.restart) == (True, False)
    a = parser.parse_args(["copy", "/dev/a", "/dev/b", "--restart"])
    assert (a.resume, a.restart) == (False, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["copy", "/dev/a", "/dev/b", "--resume", "--restart"])
    assert copymod.CopyOptions().existing == "refuse"


def test_unattended_plan_says_what_to_do_with_a_mapfile():
    from toolkit.unattended.cmdline import Cmdline, CmdlineError
    from toolkit.unattended.plan import Plan, PlanError, from_cmdline, from_file

    assert Plan().resume == "no"
    for value in ("yes", "no", "restart"):
        assert from_cmdline(Cmdline(f"rtk.resume={value}"))["resume"] == value
    with pytest.raises(CmdlineError, match="rtk.resume=maybe"):
        from_cmdline(Cmdline("rtk.resume=maybe"))
    assert [from_file({"resume": v})["resume"] for v in (True, False, "restart")] == \
        ["yes", "no", "restart"]
    with pytest.raises(PlanError, match="plan.resume"):
        from_file({"resume": "sometimes"})


@pytest.mark.parametrize("resume,existing", [("no", "refuse"), ("yes", "resume"),
                                             ("restart", "restart")])
def test_unattended_copy_passes_the_plans_choice(monkeypatch, resume, existing):
    from toolkit.unattended import Console, RunReporter
    from toolkit.unattended.job import Job, Stop
    from toolkit.unattended.plan import Plan

    seen = {}

    def fake_copy(cplan, options, **kw):  # (progress, cancel, consent...)
        seen["options"] = options
        raise Refused("the mapfile M says: this pair was already copied on DATE")

    monkeypatch.setattr(copymod, "copy", fake_copy)
    job = Job(Plan(mode="copy", resume=resume), RunReporter(None),
              Console(streams=[io.StringIO()]), dry_run=False, medium="/x", hooks={})
    job.source, job.disk = disk("sda", serial="A"), disk("sdb", serial="B")
    with pytest.raises(Stop) as e:
        job.write_copy(plan())
    assert seen["options"].existing == existing
    assert seen["options"].choices == binding.UNATTENDED
    assert "already copied" in str(e.value) and not job.written


def _summary(state):
    from tui.views.copy import CopySummaryView

    view = CopySummaryView(plan(), "B", state, lambda **kw: kw)
    return " ".join(render(type("A", (), {"root": view})(), (80, 40)).split())


def test_menu_question_for_each_state(tmp_path):
    path = str(tmp_path / "m.map")
    assert "Start over" not in _summary(binding.MapState(path, True))  # nothing to ask
    written(path, plan(), done=2 * MiB)
    screen = _summary(binding.inspect(plan(), path, fingerprint=FP))
    assert "Resume the interrupted copy of this pair (2.1 MB of 8.4 MB done" in screen
    assert "Start over" in screen
    written(path, plan(), finished="2026-05-04T11:00:00+02:00")
    screen = _summary(binding.inspect(plan(), path, fingerprint=FP))
    assert "This pair was already copied on 2026-05-04 11:00:00+02:00, not verified" in screen
    assert "Verify again" in screen and "Start over" in screen
    now = Fingerprint(SIZE, 65536, ((0, "dd" * 16), (MiB, "bb" * 16)))
    screen = _summary(binding.inspect(plan(), path, fingerprint=now))
    assert "the source changed since the copy started on" in screen
    assert "Verify again" not in screen and "Resume" not in screen
    assert "copies everything again" in screen
