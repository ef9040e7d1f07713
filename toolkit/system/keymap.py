"""The VGA console's keyboard layout: the layouts by name (:data:`LAYOUTS`), applied at
once with ``ckbcomp | loadkeys`` (Debian's console-setup compiles the X keyboard data
of xkb-data into a console keymap; kbd's loadkeys loads it).

The Linux console has one keymap for all its virtual consoles, so loading it once, on
``/dev/tty0``, changes tty1 (the menu) and the Alt+F2.. shells together. A serial line
or an SSH session is untouched: the terminal at the other end has its own layout.

At boot ``rtk.keymap=NAME`` on the kernel command line chooses it (``rtk-keymap.service``
runs ``python -m toolkit.system.keymap boot``); live-config's ``keyboard-layouts=`` is
not read (the image removes live-config's keyboard component): one way, which is
checked like every ``rtk.`` parameter. The layout now is kept in ``/run/rtk/keymap.json``
for the menu (the Keyboard screen, the hint beside a CHAP secret), with the reason when
``rtk.keymap=`` did not take.

ckbcomp (a Perl script reading xkb-data) takes tens of seconds of CPU on a slow machine,
and the boot waits for ``rtk.keymap=``; so the image build compiles every layout once
(``python -m toolkit.system.keymap build DIR``, hook 0600) into :data:`COMPILED`, each
file headed by the ckbcomp command it came from. A layout is loaded from there only when
that header is the command the layout needs now; otherwise it is compiled again.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass

from toolkit.atomic import write_atomic
from toolkit.system import paths, tools

CKBCOMP = "ckbcomp"
LOADKEYS = "loadkeys"
CONSOLE = "/dev/tty0"  # the foreground virtual console: the keymap is the same for all
KEYBOARD_DEFAULTS = "/etc/default/keyboard"  # console-setup's own record of the layout
COMPILED = "/usr/share/rtk/keymaps"  # every layout compiled by the image build
LATIN1, LATIN2, LATIN5, LATIN9 = "ISO-8859-1", "ISO-8859-2", "ISO-8859-9", "ISO-8859-15"


class KeymapError(ValueError):
    """An unknown layout name, or a keymap that could not be made or loaded."""


@dataclass(frozen=True)
class Layout:
    """One layout: the ``name`` the menu and ``rtk.keymap=`` use, what it is, and the
    X keyboard layout and variant that ckbcomp compiles (``compose``: the charset of
    the dead-key table, as console-setup's setupcon picks it for that layout)."""

    name: str
    description: str
    xkb: str
    variant: str = ""
    compose: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "xkb": self.xkb,
                "variant": self.variant}


US = Layout("us", "English (US)", "us", compose=LATIN1)
LAYOUTS = (
    US,
    Layout("us-intl", "English (US, international, dead keys)", "us", "intl", LATIN1),
    Layout("uk", "English (UK)", "gb", compose=LATIN9),
    Layout("de", "German", "de", compose=LATIN9),
    Layout("de-nodeadkeys", "German, no dead keys", "de", "nodeadkeys", LATIN9),
    Layout("fr", "French (AZERTY)", "fr", compose=LATIN9),
    Layout("es", "Spanish", "es", compose=LATIN9),
    Layout("latam", "Spanish (Latin America)", "latam", compose=LATIN1),
    Layout("it", "Italian", "it", compose=LATIN9),
    Layout("ch", "Swiss German", "ch", compose=LATIN9),
    Layout("ch-fr", "Swiss French", "ch", "fr", LATIN9),
    Layout("be", "Belgian", "be", compose=LATIN9),
    Layout("nl", "Dutch", "nl", compose=LATIN9),
    Layout("se", "Swedish", "se", compose=LATIN9),
    Layout("no", "Norwegian", "no"),
    Layout("dk", "Danish", "dk", compose=LATIN9),
    Layout("fi", "Finnish", "fi", compose=LATIN9),
    Layout("pl", "Polish", "pl", compose=LATIN2),
    Layout("cz", "Czech", "cz", compose=LATIN2),
    Layout("hu", "Hungarian", "hu", compose=LATIN2),
    Layout("pt", "Portuguese", "pt", compose=LATIN9),
    Layout("br", "Portuguese (Brazil, ABNT2)", "br", compose=LATIN1),
    Layout("tr", "Turkish (Q)", "tr", compose=LATIN5),
    Layout("ca", "French (Canada)", "ca", compose=LATIN1),
    Layout("jp", "Japanese (106 keys)", "jp"),
)
BY_NAME = {lay.name: lay for lay in LAYOUTS}
ALIASES = {"gb": "uk", "en": "us", "de-ch": "ch", "ch-de": "ch", "fr-ch": "ch-fr",
           "cf": "ca", "qwerty": "us", "azerty": "fr", "qwertz": "de"}


