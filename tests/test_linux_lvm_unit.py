"""The volume groups of a restored disk's LVM physical volumes, activated only when that is
safe and always deactivated: LVM's reports replayed from captures of the ISO's lvm
(tests/fixtures/lvm: a volume group spanning two physical volumes, one looked at), the
kernel's device-mapper names read from a sysfs tree of that layout, and the order of
``vgchange`` calls when activation or deactivation fails. Activation itself needs
device-mapper: tests/test_hardware_vm.py does it in the guest."""

from __future__ import annotations

import subprocess

import pytest
from conftest import FIXTURES

from toolkit.restore import linux_initramfs as li
from toolkit.restore import linux_mounts as lm
from toolkit.system import lvm, tools

pytestmark = pytest.mark.unit

LVM = FIXTURES / "lvm"
PV = "/dev/loop0"


class Lvm:
    """``tools.run`` for LVM's commands: the captured reports, ``vgchange`` recorded and
    failing as told."""

    def __init__(self, vgs: str = "vgs-both-pvs.json", fail: tuple[str, ...] = (),
                 lvs: str = "lvs-one-of-two-pvs.json"):
        self.vgs, self.fail, self.lvs, self.calls = vgs, fail, lvs, []

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        if argv[0] == "lvs":
            out = (LVM / self.lvs).read_text()
        elif argv[0] == "vgs":
            out = (LVM / self.vgs).read_text()
        else:
            out = ""
            if argv[1] in self.fail:
                raise tools.ToolError(argv, 5, "  device-mapper: remove ioctl on spanvg-data "
                                      "failed: Device or resource busy")
        return subprocess.CompletedProcess(argv, 0, out, "")

    def vgchanges(self) -> list[str]:
        return [a[1] for a in self.calls if a[0] == "vgchange"]


@pytest.fixture
def no_dm(monkeypatch):
    monkeypatch.setattr(lvm, "active_dm_names", lambda sys_root="/": {})


def test_the_reports_name_the_groups_that_need_a_physical_volume_not_looked_at(monkeypatch):
    monkeypatch.setattr(tools, "run", Lvm("vgs-one-of-two-pvs.json"))
    assert lvm.missing_pvs([PV]) == {"spanvg": 1}
    monkeypatch.setattr(tools, "run", Lvm("vgs-both-pvs.json"))
    assert lvm.missing_pvs([PV, "/dev/loop1"]) == {}
    assert lvm.logical_volumes([PV]) == [
        {"path": "/dev/spanvg/data", "vg": "spanvg", "lv": "data", "active": False,
         "dm_uuid": "LVM-g400Dh13iv9ZB1N6O8HHObmn7OxjZnb9ckQLmehl5QnsETnEFO7mDtDMe7oM0luP",
         "origin": None}]


def test_the_kernels_device_mapper_names_and_lvms_own(tmp_path):
    for n, name in ((0, "spanvg-data"), (3, "my--vg-root")):
        d = tmp_path / "sys" / "block" / f"dm-{n}" / "dm"
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
    (tmp_path / "sys" / "block" / "sda").mkdir()
    assert lvm.active_dm_names(str(tmp_path)) == {"spanvg-data": "/dev/dm-0",
                                                  "my--vg-root": "/dev/dm-3"}
    assert lvm.dm_name("my-vg", "root") == "my--vg-root"
    assert lvm.dm_name("spanvg", "data") == "spanvg-data"


def test_a_group_that_needs_another_disk_is_not_activated(monkeypatch, no_dm):
    run = Lvm("vgs-one-of-two-pvs.json")
    monkeypatch.setattr(tools, "run", run)
    with pytest.raises(lm.MountError) as e, lm.logical_volumes([PV]):
        pass
    assert str(e.value) == ("the volume group spanvg also needs 1 physical volume that is "
                            "not on this disk: not touched")
    assert run.vgchanges() == []


def test_another_active_group_of_the_same_name_is_not_touched(monkeypatch):
    run = Lvm()
    monkeypatch.setattr(tools, "run", run)
    monkeypatch.setattr(lvm, "active_dm_names",
                        lambda sys_root="/": {"spanvg-data": "/dev/dm-0"})
    with pytest.raises(lm.MountError, match="another volume group named spanvg is active in "
                       r"the live system \(its logical volumes would take the same names\): "
                       "not touched"), lm.logical_volumes([PV]):
        pass
    assert run.vgchanges() == []


def test_the_refusal_names_the_disk_that_holds_the_active_group(monkeypatch, tmp_path):
    """The other, active spanvg is on /dev/sdc2 and /dev/sdd1 (sysfs slaves of its dm
    device): the refusal names them, not the restored disk (review helper-56 finding 8)."""
    slaves = tmp_path / "sys" / "block" / "dm-0" / "slaves"
    slaves.mkdir(parents=True)
    for n in ("sdd1", "sdc2"):
        (slaves / n).symlink_to(f"../../../devices/x/{n}")
    real = lvm.underlying
    monkeypatch.setattr(lvm, "underlying", lambda dev, sys_root="/": real(dev, str(tmp_path)))
    monkeypatch.setattr(tools, "run", Lvm())
    monkeypatch.setattr(lvm, "active_dm_names",
                        lambda sys_root="/": {"spanvg-data": "/dev/dm-0"})
    with pytest.raises(lm.MountError) as e, lm.logical_volumes([PV]):
        pass
    assert str(e.value) == ("another volume group named spanvg is active in the live system "
                            "on /dev/sdc2, /dev/sdd1 (its logical volumes would take the same "
                            "names): not touched")


