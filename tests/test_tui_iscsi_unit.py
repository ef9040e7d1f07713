"""iSCSI Manager screens without a session layer: the attached list built from
sessions and the guest's replayed disks, the detach confirmation, the forms'
validation. (Real discovery, CHAP and login: tests/test_copy_vm.py.)"""

from __future__ import annotations

from conftest import guest_disks
from screen import press, render

from toolkit.iscsi.sessions import Lun, Session
from tui.app import App
from tui.controllers.iscsi import attached_rows
from tui.views.iscsi import IscsiView

IQN = "iqn.2026-11.lab.rtk:bdr1"


def _sessions():
    return [Session(1, "session1", IQN, "10.0.2.2", 3260, "LOGGED_IN", 2, [
        Lun(0, "2:0:0:0", None),  # tgt's controller LUN: no disk, not listed
        Lun(1, "2:0:0:1", "/dev/sda", role="SOURCE")])]


def test_attached_rows_number_roles_and_show_volumes():
    rows = attached_rows(_sessions(), guest_disks())
    assert len(rows) == 1
    r = rows[0]
    assert (r.role, r.number, r.device, r.lun, r.size) == ("SOURCE", 1, "/dev/sda", 1, 33554432)
    assert r.volumes == 'vfat "ESP", ntfs "Volume2"'


def test_attached_list_screen_and_detach_confirmation(tmp_path):
    app = App(log_dir=str(tmp_path), list_disks=lambda: guest_disks())
    rows = attached_rows(_sessions(), guest_disks())
    app.push(IscsiView(app.iscsi, "iqn.2005-03.org.open-iscsi:abc123", rows,
                       messages=["the portal advertised 127.0.0.1:3260: using 10.0.2.2:3260"]))
    screen = render(app)
    assert "Initiator name: iqn.2005-03.org.open-iscsi:abc123" in screen
    assert "using 10.0.2.2:3260" in screen
    assert "Attached LUNs (1)" in screen
    assert ' SOURCE 1   /dev/sda    LUN 1    33.6 MB  vfat "ESP", ntfs "Volume2"' in screen
    assert f"{IQN} @ 10.0.2.2:3260" in screen
    screen = press(app, "x")
    assert f"Log out of {IQN}" in screen and "/dev/sda" in screen
    screen = press(app, "esc")
    assert "Detach?" not in screen


def test_discover_form_needs_an_address(tmp_path):
    app = App(log_dir=str(tmp_path), list_disks=lambda: guest_disks())
    app.push(IscsiView(app.iscsi, "iqn.x", []))
    screen = press(app, "a")
    assert "Portal address" in screen and "3260" in screen
    screen = press(app, "enter")
    assert "Type the portal's address." in screen
    screen = press(app, *"10.0.2.2:99999", "enter")
    assert "Discovering" not in screen  # a bad port is refused before anything runs
