"""Cluster disk identities on the menu's screens without devices: the iSCSI Manager's
attached line and the copy confirmation's disk column, from the guest's replayed
inventory with an identity as toolkit.disks.cluster reads it."""

from __future__ import annotations

from conftest import guest_disks, words
from screen import render

from toolkit.disks.cluster import ClusterIdentity, ClusterPartition
from toolkit.disks.endpoint import endpoint_from_disk
from toolkit.iscsi.sessions import Lun, Session
from tui.app import App
from tui.controllers.iscsi import attached_rows
from tui.views.iscsi import IscsiView
from tui.widgets.disk_summary import disk_column

IQN = "iqn.2026-11.lab.rtk:bdr1"
GUID = "41a4e9d6-472e-4777-ad08-953687110317"


def _identity(damage=None) -> ClusterIdentity:
    return ClusterIdentity("gpt", GUID, 512, [
        ClusterPartition(1, 1048576, 134217728, "e3c9e316-0b5c-4db8-817d-f92df00215ae",
                         "Microsoft reserved", f"{GUID}:1048576"),
        ClusterPartition(2, 135266304, 49_000_000_000, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
                         "Microsoft basic data", f"{GUID}:135266304", fstype="ntfs",
                         label="Volume2")], damage)


def _disks(damage=None):
    disks = guest_disks()
    sda = next(d for d in disks if d.name == "sda")
    sda.cluster = _identity(damage)
    return disks, sda


def test_attached_line_shows_the_csv_id(tmp_path):
    disks, _sda = _disks()
    sessions = [Session(1, "session1", IQN, "10.0.2.2", 3260, "LOGGED_IN", 2,
                        [Lun(1, "2:0:0:1", "/dev/sda", role="SOURCE")])]
    app = App(log_dir=str(tmp_path), list_disks=lambda: disks)
    app.push(IscsiView(app.iscsi, "iqn.x", attached_rows(sessions, disks)))
    screen = render(app)
    lines = screen.splitlines()
    at = next(i for i, line in enumerate(lines) if " SOURCE 1 " in line)
    assert f"{IQN} @ 10.0.2.2:3260" in lines[at + 1]
    assert lines[at + 2].strip() == f'CSV ID {GUID}:135266304 "Volume2"'  # not the MSR
    assert f"{GUID}:1048576" not in screen


def test_copy_column_shows_disk_guid_csv_id_and_damage():
    disks, sda = _disks(damage="GPT header damaged (header CRC wrong): read from the backup "
                               "header at LBA 65535")
    text = words("".join(x if isinstance(x, str) else x[1]
                         for x in disk_column("TARGET", endpoint_from_disk(sda))))
    assert f"GPT disk GUID {GUID}" in text
    assert f'CSV ID {GUID}:135266304 "Volume2"' in text
    assert "GPT header damaged" in text
