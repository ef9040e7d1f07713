"""Remote access with this machine's real OpenSSH tools: host keys made by ssh-keygen -A
in a directory of the test, every fingerprint the same as `ssh-keygen -l` prints it, a
damaged key refused where ssh-keygen refuses it, keys fetched (rtk.ssh_keys=) from
servers on 127.0.0.1: over HTTPS (a self-signed certificate this test trusts), over HTTP
only with the file's SHA-256, never off HTTPS by a redirect, within a deadline however
slowly the server sends; rtk-remote.service stopped while it fetches says so in the
status; and the configuration checked by sshd -t where sshd is installed (the image
build always runs it: hook 9000). sshd's start and root's password are recorded, not
done."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import ROOT
from restore_images import RangeServer, self_signed
from vmlab.http import HttpServer

from toolkit.system import remote, remote_boot
from toolkit.system.remote_keys import KeyRefused, make_key, parse_authorized_keys, parse_inline

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


def pinned(url: str, path) -> str:
    """``url#sha256=`` the SHA-256 of the file at ``path``."""
    return f"{url}#sha256={hashlib.sha256(path.read_bytes()).hexdigest()}"


def test_keys_from_a_url(www, user_keys, system, capsys):
    (www.dir / "keys").write_text("# the team\n" + "".join(p.read_text()
                                                          for p in user_keys.values()))
    url = pinned(www.url("keys"), www.dir / "keys")
    keys = remote_boot.fetch_keys(url, wait=0)
    assert [k.fingerprint for k in keys] == [keygen_fingerprint(p) for p in user_keys.values()]
    assert remote_boot.boot(f"quiet rtk.ssh_keys={url}") == 0
    st = remote.status()
    assert st.enabled and len(st.keys) == 3 and system.calls == ["start"]
    assert {k["from"] for k in st.keys} == {"kernel command line"}
    assert "remote access on" in capsys.readouterr().out


def test_keys_url_failures_say_why_and_leave_it_off(www, system):
    started = time.monotonic()
    with pytest.raises(remote.RemoteError, match=r"cannot fetch the keys: HTTP 404"):
        remote_boot.fetch_keys(www.url("missing?token=s3cr3t") + "#sha256=" + "0" * 64,
                               wait=30)
    assert time.monotonic() - started < 10  # a 404 is not waited out
    (www.dir / "big").write_bytes(b"#" * (65 * 1024))
    with pytest.raises(remote.RemoteError, match="larger than 65536 bytes"):
        remote_boot.fetch_keys(pinned(www.url("big"), www.dir / "big"), wait=0)
    (www.dir / "html").write_text("<html>login page</html>\n")
    url = pinned(www.url("html") + "?token=s3cr3t", www.dir / "html")
    assert remote_boot.boot(f"rtk.ssh_keys={url}") == 0
    st = remote.status()
    assert not st.enabled and "'<html>login' is not a public key type" in st.error
    assert "s3cr3t" not in st.error and system.calls == []


# --- keys over HTTPS, plain HTTP pinned, redirects, slow servers ----------------------------

class Redirect(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a redirect to ``server.to`` (or dribbles ``server.dribble``
    bytes, one every half second, when it is set); counts the requests."""

    def do_GET(self):  # noqa: N802
        self.server.hits += 1
        if self.server.dribble:
            self.send_response(200)
            self.send_header("Content-Length", str(self.server.dribble))
            self.end_headers()
            for _ in range(self.server.dribble):
                try:
                    self.wfile.write(b"#")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.5)
            return
        self.send_response(302)
        self.send_header("Location", self.server.to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """``serve(to=..., dribble=...)``: a server of :class:`Redirect` on 127.0.0.1, over
    HTTPS with a certificate this machine trusts (REQUESTS_CA_BUNDLE) unless ``plain``."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    servers = []

    def serve(to: str = "", dribble: int = 0, plain: bool = False):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        srv.daemon_threads, srv.to, srv.dribble, srv.hits = True, to, dribble, 0
        if not plain:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert), str(key))
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        srv.url = f"{'http' if plain else 'https'}://127.0.0.1:{srv.server_address[1]}/keys"
        return srv
    serve.cert = (cert, key)
    yield serve
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_keys_over_https_and_never_off_https_by_a_redirect(www, tls, user_keys, system):
    (www.dir / "keys").write_text(user_keys["ed25519"].read_text())
    fpr = [keygen_fingerprint(user_keys["ed25519"])]
    files = RangeServer(www.dir, tls=tls.cert)  # HTTPS, its certificate trusted here
    try:
        https = files.url("keys")
        assert [k.fingerprint for k in remote_boot.fetch_keys(https, wait=0)] == fpr
        hop = tls(to=https)  # https -> https: followed, TLS verified, no pin needed
        assert [k.fingerprint for k in remote_boot.fetch_keys(hop.url, wait=0)] == fpr
        assert hop.hits == 1
    finally:
        files.stop()
    # https -> http without a pin: refused before the http server is asked anything
    plain = tls(plain=True, to="http://127.0.0.1:9/never")
    down = tls(to=plain.url)
    with pytest.raises(remote.RemoteError, match=r"the server redirects to http://, not "
                       r"https://: refused \(pin the file with #sha256=HEX"):
        remote_boot.fetch_keys(down.url, wait=30)
    assert plain.hits == 0 and down.hits == 1  # and at once, not tried again
    # the file pinned: a redirect to plain HTTP is fine, its bytes are checked
    pin = hashlib.sha256((www.dir / "keys").read_bytes()).hexdigest()
    to_http = tls(to=www.url("keys"))
    keys = remote_boot.fetch_keys(f"{to_http.url}#sha256={pin}", wait=0)
    assert [k.fingerprint for k in keys] == fpr


