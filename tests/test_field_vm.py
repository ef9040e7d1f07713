"""Working in the field, in one boot of the live system: the console's keyboard layout
and remote access over SSH.

The guest boots the ISO's kernel with ``rtk.keymap=de``, a public key inline
(``rtk.ssh=TYPE:BASE64``) and a second one from a URL (``rtk.ssh_keys=``), and its
SSH port forwarded to the host's 127.0.0.1 only. Keys are typed on the guest's VGA
keyboard by QEMU's monitor (``sendkey``: the key's position, as on a real keyboard)
into a shell on a virtual console; the serial line carries the menu and a shell.

a. rtk.keymap=de: the key marked Y types "z" on the VGA console;
b. the menu's Keyboard screen chooses fr: the key Q types "a" (AZERTY), at once;
c. SSH with the inline key reaches the menu (read from a pty, 80x24), the host key is
   the one the guest shows, every console's header says who is connected; Ctrl-C there
   is a key; the link dropped, the next login finds the same remote menu (tmux);
d. the key from the URL (http://, the file's SHA-256 pinned) logs in too; another key,
   or none, is refused;
e. the menu's temporary password logs in, a wrong one is refused, and it is in no log;
f. turned off from the menu: sshd gone, the remote menu ended, root's password locked
   again.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from vmlab.http import HttpServer
from vmlab.qemu import Guest
from vmlab.ssh import SshTerminal, askpass_env, key_options, password_options, ssh_argv

from toolkit.system import keymap

pytestmark = pytest.mark.vm

MENU = r"Recovery Toolkit .*\n.*Main menu(?s:.*)F10 power"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_append(netboot: Path) -> str:
    """The live system's kernel parameters, as the build wrote them (PXELINUX example)."""
    text = (netboot / "pxelinux.cfg" / "default").read_text()
    line = re.search(r"^\s*APPEND (.*)$", text, re.M).group(1)
    return " ".join(w for w in line.split() if not w.startswith(("initrd=", "fetch=")))


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f",
                    str(path)], check=True)
    return path


def inline(pub: Path) -> str:
    kind, data = pub.read_text().split()[:2]
    return f"{kind}:{data.replace('+', '-').replace('/', '_').rstrip('=')}"  # URL-safe


@pytest.fixture(scope="module")
def field(tmp_path_factory, need_root, iso, netboot):
    work = tmp_path_factory.mktemp("field")
    keys = {name: keygen(work / name) for name in ("inline", "url", "stranger")}
    www = work / "www"
    www.mkdir()
    (www / "keys").write_text("# the remote team\n" + (work / "url.pub").read_text())
    http = HttpServer(www)
    port = free_port()
    pin = hashlib.sha256((www / "keys").read_bytes()).hexdigest()  # http:// needs it
    params = (f"rtk.keymap=de rtk.ssh={inline(work / 'inline.pub')} "
              f"rtk.ssh_keys={http.url('keys', host='10.0.2.2')}#sha256={pin}")
    guest = Guest(work, iso, kernel=netboot / "vmlinuz", initrd=netboot / "initrd.img",
                  append=f"{base_append(netboot)} {params}", name="field",
                  hostfwd=((port, 22),))
    try:
        guest.wait_menu(timeout=600)
        print(f"menu after {guest.elapsed():.0f} s")
        yield {"guest": guest, "work": work, "keys": keys, "port": port,
               "known": work / "known_hosts"}
    finally:
        guest.stop()
        http.stop()


def typed_on_vga(guest: Guest, *keys: str) -> str:
    """What ``keys`` (QEMU key names) type into a shell's ``read`` on virtual console 7."""
    guest.run("rm -f /tmp/typed; openvt -c 7 -s -f -- bash -c 'read -r line; "
              "printf %s \"$line\" > /tmp/typed'; sleep 3")
    for key in (*keys, "ret"):
        guest.monitor(f"sendkey {key}")
        time.sleep(0.3)
    out = guest.run("for i in $(seq 20); do [ -e /tmp/typed ] && break; sleep 0.5; done; "
                    "cat /tmp/typed; chvt 1")
    return out.strip()


def in_shell(guest: Guest, fn):
    """``fn()`` in a shell opened from the serial menu, then back to the menu."""
    guest.open_shell()
    try:
        return fn()
    finally:
        guest.close_shell()
        guest.wait_menu(timeout=60)


def test_a_rtk_keymap_de_on_the_kernel_command_line(field):
    g = field["guest"]

    def check():
        state = json.loads(g.run("cat /run/rtk/keymap.json"))
        assert (state["name"], state["set_by"]) == ("de", "rtk.keymap=")
        assert typed_on_vga(g, "y", "z") == "zy"  # QWERTZ
        assert g.run("systemctl is-enabled keyboard-setup.service || true").strip() == "masked"
    in_shell(g, check)


def test_b_the_keyboard_screen_sets_a_layout_at_once(field):
    g, con = field["guest"], field["guest"].console
    con.key("k")
    con.wait_screen(r"Keyboard layout(?s:.*)● de")
    names = [lay.name for lay in keymap.LAYOUTS]
    con.key(*["down"] * (names.index("fr") - names.index("de")), "enter")
    con.wait_screen(r"Every VGA console types with the fr layout now", timeout=120)
    con.key("enter", "esc")
    g.wait_menu(timeout=30)
    assert in_shell(g, lambda: typed_on_vga(g, "q", "a", "w")) == "aqz"  # AZERTY


def _login_with_key(field, key: str) -> SshTerminal:
    argv = ssh_argv(field["port"], field["known"], *key_options(field["keys"][key]))
    return SshTerminal(argv, log=field["work"] / f"ssh-{key}.log")


