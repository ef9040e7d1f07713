"""The console's keyboard layout: names and aliases, rtk.keymap= checked like every rtk.
parameter, what ckbcomp and loadkeys are asked (fakes on PATH that record their
arguments: the real ones would change this machine's console; the VM test loads real
layouts and types on the guest's VGA console), the state kept for the menu, the
Keyboard screen and the hint beside a CHAP secret."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import dialog, wait_worker, words
from screen import press, render

from toolkit import iscsi
from toolkit.iscsi.manager import Target
from toolkit.system import keymap, tools
from toolkit.unattended import plan
from toolkit.unattended.cmdline import Cmdline, CmdlineError, keymap_from
from tui.app import App
from tui.views.iscsi import IscsiView

pytestmark = pytest.mark.unit

FAKE = """#!/bin/sh
echo "$0 $*" >> "{record}"
case "$0" in
  *ckbcomp) [ -n "$FAIL_CKBCOMP" ] && {{ echo "Can not find file" >&2; exit 1; }}
            printf 'keymaps 0-127\\nkeycode 16 = +q\\n' ;;
  *loadkeys) cp "$4" "{record}.kmap"; [ -n "$FAIL_LOADKEYS" ] && {{
             echo "loadkeys: Couldn't get a file descriptor referring to the console" >&2;
             exit 1; }} ;;
