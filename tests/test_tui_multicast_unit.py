"""The menu's multicast form: what a wrong field says, and the udpcast:// it builds (no
network: nothing is received until a restore starts, tests/test_tui_multicast_host.py)."""

from __future__ import annotations

import pytest
from conftest import guest_disks, type_text, words
from screen import press, render

from toolkit.restore import multicast
from tui.app import App
from tui.controllers.restore import multicast_location

H = "ab" * 32


@pytest.fixture
def app(tmp_path):
    return App(log_dir=str(tmp_path), list_disks=lambda: guest_disks())


def form(app) -> str:
    return press(app, "b", "down", "down", "down", "enter")


def fill(app, interface="", port=None, sha="", wait=None) -> str:
    """Type into the form's fields (``None``: keep the default), then Enter."""
    type_text(app, interface)
    press(app, "down")
    if port is not None:
        press(app, "end", *["backspace"] * 6)
        type_text(app, port)
    press(app, "down")
    type_text(app, sha)
    press(app, "down")
    if wait is not None:
        press(app, "end", *["backspace"] * 6)
        type_text(app, wait)
    return words(press(app, "enter"))


def test_the_source_screen_offers_multicast(app):
    screen = press(app, "b")
    assert "Multicast stream (udpcast)" in screen and "rtk fleet serve" in screen, screen
    screen = words(form(app))
    assert "Restore: multicast stream (udpcast)" in screen, screen
    for label in ("Interface (NIC)", "Port base 9000", "Image SHA-256",
                  "Wait for sender (s) 600"):
        assert label in screen, screen


@pytest.mark.parametrize("fields, says", [
    ({}, "Type the image's SHA-256 (rtk fleet serve prints it): a live stream is read only "
         "once"),
    ({"sha": "12"}, "The SHA-256 is 64 hexadecimal digits"),
    ({"sha": H, "port": "9001"}, "The port base is even, from 1024 to 65534"),
    ({"sha": H, "port": "80"}, "The port base is even, from 1024 to 65534"),
    ({"sha": H, "wait": "0"}, "Wait for the sender: seconds, 1 to 86400."),
    ({"sha": H, "interface": "nosuch0"}, "No NIC named nosuch0 here"),
])
def test_a_wrong_field_says_what_is_wrong_and_starts_nothing(app, fields, says):
    form(app)
    screen = fill(app, **fields)
    assert says in screen, screen
    assert "multicast stream (udpcast)" in screen  # still the form
    assert app.restore.worker is None and app.restore.plan is None
    assert not app.restore.location


def test_the_form_builds_the_location_and_keeps_it(app):
    form(app)
    screen = fill(app, sha=H.upper(), port="9002", wait="30")
    assert "choose the TARGET" in screen, screen
    loc = app.restore.location
    assert loc == f"udpcast://9002?sha256={H}&start_timeout=30"
    spec = multicast.parse(loc)
    assert (spec.portbase, spec.sha256, spec.start_timeout, spec.interface) == (9002, H, 30,
                                                                               None)
    assert app.restore.inspection.info.size is None  # nothing read: a live stream
    press(app, "esc")  # back on the form, then from the source screen again: kept
    screen = words(press(app, "esc", "down", "down", "down", "enter"))
    assert "Port base 9002" in screen and "Wait for sender (s) 30" in screen, screen
    assert app.stack[-1].sha256.edit_text == H
    assert "multicast stream" in render(app)


def test_multicast_location():
    assert multicast_location("eth1", "9000", H, "600", ["eth1"]) == (
        f"udpcast://eth1@9000?sha256={H}&start_timeout=600", None)
    loc, problem = multicast_location("eth1", "9000", H, "600", ["ens3"])
    assert loc == "" and problem.startswith("No NIC named eth1 here (the NICs: ens3)")
    assert multicast_location("", "x", H, "600", [])[1].startswith("The port base")


@pytest.mark.parametrize("port, wait", [("²", None), (None, "²"), ("9" * 4400, None)],
                         ids=["port-superscript", "wait-superscript", "port-4400-digits"])
def test_odd_digits_are_a_plain_error_not_a_traceback(app, port, wait):
    # "²" (AltGr+2 on a German keymap) is a digit to str.isdigit(), not to int()
    form(app)
    screen = fill(app, port=port, sha=H, wait=wait)
    assert "Traceback" not in screen  # was: ValueError out of the menu's loop
    want = "The port base is even" if port else "Wait for the sender: seconds"
    if len(port or "") < 100:  # (4400 digits push the error off the screen)
        assert want in screen, screen
    problem = multicast_location("", port or "9000", H, wait or "600", [])[1]
    assert problem.startswith(want)


def test_the_size_field_feeds_size():
    loc, problem = multicast_location("", "9000", H, "600", [], size="123456")
    assert problem is None and multicast.parse(loc).size == 123456
    assert multicast.parse(multicast_location("", "9000", H, "600", [])[0]).size is None
    for bad in ("12x", "²", "0", "9" * 30):
        loc, problem = multicast_location("", "9000", H, "600", [], size=bad)
        assert loc == "" and problem.startswith("The image size is its size in bytes")
