"""The role registry (the kernel read-only flag of SOURCE disks: test_disks_roles_host.py)."""

from __future__ import annotations

import pytest
from conftest import MiB, disk

from toolkit.copy.plan import check_pair
from toolkit.disks import roles
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.disks.inventory import Disk, IscsiLocation

IQN = "iqn.2026-11.lab.rtk:bdr"
BY_PATH = f"/dev/disk/by-path/ip-10.0.2.2:3262-iscsi-{IQN}-lun-1"


pytestmark = pytest.mark.usefixtures("run_dir")  # the registry in tmp_path/run


def _disk(name="sdb", serial="beaf11", lun=1, iqn=IQN) -> Disk:
    return disk(name, serial, size=16 * MiB, transport="iscsi",
                wwn=f"0x6000000000000000{lun:04d}", by_path=[BY_PATH.replace("lun-1",
                                                                          f"lun-{lun}")],
                iscsi=IscsiLocation(iqn, "10.0.2.2:3262", lun, "session1"))


def test_set_role_and_lookup_by_any_name(run_dir):
    assert roles.role_of(_disk()) is None and roles.source_keys() == frozenset()
    roles.set_role(f"{IQN}:1", "source", iqn=IQN, lun=1, serial="beaf11", device="/dev/sdb",
                   by_path=[BY_PATH])
    assert (run_dir / "roles.json").exists()
    for name in (f"{IQN}:1", "beaf11", "/dev/sdb", "sdb", BY_PATH):
        assert roles.role_of(name) == roles.SOURCE, name
    assert roles.role_of(_disk()) == "SOURCE"  # a Disk from the inventory
    assert roles.role_of(_disk("sdc", "beaf12", 2)) is None
    keys = roles.source_keys()
    assert {f"{IQN}:1", "beaf11", "/dev/sdb", BY_PATH} <= keys


def test_role_changes_and_forget():
    roles.set_role(_disk(), "SOURCE")
    roles.set_role(_disk("sdc", "beaf12", 2), "TARGET")
    assert roles.role_of(f"{IQN}:2") == "TARGET"
    roles.set_role(f"{IQN}:1", "TARGET")  # same disk, by key: replaced, not duplicated
    assert len(roles.entries()) == 2 and roles.source_keys() == frozenset()
    assert roles.forget("beaf12") and roles.role_of(f"{IQN}:2") is None
    assert not roles.forget("nothing")
    assert roles.forget_where(lambda e: e.get("iqn") == IQN) == [f"{IQN}:1"]
    with pytest.raises(ValueError):
        roles.set_role(_disk(), "BACKUP")


def test_copy_refuses_a_source_disk_as_target():
    """check_pair matches its target against source_keys()."""
    src_disk, dst_disk = _disk("sdc", "beaf12", 2), _disk()
    roles.set_role(dst_disk, "SOURCE")
    src, dst = endpoint_from_disk(src_disk), endpoint_from_disk(dst_disk)
    problems, _ = check_pair(src, dst, source_role=roles.source_keys())
    assert any("attached as SOURCE" in p for p in problems)
    roles.set_role(dst_disk, "TARGET")
    problems, _ = check_pair(src, dst, source_role=roles.source_keys())
    assert not any("SOURCE" in p for p in problems)


def test_corrupt_registry_is_empty(run_dir):
    run_dir.mkdir()
    (run_dir / "roles.json").write_text("{not json")
    assert roles.entries() == {} and roles.role_of("sdb") is None

