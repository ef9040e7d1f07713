"""Remote access over SSH: off unless asked for, at boot (``rtk.ssh=KEY``,
``rtk.ssh_keys=URL``) or in the menu (Remote access).

When it is on, OpenSSH's sshd runs as ``rtk-sshd.service`` with a configuration of this
boot (:func:`sshd_config`, in ``/run/rtk/ssh``): log in as root, with one of the
authorized public keys, or with the temporary password the menu made (and shows) when
asked, valid until a new one is made, password login or remote access is turned off, or
the machine restarts; every login gets the remote menu (``ForceCommand``), which runs in
tmux so that a dropped link leaves it and its job running (the next login attaches to
it), no forwarding of any kind. The host keys are made when it is first turned on in a
boot (``ssh-keygen -A``): the image has none, and live-config's own key generation is
removed from it. What is on, the keys' and host keys' fingerprints, never a password,
are in ``/run/rtk/remote.json`` (:func:`status`), which the menu's header of every
console and the unattended reports read. Turning it off stops sshd, which ends every
remote session, ends the remote menu, and locks root's password again.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from toolkit.atomic import write_atomic
from toolkit.jobs.report import iso_time
from toolkit.system import paths, systemctl, tools
from toolkit.system.remote_keys import (
    KeyRefused,
    PublicKey,
    parse_authorized_keys,
    read_pub,
)
from toolkit.system.remote_sessions import Session, sessions  # noqa: F401 (the menu's)

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
TMUX = "tmux"  # the remote menu's terminal (rtk-remote-login), on tmux_socket()
CHPASSWD = "chpasswd"
USERMOD = "usermod"
UNIT = "rtk-sshd.service"
LOGIN = "/usr/local/sbin/rtk-remote-login"  # ForceCommand: the remote menu (in tmux)
USER = "root"
LOCKED = "*"  # root's password field when no password login is on (as in the image)
PORT = 22
HOST_ROOT = ""  # the host keys are in HOST_ROOT/etc/ssh (tests: a directory of their own)
# what ssh calls each host key type ("ED25519 key fingerprint is SHA256:..."), in the
# order they are shown (the one a current client checks first)
KEY_NAMES = {"ssh-ed25519": "ED25519", "ecdsa-sha2-nistp256": "ECDSA",
             "ecdsa-sha2-nistp384": "ECDSA", "ecdsa-sha2-nistp521": "ECDSA", "ssh-rsa": "RSA"}
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: read off a screen
# Tries per connection: a client offers each key of its agent and ~/.ssh first, and each
# counts (3 locked out a technician with 3 keys before the password was ever asked).
MAX_AUTH_TRIES = 6


class RemoteError(ValueError):
    """Remote access cannot be turned on as asked; the message says why."""


def ssh_dir() -> str:
    return os.path.join(paths.run_dir(), "ssh")


def state_path() -> str:
    return os.path.join(paths.run_dir(), "remote.json")


def tmux_socket() -> str:
    """The remote menu's tmux server (rtk-remote-login starts it there)."""
    return os.path.join(paths.run_dir(), "tmux-remote.sock")


