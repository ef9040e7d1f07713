"""Remote access over SSH without sshd: the keys of rtk.ssh= and authorized_keys files,
their fingerprints (as ssh-keygen prints them), the sshd configuration, turning it on
and off (files, modes, status; sshd's start and root's password are recorded by stand-
ins: the real ones would change this machine), who is connected, the header, the
reports, the Remote access screen, and the temporary password never written anywhere
(nor kept on a screen once another console made a new one); a change that fails leaves
sshd stopped and nothing to log in with. Real sshd, host keys and logins:
tests/test_field_vm.py; ssh-keygen, keys over HTTPS: test_remote_host; the remote menu in
tmux, Ctrl-C: test_remote_console_host."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
from types import SimpleNamespace

import pytest
from conftest import dialog, wait_worker, words
from screen import press, render

from toolkit.system import remote, remote_boot, remote_keys, tools
from toolkit.system.remote_keys import KeyRefused, parse_authorized_keys, parse_inline
from toolkit.unattended import plan
from toolkit.unattended.cmdline import Cmdline, CmdlineError, ssh_from
from toolkit.unattended.reporter import RunReporter
from tui.app import App

pytestmark = pytest.mark.unit

# A real key and its fingerprint as `ssh-keygen -lf` printed it (OpenSSH 9.2)
PUB = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhDQWTOfrnOJ0endMB9Pza3bI8/Kf5iP943TTzvI4va "
       "tech@laptop")
FPR = "SHA256:50z6KOFlpJSQ8fRIax4rm39gaEwXURD5t8q6XwB6Ht8"  # 256 ... tech@laptop (ED25519)
TYPE, B64 = PUB.split()[:2]


def blob(kind: str, *fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in (kind.encode(), *fields))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rsa(nbytes: int) -> str:
    """The base64 of a made-up RSA public key whose modulus has ``nbytes`` bytes."""
    return b64(blob("ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc5" * nbytes))


def ed25519(seed: int) -> str:
    """A made-up ed25519 public key line (32 bytes): fine for everything but a login."""
    return f"ssh-ed25519 {b64(blob('ssh-ed25519', bytes([seed]) * 32))} k{seed}"


def test_the_command_line_forms_of_a_key():
    urlsafe = B64.replace("+", "-").replace("/", "_").rstrip("=")
    for value in (f"{TYPE}:{B64}", f"{TYPE}:{urlsafe}", PUB.replace(" ", "%20")):
        keys = ssh_from(Cmdline(f"quiet rtk.ssh={value}"))["keys"]
        assert [k.fingerprint for k in keys] == [FPR], value
    two = ssh_from(Cmdline(f"rtk.ssh={TYPE}:{B64},{ed25519(1).split()[0]}:"
                           f"{ed25519(1).split()[1]} rtk.ssh={ed25519(2).replace(' ', '%20')}"))
    assert len(two["keys"]) == 3 and two["keys"][2].comment == "k2"
    assert two["keys"][0].line() == f"{TYPE} {B64}"
    assert ssh_from(Cmdline("quiet")) == {}
    assert ssh_from(Cmdline("rtk.ssh_keys=https://10.0.0.5/keys"))["keys_url"] == \
        "https://10.0.0.5/keys"


@pytest.mark.parametrize("value, says", [
    ("ssh-dss:AAAAB3NzaC1kc3MAAACBAP", "a DSA key (ssh-dss): OpenSSH no longer accepts"),
    ("ssh-foo:AAAA", "'ssh-foo' is not a public key type"),
    ("ssh-ed25519:@@not-base64", "is not valid base64 of a public key"),
    ("ssh-ed25519:AAAA", "is not valid base64 of a public key"),  # truncated
    (f"ssh-rsa:{B64}", "the key data is of type 'ssh-ed25519', not ssh-rsa"),
    (f"ssh-rsa:{rsa(128)}",
     "an RSA key of 1024 bits: at least 2048 are needed"),
    (B64, "is not TYPE:BASE64"),
    ("", "no key given"),
])
def test_keys_that_are_refused_name_rtk_ssh(value, says):
    with pytest.raises(CmdlineError) as e:
        plan.from_cmdline(Cmdline(f"rtk.mode=restore rtk.ssh={value}"))
    assert str(e.value).startswith("rtk.ssh: ") and says in str(e.value)


def test_a_long_rsa_key_is_taken():
    key = parse_inline(f"ssh-rsa:{rsa(256)}")[0]  # 2048 bits
    assert key.kind == "ssh-rsa"


def test_the_keys_url_is_checked_and_never_shown():
    for bad in ("ftp://10.0.0.5/keys?token=s3cr3t", "https://?token=s3cr3t",
                "10.0.0.5/keys?token=s3cr3t", "http://[::1/k?token=s3cr3t"):
        with pytest.raises(CmdlineError) as e:
            plan.from_cmdline(Cmdline(f"rtk.ssh_keys={bad}"))
        assert "rtk.ssh_keys: expected an https:// URL of an authorized_keys file" in \
            str(e.value)
        assert "s3cr3t" not in str(e.value)
    assert plan.from_cmdline(Cmdline(f"rtk.ssh={TYPE}:{B64} rtk.ssh_keys=https://h/k")) == {}


def test_a_keys_url_is_https_or_pins_the_file():
    """Over plain HTTP anyone on the way could hand over their own keys (root logins):
    http:// only with the file's SHA-256, which the fetch checks."""
    pin = "ab" * 32
    for bad, says in (("http://10.0.0.5/keys?token=s3cr3t", "an http:// URL needs the file's "
                       "SHA-256 at its end (http://HOST/PATH#sha256=HEX"),
                      (f"http://10.0.0.5/keys#sha256={pin[:-1]}", "expected an https:// URL"),
                      ("https://10.0.0.5/keys#sha1=00", "expected an https:// URL")):
        with pytest.raises(CmdlineError) as e:
            plan.from_cmdline(Cmdline(f"rtk.ssh_keys={bad}"))
        assert says in str(e.value) and "s3cr3t" not in str(e.value)
    for good in (f"http://10.0.0.5/keys#sha256={pin}", "https://10.0.0.5/keys",
                 f"https://10.0.0.5/k#sha256={pin.upper()}"):
        assert ssh_from(Cmdline(f"rtk.ssh_keys={good}"))["keys_url"] == good
    assert remote_keys.url_pin(f"http://h/k#sha256={pin.upper()}") == ("http://h/k", pin)