def test_a_pinned_file_that_differs_is_refused(www, user_keys, system):
    (www.dir / "keys").write_text(user_keys["ed25519"].read_text())
    url = f"{www.url('keys')}#sha256={'0' * 64}"
    with pytest.raises(remote.RemoteError, match=r"the file's SHA-256 is [0-9a-f]{64}, not "
                       r"the 0{64} given: refused"):
        remote_boot.fetch_keys(url, wait=0)
    assert remote_boot.boot(f"rtk.ssh_keys={url}") == 0
    assert not remote.status().enabled and system.calls == []
    with pytest.raises(KeyRefused, match="an http:// URL needs the file's SHA-256"):
        remote_boot.fetch_keys(www.url("keys"), wait=0)


def test_a_slow_keys_server_is_given_up_on_time(tls):
    """A server that sends a byte every half second never lets a read time out: the
    whole answer has a deadline (``seconds``)."""
    slow = tls(dribble=1000)
    started = time.monotonic()
    with pytest.raises(remote.RemoteError, match="cannot fetch the keys: timed out"):
        remote_boot.fetch_keys(slow.url, timeout=2, wait=0, seconds=3)
    assert time.monotonic() - started < 8  # the deadline plus at most one read


def test_rtk_remote_stopped_while_it_fetches_says_so(tls, tmp_path, run_dir):
    """systemd stops rtk-remote.service with SIGTERM when its start takes too long: the
    status says why (the header: SSH FAILED), not nothing."""
    slow = tls(dribble=1000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from toolkit.system import remote_boot as b; "
         "sys.exit(b.boot(sys.argv[1]))", f"rtk.ssh_keys={slow.url}"], env=env,
        stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while slow.hits == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    st = remote.status()
    assert not st.enabled and "rtk-remote.service was stopped (SIGTERM" in st.error
    assert remote.header(st, []) == "SSH FAILED (see Remote access)"
    assert "remote access stays off: rtk-remote.service was stopped" in out


# --- damaged keys: refused where ssh-keygen refuses them ------------------------------------

def _blob(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in fields)


def _fields(pub) -> tuple[str, list[bytes]]:
    kind, data = pub.read_text().split()[:2]
    blob, out, pos = base64.b64decode(data), [], 0
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return kind, out


def _variants(user_keys) -> dict[str, tuple[str, bytes]]:
    """Keys made by ssh-keygen, and the same cut short, lengthened or changed."""
    ed_kind, ed = _fields(user_keys["ed25519"])
    ec_kind, ec = _fields(user_keys["ecdsa"])
    rsa_kind, rsa = _fields(user_keys["rsa"])
    point = ec[2]
    sk_ed, sk_ec = "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"
    return {
        "ed25519": (ed_kind, _blob(*ed)),
        "ed25519, a byte cut": (ed_kind, _blob(*ed)[:-1]),
        "ed25519, a field more": (ed_kind, _blob(*ed, b"x")),
        "ed25519, a byte left over": (ed_kind, _blob(*ed) + b"\0"),
        "ed25519 of 31 bytes": (ed_kind, _blob(ed[0], ed[1][:31])),
        "ed25519 of 33 bytes": (ed_kind, _blob(ed[0], ed[1] + b"\1")),
        "ecdsa": (ec_kind, _blob(*ec)),
        "ecdsa, another curve named": (ec_kind, _blob(ec[0], b"nistp384", point)),
        "ecdsa, a compressed point": (ec_kind, _blob(ec[0], ec[1], bytes([2 + point[-1] % 2])
                                                      + point[1:33])),
        "ecdsa, a point off the curve": (ec_kind, _blob(ec[0], ec[1], point[:-1]
                                                         + bytes([point[-1] ^ 1]))),
        "ecdsa, the point cut": (ec_kind, _blob(ec[0], ec[1], point[:-1])),
        "ecdsa, a field more": (ec_kind, _blob(*ec, b"")),
        "rsa": (rsa_kind, _blob(*rsa)),
        "rsa, a byte cut": (rsa_kind, _blob(*rsa)[:-1]),
        "rsa, a field more": (rsa_kind, _blob(*rsa, b"")),
        "rsa, a negative modulus": (rsa_kind, _blob(rsa[0], rsa[1], rsa[2].lstrip(b"\0"))),
        "sk-ed25519": (sk_ed, _blob(sk_ed.encode(), ed[1], b"ssh:")),
        "sk-ed25519, no application": (sk_ed, _blob(sk_ed.encode(), ed[1])),
        "sk-ed25519, a NUL in the application": (sk_ed, _blob(sk_ed.encode(), ed[1],
                                                              b"ssh\0:")),
        "sk-ecdsa": (sk_ec, _blob(sk_ec.encode(), ec[1], point, b"ssh:")),
        "sk-ecdsa, no application": (sk_ec, _blob(sk_ec.encode(), ec[1], point)),
    }


def test_damaged_keys_are_refused_where_ssh_keygen_refuses_them(user_keys, tmp_path):
    verdicts = {}
    for name, (kind, blob) in _variants(user_keys).items():
        data = base64.b64encode(blob).decode()
        pub = tmp_path / "k.pub"
        pub.write_text(f"{kind} {data} test\n")
        keygen = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True,
                                text=True).returncode == 0
        try:
            ours = make_key(kind, data).fingerprint == keygen_fingerprint(pub)
        except KeyRefused as e:
            ours = False
            assert "test" not in str(e) and data not in str(e)  # never the key whole
        verdicts[name] = (keygen, ours)
    assert {n for n, (k, _o) in verdicts.items() if k} == {
        "ed25519", "ecdsa", "rsa", "sk-ed25519", "sk-ecdsa"}, verdicts
    assert all(k == o for k, o in verdicts.values()), verdicts