esac
exit 0
"""


@pytest.fixture
def tools_on_path(tmp_path, monkeypatch, run_dir):
    """Fake ckbcomp and loadkeys first on PATH; the file that records their calls."""
    bindir, record = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    for name in ("ckbcomp", "loadkeys"):
        p = bindir / name
        p.write_text(FAKE.format(record=record))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    console = tmp_path / "tty0"
    console.write_text("")
    return record, str(console)


def test_names_aliases_and_unknown():
    assert keymap.layout("de").xkb == "de"
    assert keymap.layout(" DE ").name == "de"
    assert keymap.layout("gb").name == "uk" and keymap.layout("uk").xkb == "gb"
    assert keymap.layout("ch-fr").variant == "fr"
    for name in ("us", "uk", "de", "fr", "es", "it", "ch", "be", "nl", "se", "no", "dk",
                 "fi", "pl", "pt", "br", "jp"):
        assert keymap.layout(name).name == name
    with pytest.raises(keymap.KeymapError) as e:
        keymap.layout("klingon")
    assert str(e.value).startswith("keyboard layout=klingon: unknown layout; the layouts "
                                   "are us, us-intl, uk, de")
    with pytest.raises(keymap.KeymapError) as e:
        keymap.layout("x" * 500 + "\n")
    assert len(str(e.value)) < 400 and "\n" not in str(e.value)


def test_rtk_keymap_is_a_known_checked_parameter():
    assert keymap_from(Cmdline("quiet rtk.keymap=fr")) == "fr"
    assert keymap_from(Cmdline("quiet")) is None
    assert keymap_from(Cmdline("rtk.keymap=de rtk.keymap=gb")) == "uk"  # the last wins
    assert plan.from_cmdline(Cmdline("rtk.keymap=de")) == {}  # not unknown, not a plan value
    with pytest.raises(CmdlineError, match=r"^rtk.keymap=qwertyuiop: unknown layout"):
        plan.from_cmdline(Cmdline("rtk.mode=restore rtk.keymap=qwertyuiop"))
    with pytest.raises(CmdlineError, match="rtk.keymap needs a value"):
        keymap_from(Cmdline("rtk.keymap"))


def test_apply_compiles_loads_on_the_console_and_records(tools_on_path, tmp_path):
    record, console = tools_on_path
    defaults = tmp_path / "keyboard"
    defaults.write_text('XKBMODEL="pc105"\nXKBLAYOUT="us"\nXKBVARIANT=""\nBACKSPACE="guess"\n')
    assert keymap.current().name == "us"  # nothing applied yet: the kernel's own
    lay = keymap.apply("ch-fr", console=console, defaults=str(defaults))
    assert lay.name == "ch-fr"
    calls = record.read_text().splitlines()
    assert calls[0].endswith("ckbcomp -model pc105 -ccharmap ISO-8859-15 -layout ch "
                             "-variant fr")
    assert f"loadkeys -q -C {console} " in calls[1]
    assert (tmp_path / "calls.kmap").read_text() == "keymaps 0-127\nkeycode 16 = +q\n"
    assert keymap.current().name == "ch-fr"
    assert json.loads((tmp_path / "run" / "keymap.json").read_text())["set_by"] == "menu"
    text = defaults.read_text()
    assert 'XKBLAYOUT="ch"' in text and 'XKBVARIANT="fr"' in text
    assert 'XKBMODEL="pc105"' in text and text.count("XKBLAYOUT") == 1
    assert "ch-fr (Swiss French)" in keymap.hint()


@pytest.mark.parametrize("fail", ["FAIL_CKBCOMP", "FAIL_LOADKEYS"])
def test_a_failure_changes_nothing(tools_on_path, monkeypatch, tmp_path, fail):
    _record, console = tools_on_path
    keymap.apply("de", console=console, defaults=None)
    monkeypatch.setenv(fail, "1")
    with pytest.raises(tools.ToolError) as e:
        keymap.apply("fr", console=console, defaults=None)
    assert ("ckbcomp failed" if fail == "FAIL_CKBCOMP" else "loadkeys failed") in str(e.value)
    assert keymap.current().name == "de"


def test_no_vga_console_is_said_plainly(tools_on_path, tmp_path):
    with pytest.raises(keymap.KeymapError, match="this machine has no VGA console"):
        keymap.apply("de", console=str(tmp_path / "no-such-tty"), defaults=None)
    assert keymap.current().name == "us"


def test_boot_applies_rtk_keymap_and_says_keyboard_layouts_is_not_read(
        tools_on_path, capsys, monkeypatch):
    _record, console = tools_on_path
    monkeypatch.setattr(keymap, "CONSOLE", console)
    monkeypatch.setattr(keymap, "apply", lambda name, **kw: keymap.Layout(
        name, "German", "de"))
    assert keymap.boot("quiet keyboard-layouts=fr rtk.keymap=de") == 0
    out = capsys.readouterr().out
    assert "keyboard-layouts= (live-config) is not read here: use rtk.keymap=NAME" in out
    assert "console keyboard layout de (German)" in out
    assert keymap.boot("rtk.keymap=nope") == 0  # never fails the boot
    assert "rtk.keymap=nope: unknown layout" in capsys.readouterr().out


def test_keyboard_screen_marks_the_layout_and_applies_the_chosen_one(
        tools_on_path, log_dir, monkeypatch):
    _record, console = tools_on_path
    monkeypatch.setattr(keymap, "CONSOLE", console)
    monkeypatch.setattr(keymap, "KEYBOARD_DEFAULTS", None)
    app = App(log_dir=str(log_dir))
    assert "Keyboard" in render(app)
    screen = press(app, "k")
    assert "Keyboard layout" in screen.splitlines()[1]
    assert "● us" in screen and "Swiss German" in screen
    names = [lay.name for lay in keymap.LAYOUTS]
    # the focus starts on the layout in use; down to "fr", Enter
    screen = press(app, *["down"] * names.index("fr"), "enter")
    screen = wait_worker(app)
    assert "Every VGA console types with the fr layout now" in dialog(screen)
    screen = press(app, "enter")
    assert "● fr" in screen and "● us" not in screen
    assert keymap.current().name == "fr"


def test_where_a_secret_is_typed_the_layout_is_said(tools_on_path, log_dir, monkeypatch):
    _record, console = tools_on_path
    keymap.apply("de", console=console, defaults=None)
    app = App(log_dir=str(log_dir), list_disks=lambda: [])
    app.push(IscsiView(app.iscsi, "iqn.x", []))
    screen = words(press(app, "a"))  # discover: the discovery CHAP secret
    assert "Discovery CHAP secret" in screen
    assert "Keyboard layout of this console: de (German)" in screen
    def refused(*_a, **_kw):
        raise iscsi.IscsiAuthError("login failed")
    monkeypatch.setattr(iscsi, "attach", refused)
    app.iscsi.attach(Target("iqn.2026-11.lab:t1", "10.0.2.2", 3260), "TARGET")
    screen = words(wait_worker(app))  # the target asks for CHAP: the form comes
    assert "asks for CHAP" in screen and "Keyboard layout of this console: de (German)" in screen


def test_a_wrong_rtk_keymap_in_a_normal_boot_is_on_the_keyboard_screen(
        tools_on_path, log_dir, monkeypatch, capsys):
    """Not only in the journal: the Keyboard screen says why the console kept the US
    layout, until a layout is chosen there."""
    _record, console = tools_on_path
    monkeypatch.setattr(keymap, "KEYBOARD_DEFAULTS", None)
    assert keymap.boot("quiet rtk.keymap=xx") == 0
    assert keymap.current().name == "us"
    assert keymap.boot_error().startswith("rtk.keymap=xx: unknown layout; the layouts are us,")
    app = App(log_dir=str(log_dir))
    screen = words(press(app, "k"))
    assert "At boot: rtk.keymap=xx: unknown layout; the layouts are us," in screen, screen
    assert "the console kept the us layout." in screen and "● us" in screen
    monkeypatch.setenv("FAIL_CKBCOMP", "1")  # a known name whose keymap cannot be made
    assert keymap.boot("rtk.keymap=de") == 0
    assert keymap.boot_error().startswith("rtk.keymap=de: ckbcomp failed")
    monkeypatch.delenv("FAIL_CKBCOMP")
    app.keyboard._apply = lambda name: keymap.apply(name, console=console, defaults=None)
    screen = press(app, "esc", "k", "enter")  # Enter: the layout in focus (us)
    wait_worker(app)
    screen = press(app, "enter")
    assert "At boot" not in screen and keymap.boot_error() is None
    assert "rtk.keymap=xx: unknown layout" in capsys.readouterr().out  # and the journal


def test_the_image_builds_compiled_layouts_and_a_stale_one_is_compiled_again(
        tools_on_path, monkeypatch, tmp_path):
    record, console = tools_on_path
    store = tmp_path / "keymaps"
    assert keymap.build(str(store)) == [f"{lay.name}: ckbcomp's keymap has too few keys"
                                        for lay in keymap.LAYOUTS]  # the fake's 1 key
    assert not list(store.iterdir())  # a layout with a problem gets no file
    monkeypatch.setattr(keymap, "_too_few_keys", lambda lay, text: None)
    assert keymap.build(str(store)) == []
    de = (store / "de.kmap").read_text()
    assert de.startswith("# rtk keymap ckbcomp -model pc105 -ccharmap ISO-8859-15 -layout de\n")
    monkeypatch.setattr(keymap, "COMPILED", str(store))
    record.write_text("")
    keymap.apply("de", console=console, defaults=None)
    assert "ckbcomp" not in record.read_text()  # loaded from the image's file
    assert (tmp_path / "calls.kmap").read_text() == de.partition("\n")[2]
    # a file made by another command (here: fr's, under de's name) is not used
    (store / "de.kmap").write_text((store / "fr.kmap").read_text())
    keymap.apply("de", console=console, defaults=None)
    assert "ckbcomp -model pc105 -ccharmap ISO-8859-15 -layout de" in record.read_text()
