"""Network screens on this host: the real NIC list, and bad input refused with
a clear message before anything is applied (applying is tested in the guest,
tests/test_net_vm.py)."""

from __future__ import annotations

from conftest import wait_worker
from screen import press

from toolkit.net.nics import list_nics
from tui.app import App
from tui.views.network import NicForm


def test_nic_list_and_refused_settings(tmp_path):
    nics = list_nics()
    assert nics, "this host has network interfaces"
    app = App(log_dir=str(tmp_path))
    press(app, "n")
    screen = wait_worker(app, 30)
    assert "Network" in screen.splitlines()[1]
    first = nics[0]
    assert first.name in screen and f"MTU {first.mtu}" in screen
    screen = press(app, "enter")
    assert isinstance(app.stack[-1], NicForm)
    assert f"Network: {first.name}" in screen
    form = app.stack[-1]
    form.static.set_state(True)
    form.address.set_edit_text("10.0.2.50/33")
    screen = press(app, "down", "enter")  # Enter in a field applies
    assert "bad prefix length /33 in '10.0.2.50/33'" in screen
    assert app.worker is None or not app.worker.is_alive()
    form.address.set_edit_text("10.0.2.50/24")
    form.mtu.set_edit_text("10000")
    screen = press(app, "enter")
    assert "MTU 10000 is out of range 576..9216" in screen
    form.mtu.set_edit_text("jumbo")
    screen = press(app, "enter")
    assert "MTU must be a number, not 'jumbo'" in screen
    assert isinstance(app.stack[-1], NicForm)  # still on the form: nothing applied