def layout(name: str, where: str = "keyboard layout") -> Layout:
    """The layout called ``name`` (or one of its aliases: ``gb`` is ``uk``); KeymapError
    naming ``where`` and the known names otherwise."""
    key = name.strip().lower().replace("_", "-")
    found = BY_NAME.get(ALIASES.get(key, key))
    if found is None:
        shown = name if name.isprintable() and len(name) <= 40 else repr(name[:40])
        raise KeymapError(f"{where}={shown}: unknown layout; the layouts are "
                          f"{', '.join(BY_NAME)}")
    return found


def state_path() -> str:
    return os.path.join(paths.run_dir(), "keymap.json")


def current(path: str | None = None) -> Layout:
    """The layout the console has now: the one last applied, else ``us`` (the kernel's
    own keymap, which the image never changes)."""
    try:
        with open(path or state_path(), encoding="utf-8") as f:
            return BY_NAME.get(json.load(f).get("name"), US)
    except (OSError, ValueError, AttributeError):
        return US


def boot_error(path: str | None = None) -> str | None:
    """Why ``rtk.keymap=`` did not take at boot (the Keyboard screen says it), or None."""
    try:
        with open(path or state_path(), encoding="utf-8") as f:
            error = json.load(f).get("error")
    except (OSError, ValueError, AttributeError):
        return None
    return error if isinstance(error, str) else None


def hint(path: str | None = None) -> str:
    """One line for the place where a secret is typed on the VGA console."""
    lay = current(path)
    return (f"Keyboard layout of this console: {lay.name} ({lay.description}); "
            "a serial or SSH terminal types with its own.")


def ckbcomp_argv(lay: Layout) -> list[str]:
    return [CKBCOMP, "-model", "pc105", *(("-ccharmap", lay.compose) if lay.compose else ()),
            "-layout", lay.xkb, *(("-variant", lay.variant) if lay.variant else ())]


def _header(lay: Layout) -> str:
    """The first line of a compiled layout's file: what made it (a loadkeys comment)."""
    return "# rtk keymap " + " ".join(ckbcomp_argv(lay)) + "\n"


def compiled(lay: Layout, directory: str | None = None) -> str | None:
    """The keymap of ``lay`` compiled by the image build, or None (no such file, or one
    made by another command than ``lay`` needs now)."""
    path = os.path.join(directory or COMPILED, f"{lay.name}.kmap")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    head, _, body = text.partition("\n")
    return body if head + "\n" == _header(lay) and "keycode" in body else None


def build(directory: str) -> list[str]:
    """Compile every layout into ``directory`` (the image build): the problems, one line
    each, as :func:`check_all`; a layout with a problem gets no file."""
    os.makedirs(directory, exist_ok=True)
    problems = []
    for lay, text, problem in _compile_all():
        if problem:
            problems.append(problem)
        else:
            write_atomic(os.path.join(directory, f"{lay.name}.kmap"), _header(lay) + text)
    return problems


def _compile_all():
    """(layout, keymap text, problem or None) of every layout, compiled by ckbcomp now."""
    for lay in LAYOUTS:
        try:
            text = compile_keymap(lay, cached=False)
        except (KeymapError, tools.ToolError) as e:
            yield lay, "", f"{lay.name}: {e}"
            continue
        yield lay, text, _too_few_keys(lay, text)


def compile_keymap(lay: Layout, timeout: float = 60, cached: bool = True) -> str:
    """The console keymap of ``lay``, as ckbcomp writes it (text for loadkeys): the image
    build's copy when there is one for the same command (``cached``)."""
    text = compiled(lay) if cached else None
    if text is not None:
        return text
    p = tools.run(ckbcomp_argv(lay), timeout=timeout)
    if "keycode" not in p.stdout:
        raise KeymapError(f"ckbcomp made no keymap for {lay.name} (xkb {lay.xkb}"
                          f"{' ' + lay.variant if lay.variant else ''})")
    return p.stdout