def sshd_config(*, password: bool, keys_file: str, host_keys: Iterable[str],
                login: str = LOGIN, port: int = PORT, pid_file: str | None = None) -> str:
    """The whole sshd configuration (nothing is read from /etc/ssh/sshd_config): root
    only, public keys, a password only when ``password`` (the temporary one), the menu
    as the only command, no forwarding, no sftp."""
    lines = [
        "# Recovery Toolkit remote access: written by toolkit.system.remote for this boot.",
        f"Port {port}",
        *[f"HostKey {k}" for k in host_keys],
        f"PidFile {pid_file or os.path.join(ssh_dir(), 'sshd.pid')}",
        f"AllowUsers {USER}",
        f"PermitRootLogin {'yes' if password else 'prohibit-password'}",
        "PubkeyAuthentication yes",
        f"AuthorizedKeysFile {keys_file}",
        "AuthorizedPrincipalsFile none",
        f"PasswordAuthentication {'yes' if password else 'no'}",
        "PermitEmptyPasswords no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "IgnoreRhosts yes",
        "UsePAM yes",
        "StrictModes yes",
        f"MaxAuthTries {MAX_AUTH_TRIES}",
        "MaxSessions 4",
        "LoginGraceTime 60",
        f"ForceCommand {login}",
        "PermitTTY yes",
        "DisableForwarding yes",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "PermitUserRC no",
        "ClientAliveInterval 30",
        "ClientAliveCountMax 10",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "LogLevel VERBOSE",  # each login's key fingerprint, in the journal
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Status:
    """What ``/run/rtk/remote.json`` says: on or off, since when, password login, the
    authorized keys and the host keys (type, fingerprint, where from), an error, and
    ``credential_id``: which temporary password is the valid one (random, not made from
    it), so that a menu drops a password it shows once another console made a new one."""

    enabled: bool = False
    since: str | None = None
    password: bool = False
    keys: list[dict] = field(default_factory=list)
    host_keys: list[dict] = field(default_factory=list)
    error: str | None = None
    credential_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def status(path: str | None = None) -> Status:
    try:
        with open(path or state_path(), encoding="utf-8") as f:
            data = json.load(f)
        return Status(**{k: data[k] for k in Status.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return Status()


def save_status(st: Status) -> Status:
    os.makedirs(paths.run_dir(), exist_ok=True)
    write_atomic(state_path(), json.dumps(st.to_dict(), indent=1) + "\n")
    return st


def host_key_dir(root: str | None = None) -> str:
    return os.path.join((HOST_ROOT if root is None else root) or "/", "etc", "ssh")


def host_keys(root: str | None = None) -> list[dict]:
    """The host keys there: path, type, fingerprint (from their .pub files)."""
    out = []
    for pub in sorted(glob.glob(os.path.join(host_key_dir(root), "ssh_host_*_key.pub"))):
        try:
            with open(pub, encoding="ascii", errors="replace") as f:
                key = read_pub(f.read(), pub)
        except (OSError, KeyRefused):
            continue
        if os.path.exists(pub[:-4]):
            out.append({"path": pub[:-4], "type": key.kind, "fingerprint": key.fingerprint,
                         "name": KEY_NAMES.get(key.kind, key.kind)})
    order = list(KEY_NAMES)
    return sorted(out, key=lambda h: order.index(h["type"]) if h["type"] in order else 99)


def ensure_host_keys(root: str | None = None) -> list[dict]:
    """This boot's host keys, made by ``ssh-keygen -A`` if there are none yet."""
    root = HOST_ROOT if root is None else root
    if not host_keys(root):
        os.makedirs(host_key_dir(root), exist_ok=True)
        tools.run([SSH_KEYGEN, "-A", *(("-f", root) if root else ())], timeout=300)
    found = host_keys(root)
    if not found:
        raise RemoteError("ssh-keygen made no host key: remote access stays off")
    return found


def make_password() -> str:
    """16 characters in 4 groups (about 79 bits), e.g. ``k7dq-3mhx-wp2a-ex9r``."""
    chars = "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def set_root_password(password: str | None) -> None:
    """Root's password: ``password`` (it goes to chpasswd on its stdin, never on a
    command line nor in a log), or None: locked again, no password can log in."""
    if password is None:
        tools.run([USERMOD, "-p", LOCKED, USER], timeout=60)
        return
    if len(password) < 12:
        raise RemoteError("a temporary password is at least 12 characters")
    tools.run([CHPASSWD], input=f"{USER}:{password}\n", secrets=[password], timeout=60)


def authorized(path: str | None = None) -> list[PublicKey]:
    try:
        with open(path or os.path.join(ssh_dir(), "authorized_keys"), encoding="utf-8") as f:
            return parse_authorized_keys(f.read(), "authorized_keys")
    except (OSError, KeyRefused):
        return []


def _write_files(keys: list[PublicKey], password: bool, found: list[dict]) -> None:
    d = ssh_dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    keys_file = os.path.join(d, "authorized_keys")
    write_atomic(keys_file, "".join(k.line() + "\n" for k in keys), mode=0o600)
    write_atomic(os.path.join(d, "sshd_config"), sshd_config(
        password=password, keys_file=keys_file, host_keys=[h["path"] for h in found]),
        mode=0o600)


def start_sshd() -> None:
    """sshd on with the files just written: started, or told to read them again."""
    if systemctl.is_active(UNIT):
        systemctl.systemctl("reload", UNIT)  # sessions stay; sshd reads the new files
    else:
        systemctl.start(UNIT)


def sshd_running() -> bool:
    """Is rtk-sshd.service running (whatever the status file says)?"""
    return systemctl.is_active(UNIT)


def _remove_files() -> None:
    for name in ("authorized_keys", "sshd_config"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(ssh_dir(), name))


def _undo(error: str) -> None:
    """A change that failed half-way: nothing left that could let anyone in. sshd
    stopped (if a reload failed it would still run, with the old or the new files),
    its files removed, root's password locked; the status says off, and why."""
    stop_sshd()
    _remove_files()
    set_root_password(None)
    save_status(Status(error=error))


def enable(keys: Iterable[PublicKey] = (), *, password: bool = False, source: str = "menu",
           host_root: str | None = None) -> tuple[Status, str | None]:
    """Turn remote access on (or change it): ``keys`` added to those already authorized,
    a new temporary password when ``password`` (else any password stays as it was).
    Returns the status and the new password (None without one): the caller shows it,
    nothing keeps it. RemoteError or ToolError, with the reason, otherwise; then remote
    access is off (:func:`_undo`), even if it was on before."""
    old = status()
    old = old if old.enabled else Status()
    have = {k.fingerprint: k for k in (authorized() if old.enabled else [])}
    origin = {k["fingerprint"]: k.get("from", "") for k in old.keys}
    for k in keys:
        if k.fingerprint not in have:
            have[k.fingerprint], origin[k.fingerprint] = k, source
    if not have and not password and not old.password:
        raise RemoteError("no public key and no password: nobody could log in; give a key "
                          "or turn on the temporary password")
    found = ensure_host_keys(host_root)
    new_password = make_password() if password else None
    use_password = bool(new_password) or old.password
    st = Status(True, old.since or iso_time(time.time()), use_password,
                [{**k.to_dict(), "from": origin.get(f, source)} for f, k in have.items()],
                [{k: h[k] for k in ("type", "name", "fingerprint")} for h in found],
                credential_id=secrets.token_hex(4) if new_password else
                (old.credential_id if use_password else None))
    if new_password:  # (if chpasswd fails, nothing has changed yet)
        set_root_password(new_password)
    try:
        _write_files(list(have.values()), use_password, found)
        start_sshd()
    except BaseException as e:  # also a SIGTERM of rtk-remote.service (remote_boot)
        _undo(f"sshd did not start: {e}" if isinstance(e, OSError) else
              f"remote access was being turned on when it stopped: {e}")
        raise
    return save_status(st), new_password


def stop_sshd() -> None:
    systemctl.systemctl("stop", UNIT, check=False)


def end_remote_menu() -> None:
    """The remote menu's tmux server ended (its menu, any job in it, with it): it lives
    outside rtk-sshd.service, so that sshd stopping or restarting does not end it."""
    with contextlib.suppress(tools.ToolError):
        tools.run([TMUX, "-S", tmux_socket(), "kill-server"], check=False, timeout=30)


def password_off() -> Status:
    """No more password login (keys only); with no key, remote access goes off."""
    st = status()
    if not st.enabled or not st.password:
        return st
    keys = authorized()
    if not keys:
        return disable()
    set_root_password(None)
    st.password, st.credential_id = False, None
    try:
        _write_files(keys, False, ensure_host_keys())
        start_sshd()
    except BaseException as e:
        _undo(f"sshd did not take the change: {e}")
        raise
    return save_status(st)


def disable() -> Status:
    """Remote access off: sshd stopped (its sessions end), the remote menu ended, root's
    password locked, the authorized keys removed. The host keys stay for this boot (the
    same fingerprints if it is turned on again)."""
    stop_sshd()
    end_remote_menu()
    set_root_password(None)
    _remove_files()
    return save_status(Status())


def header(st: Status, logins: list[Session]) -> str:
    """The header's few words: "" when off, else who is connected."""
    if st.error and not st.enabled:
        return "SSH FAILED (see Remote access)"
    if not st.enabled:
        return ""
    if not logins:
        return "SSH ON, nobody connected"
    hosts = sorted({s.host for s in logins})
    blind = sum(not s.terminal for s in logins)
    note = ("" if not blind else " (no terminal)" if blind == len(logins) else
            f" ({blind} with no terminal)")
    return f"SSH ON: {len(logins)} connected from {', '.join(hosts)}{note}"


def fingerprints_for_report(st: Status | None = None) -> dict | None:
    """What an unattended report says of remote access: None when it is off."""
    st = status() if st is None else st
    if not st.enabled:
        return None
    return {"enabled": True, "since": st.since, "password": st.password,
            "host_keys": st.host_keys, "authorized_keys": [
                {"type": k.get("type"), "fingerprint": k.get("fingerprint")} for k in st.keys]}