def test_authorized_keys_files():
    text = f"# the team\n\n{PUB}\n  {ed25519(3)}\n"
    keys = parse_authorized_keys(text, "keys")
    assert [k.fingerprint for k in keys][0] == FPR and keys[1].comment == "k3"
    with pytest.raises(KeyRefused, match=r"keys, line 2: key options \(command=\"x\"\) are "
                                         "not supported"):
        parse_authorized_keys(f"{PUB}\ncommand=\"x\" {PUB}\n", "keys")
    with pytest.raises(KeyRefused, match="keys: the file holds no public key"):
        parse_authorized_keys("# nothing\n", "keys")
    with pytest.raises(KeyRefused, match="keys, line 1: expected TYPE BASE64"):
        parse_authorized_keys("ssh-ed25519\n", "keys")


def test_sshd_config_keys_only_and_with_the_password():
    keys_only = remote.sshd_config(password=False, keys_file="/run/rtk/ssh/authorized_keys",
                                   host_keys=["/etc/ssh/ssh_host_ed25519_key"])
    lines = keys_only.splitlines()
    for line in ("PermitRootLogin prohibit-password", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "PermitEmptyPasswords no",
                 "AllowUsers root", "DisableForwarding yes", "PermitTunnel no",
                 "ForceCommand /usr/local/sbin/rtk-remote-login",
                 "AuthorizedKeysFile /run/rtk/ssh/authorized_keys",
                 "HostKey /etc/ssh/ssh_host_ed25519_key"):
        assert line in lines
    assert not any(line.startswith("Subsystem") for line in lines)  # no sftp, no scp
    with_password = remote.sshd_config(password=True, keys_file="k", host_keys=[])
    assert "PermitRootLogin yes" in with_password.splitlines()
    assert "PasswordAuthentication yes" in with_password.splitlines()
    assert "PermitEmptyPasswords no" in with_password.splitlines()