def _loadkeys(text: str, args: list[str], timeout: float = 60) -> None:
    """``loadkeys ARGS FILE`` with the keymap ``text`` in a temporary file."""
    with tempfile.NamedTemporaryFile("w", prefix="rtk-keymap-", suffix=".kmap") as f:
        f.write(text)
        f.flush()
        tools.run([LOADKEYS, "-q", *args, f.name], timeout=timeout)


def _save(lay: Layout, set_by: str, defaults: str | None) -> None:
    os.makedirs(paths.run_dir(), exist_ok=True)
    write_atomic(state_path(), json.dumps({**lay.to_dict(), "set_by": set_by}) + "\n")
    if defaults and os.path.exists(defaults):  # so that a later setupcon agrees with us
        with open(defaults, encoding="utf-8") as f:
            lines = [ln for ln in f.read().splitlines()
                     if not ln.startswith(("XKBLAYOUT=", "XKBVARIANT="))]
        lines += [f'XKBLAYOUT="{lay.xkb}"', f'XKBVARIANT="{lay.variant}"']
        write_atomic(defaults, "\n".join(lines) + "\n")


def _save_error(error: str) -> None:
    """``rtk.keymap=`` failed: the layout the console keeps, and why, in the state file."""
    os.makedirs(paths.run_dir(), exist_ok=True)
    write_atomic(state_path(), json.dumps({**current().to_dict(), "set_by": "rtk.keymap=",
                                           "error": error}) + "\n")


def apply(name: str, *, set_by: str = "menu", console: str = CONSOLE,
          defaults: str | None = KEYBOARD_DEFAULTS) -> Layout:
    """Load the layout ``name`` into the console's keymap now (every virtual console);
    KeymapError (unknown name) or ToolError (ckbcomp or loadkeys failed, or no VGA
    console: ``console`` cannot be opened) otherwise, nothing changed then."""
    lay = layout(name)
    if not os.path.exists(console):
        raise KeymapError(f"this machine has no VGA console ({console}): nothing to set")
    _loadkeys(compile_keymap(lay), ["-C", console])
    _save(lay, set_by, defaults)
    return lay


def check_all() -> list[str]:
    """Every layout compiled (the image build fails on any problem; loading one is
    tested in the VM lab: ``loadkeys --parse`` would still open the build host's
    console): the problems, one line each."""
    return [problem for _, _, problem in _compile_all() if problem]


def _too_few_keys(lay: Layout, text: str) -> str | None:
    if len(re.findall(r"^keycode +\d+ =", text, re.M)) < 48:  # the main block's keys
        return f"{lay.name}: ckbcomp's keymap has too few keys"
    return None


def boot(cmdline: str | None = None) -> int:
    """``rtk-keymap.service``: apply ``rtk.keymap=`` of the kernel command line. Never
    fails the boot: a wrong name, or a layout that would not load, is said in the journal
    and kept in the state file (:func:`boot_error`: the Keyboard screen shows it)."""
    from toolkit.unattended.cmdline import Cmdline, CmdlineError, keymap_from

    try:
        cl = Cmdline(cmdline)
        name = keymap_from(cl)
    except (CmdlineError, OSError) as e:
        print(f"rtk-keymap: {e}; the console keeps the US layout", flush=True)
        _save_error(str(e))
        return 0
    if "keyboard-layouts" in cl:
        print("rtk-keymap: keyboard-layouts= (live-config) is not read here: "
              "use rtk.keymap=NAME", flush=True)
    if name is None:
        return 0
    try:
        lay = apply(name, set_by="rtk.keymap=")
    except (KeymapError, OSError) as e:  # a ToolError is an OSError
        print(f"rtk-keymap: rtk.keymap={name}: {e}", flush=True)
        _save_error(f"rtk.keymap={name}: {e}")
        return 0
    print(f"rtk-keymap: console keyboard layout {lay.name} ({lay.description})", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """``python -m toolkit.system.keymap boot|check|list|build DIR``."""
    if argv == ["boot"]:
        return boot()
    if len(argv) == 2 and argv[0] == "build":
        problems = build(argv[1])
        print("\n".join(problems) or f"{len(LAYOUTS)} keyboard layouts compiled into "
              f"{argv[1]}")
        return 1 if problems else 0
    if argv == ["check"]:
        problems = check_all()
        print("\n".join(problems) or f"{len(LAYOUTS)} keyboard layouts compile")
        return 1 if problems else 0
    if argv == ["list"]:
        print("\n".join(f"{lay.name:<14} {lay.description}" for lay in LAYOUTS))
        return 0
    print("usage: python -m toolkit.system.keymap boot|check|list|build DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