def test_a_root_with_an_lvm_snapshot_is_not_rebuilt(monkeypatch, no_dm):
    """snapvg/root has the classic snapshot snapvg/before (captured in the guest): every
    block the rebuild wrote would take room in the snapshot, lost once full; the step
    refuses to write it and says why (review helper-56 finding 3)."""
    monkeypatch.setattr(tools, "run", Lvm(lvs="lvs-snapshot.json"))
    with lm.logical_volumes([PV]) as vols:
        by = {v["lv"]: v for v in vols}
    assert by["snapvg/root"]["snapshots"] == ["snapvg/before"]
    assert by["snapvg/before"]["snapshots"] == []
    assert by["snapvg/root"]["aliases"][-1] == ("/dev/disk/by-id/dm-uuid-LVM-wCm9IeDYnzb6o6R"
                                               "UabXK4Moj8Uey3r9qKObZXoVjKMOJvprBr29G0ZN618Xfgknk")
    assert lm.snapshotted(by["snapvg/root"], "", vols) == (
        "the logical volume snapvg/root has the LVM snapshot snapvg/before: the rebuild "
        "would write into it and could fill the snapshot's space (a full snapshot is lost): "
        "not rebuilt; remove the snapshot (lvremove) or rebuild by hand")
    # /boot on a logical volume with a snapshot: the rebuild writes there too
    boot = {**by["snapvg/before"], "lv": "snapvg/boot", "fstype": "ext4", "label": "B",
            "snapshots": ["snapvg/b1", "snapvg/b2"]}
    root = {**by["snapvg/root"], "snapshots": []}
    assert lm.snapshotted(root, "LABEL=B /boot ext4 d 0 2\n", [root, boot]).startswith(
        "the logical volume snapvg/boot has the LVM snapshots snapvg/b1, snapvg/b2: ")
    assert lm.snapshotted(root, "", [root]) is None


def test_a_failed_activation_is_deactivated_again(monkeypatch, no_dm):
    run = Lvm(fail=("-ay",))
    monkeypatch.setattr(tools, "run", run)
    with pytest.raises(tools.ToolError), lm.logical_volumes([PV]):
        pass
    assert run.vgchanges() == ["-ay", "-an"]  # what it activated before failing: undone


def test_a_group_left_active_is_said_and_what_was_done_stands(monkeypatch, no_dm):
    run = Lvm(fail=("-an",))
    monkeypatch.setattr(tools, "run", run)
    left = []
    with lm.logical_volumes([PV], left) as vols:
        assert [v["lv"] for v in vols] == ["spanvg/data"]
    assert run.vgchanges() == ["-ay", "-an"]
    assert left == ["the volume group spanvg could not be deactivated (vgchange failed: "
                    "device-mapper: remove ioctl on spanvg-data failed: Device or resource "
                    "busy (exit 5)): still active (deactivate by hand: vgchange -an spanvg)"]
    with pytest.raises(lm.MountError, match="still active"), lm.logical_volumes([PV]):
        pass  # without ``left``: raised

    monkeypatch.setattr(tools, "installed", lambda tool: True)
    parts = [{"number": 1, "node": "/dev/sdb1", "fstype": "ext4"},
             {"number": 2, "node": PV, "fstype": "LVM2_member"}]
    (o,) = li._lvm_roots("/dev/sdb", parts, "nvme", None, None)  # no Linux root on it
    assert o.status == "failed" and o.warn and o.message == left[0]


def test_after_ctrl_c_no_further_kernel_is_rebuilt(tmp_path, monkeypatch):
    """Ctrl-C (the restore's cancel event set) during one kernel's build: the image's
    other kernels are not begun (their tool would write on after "stopping")."""
    import threading
    for v in ("6.1", "6.12"):
        (tmp_path / "usr" / "lib" / "modules" / v).mkdir(parents=True)
        (tmp_path / "boot").mkdir(exist_ok=True)
        (tmp_path / "boot" / f"vmlinuz-{v}").write_bytes(b"k")
    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "usr" / "sbin" / "update-initramfs").write_text("#!/bin/sh\n")
    cancel, built = threading.Event(), []

    def one(root, tool, version, *a):
        built.append(version)
        cancel.set()  # Ctrl-C while the first one builds
        raise tools.ToolError(["update-initramfs"], 130, "Generating /boot/initrd.img-6.1")
    monkeypatch.setattr(li, "rebuild_kernel", one)
    out = li.Outcome(2)
    li.rebuild(str(tmp_path), "nvme", out, set(), cancel)
    assert built == ["6.1"]
    assert out.status == "failed" and out.kernels[1] == {
        "version": "6.12", "failed": True, "message": "not rebuilt: cancelled (Ctrl-C)"}


def test_fix_root_stops_before_writing_a_snapshotted_root(monkeypatch):
    """The step itself: with ``on`` (always rebuild) a root with a snapshot is refused
    before anything is mounted read-write or lent by the write gate."""
    monkeypatch.setattr(li, "read_file", lambda *a: "/dev/mapper/snapvg-root / ext4 d 0 1\n")
    monkeypatch.setattr(li, "nothing_to_do", lambda *a: None)
    lent = []
    root = {"node": "/dev/snapvg/root", "lv": "snapvg/root", "fstype": "ext4",
            "fs_uuid": "u", "label": None, "number": None, "snapshots": ["snapvg/before"],
            "aliases": lvm.aliases("snapvg", "root")}
    out = li.fix_root("/dev/sdb", root, [root], None, lend=lent.append, mode="on")
    assert (out.status, out.warn) == ("failed", True)
    assert out.message.startswith("the logical volume snapvg/root has the LVM snapshot "
                                  "snapvg/before: ")
    assert lent == [] and out.kernels == []