@pytest.fixture
def system(tmp_path, monkeypatch, run_dir):
    """Host keys in a directory of the test; sshd's start/stop and root's password
    recorded, not done."""
    root = tmp_path / "host"
    (root / "etc" / "ssh").mkdir(parents=True)
    for kind, seed in (("rsa", 7), ("ed25519", 8)):
        key = root / "etc" / "ssh" / f"ssh_host_{kind}_key"
        key.write_text("private\n")
        line = ed25519(seed) if kind == "ed25519" else f"ssh-rsa {rsa(384)}"
        (root / "etc" / "ssh" / f"ssh_host_{kind}_key.pub").write_text(line + " root@rtk\n")
    calls: list = []
    sys = SimpleNamespace(calls=calls, run=run_dir, root=root, running=False, menu_ended=0)

    def start():
        calls.append("start")
        sys.running = True

    def stop():
        calls.append("stop")
        sys.running = False

    def end_menu():
        sys.menu_ended += 1

    monkeypatch.setattr(remote, "HOST_ROOT", str(root))
    monkeypatch.setattr(remote, "start_sshd", start)
    monkeypatch.setattr(remote, "stop_sshd", stop)
    monkeypatch.setattr(remote, "sshd_running", lambda: sys.running)
    monkeypatch.setattr(remote, "end_remote_menu", end_menu)
    monkeypatch.setattr(remote, "set_root_password", lambda pw: calls.append(("password", pw)))
    return sys


def _everything_written(run) -> str:
    return "".join(p.read_text() for p in run.rglob("*") if p.is_file())


def test_on_with_keys_then_a_password_then_off(system):
    st, password = remote.enable(parse_inline(f"{TYPE}:{B64}"), source="kernel command line")
    assert password is None and system.calls == ["start"]
    assert st.enabled and not st.password
    assert [h["name"] for h in st.host_keys] == ["ED25519", "RSA"]  # the order ssh shows
    ssh = system.run / "ssh"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    for name in ("authorized_keys", "sshd_config"):
        assert stat.S_IMODE((ssh / name).stat().st_mode) == 0o600
    assert (ssh / "authorized_keys").read_text() == f"{TYPE} {B64}\n"
    assert "PasswordAuthentication no" in (ssh / "sshd_config").read_text()
    saved = json.loads((system.run / "remote.json").read_text())
    assert saved["keys"] == [{"type": TYPE, "fingerprint": FPR, "comment": "",
                              "from": "kernel command line"}]
    # the menu adds the temporary password: the key stays, password login on
    st, password = remote.enable(password=True, source="menu")
    assert len(password) == 19 and password.count("-") == 3
    assert system.calls[-2:] == [("password", password), "start"]
    assert st.password and [k["fingerprint"] for k in st.keys] == [FPR]
    assert "PasswordAuthentication yes" in (ssh / "sshd_config").read_text()
    assert password not in _everything_written(system.run)  # shown, never kept
    assert remote.header(remote.status(), []) == "SSH ON, nobody connected"
    # off: sshd stopped, root locked again, keys gone; the host keys stay for the boot
    st = remote.disable()
    assert system.calls[-2:] == ["stop", ("password", None)]
    assert not st.enabled and not (ssh / "authorized_keys").exists()
    assert remote.status().enabled is False and remote.header(remote.status(), []) == ""
    assert (system.root / "etc/ssh/ssh_host_ed25519_key").exists()


def test_nothing_to_log_in_with_is_refused(system):
    with pytest.raises(remote.RemoteError, match="no public key and no password"):
        remote.enable()
    assert system.calls == [] and not (system.run / "remote.json").exists()


