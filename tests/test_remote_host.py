"""Remote access with this machine's real OpenSSH tools: host keys made by ssh-keygen -A
in a directory of the test, every fingerprint the same as `ssh-keygen -l` prints it,
keys fetched over HTTP (rtk.ssh_keys=) from a server on 127.0.0.1, and the
configuration checked by sshd -t where sshd is installed (the image build always runs
it: hook 9000). sshd's start and root's password are recorded, not done."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
from vmlab.http import HttpServer

from toolkit.system import remote, remote_boot
from toolkit.system.remote_keys import parse_authorized_keys, parse_inline

pytestmark = pytest.mark.host


def keygen_fingerprint(pub) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True).stdout
    return re.search(r"SHA256:\S+", out).group(0)


@pytest.fixture
def user_keys(tmp_path):
    """Real key pairs: ed25519, ecdsa and a 3072-bit RSA (their .pub paths)."""
    out = {}
    for kind, extra in (("ed25519", []), ("ecdsa", []), ("rsa", ["-b", "3072"])):
        path = tmp_path / f"id_{kind}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C",
                        f"tech-{kind}", "-f", str(path)], check=True)
        out[kind] = path.with_suffix(".pub")
    return out


@pytest.fixture
def system(tmp_path, monkeypatch, run_dir):
    calls: list = []
    monkeypatch.setattr(remote, "HOST_ROOT", str(tmp_path / "host"))
    monkeypatch.setattr(remote, "start_sshd", lambda: calls.append("start"))
    monkeypatch.setattr(remote, "set_root_password", lambda pw: calls.append(("password", pw)))
    return SimpleNamespace(calls=calls, run=run_dir, root=tmp_path / "host")


def test_fingerprints_are_those_ssh_keygen_prints(user_keys):
    for kind, pub in user_keys.items():
        kind_name, data, comment = pub.read_text().split()
        assert comment == f"tech-{kind}"
        inline = parse_inline(f"{kind_name}:{data.rstrip('=')}")[0]
        from_file = parse_authorized_keys(pub.read_text(), str(pub))[0]
        assert inline.fingerprint == from_file.fingerprint == keygen_fingerprint(pub), kind


def test_host_keys_made_per_boot_by_ssh_keygen(system):
    st, _ = remote.enable(parse_inline("ssh-ed25519:AAAAC3NzaC1lZDI1NTE5AAAAIGhDQWTOfrnOJ0e"
                                       "ndMB9Pza3bI8/Kf5iP943TTzvI4va"))
    made = sorted((system.root / "etc" / "ssh").glob("ssh_host_*_key.pub"))
    assert {p.name for p in made} >= {"ssh_host_ed25519_key.pub", "ssh_host_rsa_key.pub",
                                       "ssh_host_ecdsa_key.pub"}
    assert {h["fingerprint"] for h in st.host_keys} == {keygen_fingerprint(p) for p in made}
    assert st.host_keys[0]["name"] == "ED25519"
    config = (system.run / "ssh" / "sshd_config").read_text()
    for p in made:
        assert f"HostKey {str(p)[:-4]}\n" in config
    # turned on again in the same boot: the same host keys (nothing made anew)
    before = {p.name: p.stat().st_mtime_ns for p in made}
    st2, _ = remote.enable(password=True)
    assert st2.host_keys == st.host_keys
    assert before == {p.name: p.stat().st_mtime_ns for p in made}


@pytest.mark.skipif(not (shutil.which("sshd") or os.path.exists(remote.SSHD)),
                    reason="sshd is not installed here (the image build runs sshd -t)")
def test_sshd_accepts_both_configurations(tmp_path):
    remote_boot.check_config(str(tmp_path))


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    server = HttpServer(d)
    yield SimpleNamespace(dir=d, url=server.url)
    server.stop()


def test_keys_from_a_url(www, user_keys, system, capsys):
    (www.dir / "keys").write_text("# the team\n" + "".join(p.read_text()
                                                          for p in user_keys.values()))
    keys = remote_boot.fetch_keys(www.url("keys"), wait=0)
    assert [k.fingerprint for k in keys] == [keygen_fingerprint(p) for p in user_keys.values()]
    assert remote_boot.boot(f"quiet rtk.ssh_keys={www.url('keys')}") == 0
    st = remote.status()
    assert st.enabled and len(st.keys) == 3 and system.calls == ["start"]
    assert {k["from"] for k in st.keys} == {"kernel command line"}
    assert "remote access on" in capsys.readouterr().out


def test_keys_url_failures_say_why_and_leave_it_off(www, system):
    started = time.monotonic()
    with pytest.raises(remote.RemoteError, match=r"cannot fetch the keys: HTTP 404"):
        remote_boot.fetch_keys(www.url("missing?token=s3cr3t"), wait=30)
    assert time.monotonic() - started < 10  # a 404 is not waited out
    (www.dir / "big").write_bytes(b"#" * (65 * 1024))
    with pytest.raises(remote.RemoteError, match="larger than 65536 bytes"):
        remote_boot.fetch_keys(www.url("big"), wait=0)
    (www.dir / "html").write_text("<html>login page</html>\n")
    assert remote_boot.boot(f"rtk.ssh_keys={www.url('html')}?token=s3cr3t") == 0
    st = remote.status()
    assert not st.enabled and "'<html>login' is not a public key type" in st.error
    assert "s3cr3t" not in st.error and system.calls == []