def test_c_ssh_with_the_inline_key_reaches_the_menu(field):
    g = field["guest"]
    term = _login_with_key(field, "inline")
    try:
        screen = term.wait_screen(MENU, timeout=120)
        assert "Keyboard" in screen and "Remote access" in screen
        screen = term.wait_screen(r"SSH ON: 1 connected from 10\.0\.2\.2", timeout=30)
        g.console.wait_screen(r"SSH ON: 1 connected from 10\.0\.2\.2", timeout=30)
        term.send("a")  # Remote access, seen from the remote session itself
        screen = term.wait_screen(r"Connected now:\s*\n\s*root from 10\.0\.2\.2", timeout=30)
        status = in_shell(g, lambda: json.loads(g.run("cat /run/rtk/remote.json")))
        term.send("\x1b")  # back to the main menu: the next login finds it there
        term.wait_screen(MENU, timeout=30)
    finally:
        term.close()
    assert status["enabled"] and not status["password"]
    assert len(status["keys"]) == 2  # rtk.ssh= and rtk.ssh_keys=
    ed25519 = next(h for h in status["host_keys"] if h["type"] == "ssh-ed25519")
    known = subprocess.run(["ssh-keygen", "-lf", str(field["known"])], capture_output=True,
                           text=True, check=True).stdout
    assert ed25519["fingerprint"] in known and ed25519["fingerprint"] in screen


def test_c2_ctrl_c_is_a_key_and_a_dropped_link_leaves_the_menu(field):
    g = field["guest"]
    term = _login_with_key(field, "inline")
    try:
        term.wait_screen(MENU, timeout=120)
        term.send("\x03")  # Ctrl-C: before, the session ended
        time.sleep(3)
        term.send("k")
        term.wait_screen(r"Keyboard layout", timeout=30)
        term.proc.kill()  # the link drops: the client is gone without a goodbye
        term.proc.wait(30)
    finally:
        term.close()
    again = _login_with_key(field, "inline")
    try:
        again.wait_screen(r"Keyboard layout", timeout=120)  # the same menu, where it was
        again.send("\x1b")
        again.wait_screen(MENU, timeout=30)
    finally:
        again.close()
    sessions = in_shell(g, lambda: g.run("tmux -S /run/rtk/tmux-remote.sock list-sessions "
                                         "-F '#{session_name}'", check=False))
    assert sessions.split() == ["menu"], sessions


def test_d_the_url_key_logs_in_other_keys_do_not(field):
    term = _login_with_key(field, "url")
    try:
        term.wait_screen(MENU, timeout=120)
    finally:
        term.close()
    port, known = field["port"], field["known"]
    for options in (key_options(field["keys"]["stranger"]),
                    ["-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no"]):
        p = subprocess.run([*ssh_argv(port, known, *options), "true"], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr


def _askpass(path: Path, password: str) -> Path:
    path.write_text(f"#!/bin/sh\necho '{password}'\n")
    path.chmod(0o700)
    return path


def test_e_the_temporary_password(field):
    g, con, work = field["guest"], field["guest"].console, field["work"]
    con.key("a")
    con.wait_screen(r"Remote access is ON")
    con.key("o")
    screen = con.wait_screen(r"Temporary password: [a-z0-9-]{19}", timeout=180)
    password = re.search(r"Temporary password: ([a-z0-9-]{19})", screen).group(1)
    con.key("enter", "esc")
    g.wait_menu(timeout=30)
    argv = ssh_argv(field["port"], field["known"], *password_options())
    term = SshTerminal(argv, env=askpass_env(_askpass(work / "askpass", password)))
    try:
        term.wait_screen(MENU, timeout=120)
    finally:
        term.close()
    bad = subprocess.run(argv[:1] + argv[2:] + ["true"], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL,
                         env=askpass_env(_askpass(work / "wrong", "wrong-" + password)))
    assert bad.returncode == 255 and "Permission denied" in bad.stderr, bad.stderr

    def secrets_nowhere():
        found = g.run(f"journalctl -b --no-pager | grep -c -F '{password}'; "
                      f"grep -r -l -F '{password}' /var/log /run/rtk /etc/ssh 2>/dev/null",
                      check=False)
        return found.split()
    assert in_shell(g, secrets_nowhere) == ["0"]


def test_f_turned_off_from_the_menu(field):
    g, con = field["guest"], field["guest"].console
    con.key("a")
    con.wait_screen(r"Remote access is ON")
    con.key("x")
    con.wait_screen(r"Turn remote access off\?")
    con.key("right", "enter")
    con.wait_screen(r"Remote access is OFF\.", timeout=120)
    con.key("esc")
    g.wait_menu(timeout=30)
    p = subprocess.run([*ssh_argv(field["port"], field["known"],
                                  *key_options(field["keys"]["inline"])), "true"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 255 and "Permission denied" not in p.stderr, p.stderr

    def facts():
        return g.run("systemctl is-active rtk-sshd.service; getent shadow root | cut -d: -f2; "
                     "systemctl is-enabled ssh.service ssh.socket; "
                     "ls /run/live/rootfs/*/etc/ssh/ | grep -c ssh_host_", check=False).split()
    assert in_shell(g, facts) == ["inactive", "*", "masked", "masked", "0"]
    menu = in_shell(g, lambda: g.run("tmux -S /run/rtk/tmux-remote.sock has-session; "
                                     "echo $?", check=False))
    assert menu.split()[-1] != "0", menu  # the remote menu ended too