def test_sshd_that_does_not_start_leaves_it_off_and_root_locked(system, monkeypatch):
    def fails():
        raise tools.ToolError(["systemctl", "start", remote.UNIT], 1, "Job failed")
    monkeypatch.setattr(remote, "start_sshd", fails)
    with pytest.raises(tools.ToolError):
        remote.enable(password=True)
    assert system.calls[-1] == ("password", None)
    st = remote.status()
    assert not st.enabled and st.error.startswith("sshd did not start: systemctl failed")
    assert remote.header(st, []) == "SSH FAILED (see Remote access)"


def test_password_off_keeps_the_keys_or_turns_off(system):
    remote.enable(parse_inline(f"{TYPE}:{B64}"), password=True)
    st = remote.password_off()
    assert not st.password and st.enabled and system.calls[-2:] == [("password", None), "start"]
    assert "PasswordAuthentication no" in (system.run / "ssh" / "sshd_config").read_text()
    remote.disable()
    remote.enable(password=True)
    assert not remote.password_off().enabled  # no key left: nobody could log in


def test_the_password_reaches_chpasswd_on_stdin_only(tmp_path, monkeypatch, log_dir):
    bindir, seen = tmp_path / "bin", tmp_path / "seen"
    bindir.mkdir()
    (bindir / "chpasswd").write_text(f'#!/bin/sh\necho "$*" > {seen}.argv\ncat > {seen}\n'
                                     f'[ -n "$FAIL" ] && {{ cat {seen} >&2; exit 1; }}\n'
                                     'exit 0\n')
    (bindir / "chpasswd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    password = remote.make_password()
    remote.set_root_password(password)
    assert seen.read_text() == f"root:{password}\n"
    assert password not in (tmp_path / "seen.argv").read_text()
    monkeypatch.setenv("FAIL", "1")  # a failing chpasswd that repeats its input
    with pytest.raises(tools.ToolError) as e:
        remote.set_root_password(password)
    assert password not in str(e.value) and "********" in str(e.value)
    assert password not in (log_dir / "tools.log").read_text()
    with pytest.raises(remote.RemoteError, match="at least 12 characters"):
        remote.set_root_password("short")


def test_temporary_passwords_differ_and_avoid_look_alikes():
    made = {remote.make_password() for _ in range(200)}
    assert len(made) == 200
    assert not set("".join(made)) & set("01lo")


def _proc(title, created, raddr=("10.0.2.2", 40000), status="ESTABLISHED"):
    conn = SimpleNamespace(raddr=SimpleNamespace(ip=raddr[0], port=raddr[1]) if raddr else (),
                           status=status)
    return SimpleNamespace(info={"cmdline": [title, "", ""], "create_time": created},
                           net_connections=lambda kind: [conn])


def test_who_is_connected_from_sshd_session_processes():
    procs = [_proc("sshd: /usr/sbin/sshd -D -f /run/rtk/ssh/sshd_config [listener]", 1,
                   raddr=None, status="LISTEN"),
             _proc("sshd-session: root [priv]", 5),  # its login not accepted yet
             _proc("sshd-session: root@pts/1", 9, ("::ffff:192.0.2.9", 5000)),
             _proc("sshd-session: root@pts/0", 6),
             _proc("sshd: root@pts/2", 7, ("10.0.0.8", 1)),  # OpenSSH 9's title
             _proc("bash", 2)]
    found = remote.sessions(procs)
    assert [(s.user, s.host, s.tty) for s in found] == [
        ("root", "10.0.2.2", "pts/0"), ("root", "10.0.0.8", "pts/2"),
        ("root", "192.0.2.9", "pts/1")]
    on = remote.Status(enabled=True)
    assert remote.header(on, found) == "SSH ON: 3 connected from 10.0.0.8, 10.0.2.2, 192.0.2.9"


def test_reports_carry_the_host_keys_when_it_is_on(system):
    assert "ssh" not in RunReporter(host="n1", macs=[]).host
    remote.enable(parse_inline(f"{TYPE}:{B64}"))
    host = RunReporter(host="n1", macs=[]).host
    assert host["ssh"]["enabled"] is True
    assert [h["fingerprint"] for h in host["ssh"]["host_keys"]] == \
        [h["fingerprint"] for h in remote.host_keys()]
    assert host["ssh"]["authorized_keys"] == [{"type": TYPE, "fingerprint": FPR}]


def test_boot_with_a_bad_key_stays_off_and_says_why(system, capsys):
    assert remote_boot.boot("quiet rtk.ssh=ssh-ed25519:AAAA") == 0
    assert "remote access stays off: rtk.ssh: the ssh-ed25519 key" in capsys.readouterr().out
    assert system.calls == [] and remote.status().error.startswith("rtk.ssh: ")
    assert remote_boot.boot("quiet") == 0 and system.calls == []
    assert remote_boot.boot(f"quiet rtk.ssh={TYPE}:{B64}") == 0
    assert system.calls == ["start"] and remote.status().enabled
    assert f"host key ssh-ed25519 {remote.host_keys()[0]['fingerprint']}" in \
        capsys.readouterr().out


def test_the_remote_access_screen(system, log_dir):
    app = App(log_dir=str(log_dir))
    screen = press(app, "a")
    assert "Remote access is OFF." in screen and "Turn on with a temporary password" in screen
    press(app, "o")
    screen = wait_worker(app)
    box = dialog(screen)
    password = next(c for c in system.calls if isinstance(c, tuple))[1]
    assert f"Temporary password: {password}" in box
    assert "Valid until a new one is made (o), password login or remote access is turned off, " \
        "or the machine restarts" in box
    assert remote.host_keys()[0]["fingerprint"] in box.replace(" ", "")
    screen = press(app, "enter")
    app.refresh_header()
    screen = render(app)
    assert "SSH ON, nobody connected" in screen.splitlines()[0]
    assert "Remote access is ON" in screen and f"temporary password: {password}" in screen
    screen = press(app, "x")
    assert "every remote session ends now" in words(screen)
    press(app, "right", "enter")
    wait_worker(app)
    app.refresh_header()
    screen = render(app)
    assert "Remote access is OFF." in screen and password not in screen
    assert "SSH" not in screen.splitlines()[0] and system.menu_ended == 1
    screen = press(app, "u")
    screen = press(app, *"ftp://x/keys", "enter")
    assert "URL: expected an https:// URL" in words(screen)
    press(app, *["backspace"] * 12)
    screen = press(app, *"http://10.0.0.5/keys", "enter")
    assert "URL: an http:// URL needs the file's SHA-256 at its end" in words(screen)
    assert password not in _everything_written(system.run)


def test_remote_keys_module_limits():
    assert remote_keys.fingerprint(base64.b64decode(B64)) == FPR
    with pytest.raises(KeyRefused, match="more than 100 keys"):
        parse_authorized_keys("\n".join(ed25519(i % 250) for i in range(101)), "k")


# --- what a change that fails leaves, and what the screens show of it ---------------------

REAL = {name: getattr(remote, name) for name in ("start_sshd", "stop_sshd", "sshd_running")}


@pytest.fixture
def sshd(system, monkeypatch):
    """``system`` with systemctl's own stand-ins under start_sshd/stop_sshd (the real
    ones): sshd's state a flag, a reload that fails when asked."""
    state = SimpleNamespace(active=False, reload_fails=False)

    def fake_systemctl(*args, check=True, timeout=90):
        if args[0] == "reload" and state.reload_fails:
            raise tools.ToolError(["systemctl", *args], 1, "Job failed")
        state.active = {"start": True, "stop": False}.get(args[0], state.active)
        return SimpleNamespace(returncode=0)

    for name, real in REAL.items():
        monkeypatch.setattr(remote, name, real)
    monkeypatch.setattr(remote.systemctl, "systemctl", fake_systemctl)
    monkeypatch.setattr(remote.systemctl, "is_active", lambda unit: state.active)
    return state


def test_a_reload_that_fails_stops_sshd_and_leaves_nothing_to_log_in_with(system, sshd,
                                                                        log_dir):
    remote.enable(parse_inline(f"{TYPE}:{B64}"), source="kernel command line")
    assert sshd.active and remote.status().enabled
    sshd.reload_fails = True  # e.g. the menu's "o" (a new temporary password)
    with pytest.raises(tools.ToolError):
        remote.enable(password=True)
    st = remote.status()
    assert not sshd.active  # no sshd that the status says is off
    assert not (system.run / "ssh" / "authorized_keys").exists()
    assert not (system.run / "ssh" / "sshd_config").exists()
    assert system.calls[-1] == ("password", None)  # root locked again
    assert not st.enabled and st.error.startswith("sshd did not start: systemctl failed")
    assert remote.header(st, []) == "SSH FAILED (see Remote access)"
    screen = press(App(log_dir=str(log_dir)), "a")
    assert "Remote access failed: sshd did not start" in words(screen)


def test_turn_off_is_offered_while_sshd_runs_whatever_the_status_says(system, sshd, log_dir):
    remote.save_status(remote.Status(error="sshd did not start: made up"))
    sshd.active = True  # as the old code left it after a failed reload
    app = App(log_dir=str(log_dir))
    screen = press(app, "a")
    assert "Remote access is OFF." in screen and "Turn off (ends every remote" in screen
    screen = press(app, "x")
    assert "Turn remote access off?" in screen, screen
    assert "the remote menu ends with any copy or restore running in it" in dialog(screen)
    press(app, "right", "enter")
    wait_worker(app)
    assert not sshd.active and "Turn off" not in render(app)


def test_another_console_drops_a_password_that_is_no_longer_valid(system, log_dir):
    tty1, ssh = App(log_dir=str(log_dir)), App(log_dir=str(log_dir))
    press(tty1, "a", "o")
    wait_worker(tty1)
    first = [c for c in system.calls if isinstance(c, tuple)][-1][1]
    assert f"temporary password: {first}" in press(tty1, "enter")
    press(ssh, "a", "o")  # a colleague on the serial console or over SSH makes a new one
    wait_worker(ssh)
    second = [c for c in system.calls if isinstance(c, tuple)][-1][1]
    assert first != second
    status_file = (system.run / "remote.json").read_text()
    assert first not in status_file and second not in status_file  # the id is not it
    screen = press(tty1, "f5")
    assert first not in screen and second not in screen, screen
    assert "Password login: on" in screen
    screen = press(ssh, "enter")
    assert f"temporary password: {second}" in screen  # where it was made, it stays


def test_the_password_dialog_says_how_to_skip_the_keys_of_an_agent(system, log_dir):
    config = remote.sshd_config(password=True, keys_file="k", host_keys=[])
    assert "MaxAuthTries 6" in config.splitlines()
    app = App(log_dir=str(log_dir))
    press(app, "a", "o")
    box = dialog(wait_worker(app))
    assert "ssh -t -o PubkeyAuthentication=no root@" in box, box


def test_a_login_with_no_terminal_is_counted(system):
    procs = [_proc("sshd-session: root [priv]", 3),  # the monitor of the next one
             _proc("sshd-session: root", 4),  # ssh -N: accepted, no session
             _proc("sshd-session: root [net]", 5, ("10.0.0.9", 2)),  # not accepted yet
             _proc("sshd-session: root@notty", 6, ("10.0.0.8", 1))]
    found = remote.sessions(procs)
    assert [(s.user, s.host, s.tty, s.terminal) for s in found] == [
        ("root", "10.0.2.2", "", False), ("root", "10.0.0.8", "notty", False)]
    on = remote.Status(enabled=True)
    assert remote.header(on, found[:1]) == "SSH ON: 1 connected from 10.0.2.2 (no terminal)"
    both = [*found[:1], *remote.sessions([_proc("sshd-session: root@pts/0", 7)])]
    assert remote.header(on, both) == "SSH ON: 2 connected from 10.0.2.2 (1 with no terminal)"
