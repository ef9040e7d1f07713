"""Remote access at boot (``rtk-remote.service``: ``python -m toolkit.system.remote_boot
boot``) with the keys of ``rtk.ssh=`` and ``rtk.ssh_keys=URL``, and the image build's
check that sshd accepts the configuration :mod:`toolkit.system.remote` writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time

from toolkit.atomic import write_atomic
from toolkit.jobs.report import safe_url
from toolkit.system import tools
from toolkit.system.remote import (
    SSH_KEYGEN,
    SSHD,
    USER,
    RemoteError,
    Status,
    enable,
    host_key_dir,
    host_keys,
    save_status,
    sshd_config,
    status,
)
from toolkit.system.remote_keys import (
    MAX_FILE,
    KeyRefused,
    PublicKey,
    check_url,
    parse_authorized_keys,
    url_pin,
)

MAX_REDIRECTS = 5
READ_SECONDS = 30  # the whole file, however slowly the server sends it


class Stopped(BaseException):
    """rtk-remote.service was stopped (SIGTERM: its start timed out, or someone asked):
    a BaseException, so that no ``except Exception`` on the way swallows it."""


def _get(url: str, timeout: float, pinned: bool, shown: str):
    """``requests.get`` of ``url`` (streamed), its redirects followed here, at most
    MAX_REDIRECTS: without a pin, never off https (a redirect to http:// would let
    anyone on the way answer)."""
    from urllib.parse import urljoin, urlsplit

    import requests

    for _ in range(MAX_REDIRECTS + 1):
        r = requests.get(url, timeout=timeout, verify=True, stream=True, allow_redirects=False)
        if not r.is_redirect:
            return r
        r.close()
        nxt = urljoin(url, r.headers["location"])
        if urlsplit(nxt).scheme not in ("https", "http") or (
                not pinned and urlsplit(nxt).scheme != "https"):
            raise RemoteError(f"rtk.ssh_keys={shown}: the server redirects to "
                              f"{urlsplit(nxt).scheme}://, not https://: refused (pin the "
                              "file with #sha256=HEX to fetch it over plain HTTP)")
        url = nxt
    raise RemoteError(f"rtk.ssh_keys={shown}: more than {MAX_REDIRECTS} redirects")


def fetch_keys(url: str, timeout: float = 20, wait: float = 60,
               seconds: float = READ_SECONDS) -> list[PublicKey]:
    """The keys of the authorized_keys file at ``url`` (https, TLS verified, or any URL
    with the file's SHA-256 pinned: :func:`~toolkit.system.remote_keys.check_url`), at
    most MAX_FILE bytes within ``seconds`` (``timeout`` per connect or read), tried again
    for ``wait`` seconds while the network comes up."""
    import requests

    from toolkit.net.http import http_failure, read_body

    check_url(url)
    bare, pin = url_pin(url)
    shown, deadline, why = safe_url(url), time.monotonic() + wait, ""
    while True:
        try:
            with _get(bare, timeout, pin is not None, shown) as r:
                r.raise_for_status()
                data = read_body(r, MAX_FILE, seconds)
            break
        except RemoteError:
            raise
        except requests.RequestException as e:
            status_code = getattr(e.response, "status_code", None)
            why = f"HTTP {status_code}" if status_code else http_failure(e)
        except (OSError, ValueError) as e:
            why = http_failure(e)
        if why.startswith("HTTP 4") or time.monotonic() > deadline:  # 4xx: waiting won't help
            raise RemoteError(f"rtk.ssh_keys={shown}: cannot fetch the keys: {why}")
        time.sleep(3)
    if len(data) > MAX_FILE:
        raise RemoteError(f"rtk.ssh_keys={shown}: larger than {MAX_FILE} bytes")
    if pin and hashlib.sha256(data).hexdigest() != pin:
        raise RemoteError(f"rtk.ssh_keys={shown}: the file's SHA-256 is "
                          f"{hashlib.sha256(data).hexdigest()}, not the {pin} given: refused")
    return parse_authorized_keys(data.decode("utf-8", "replace"), f"rtk.ssh_keys={shown}")


def _stopped(signum, _frame) -> None:
    raise Stopped(f"rtk-remote.service was stopped ({signal.Signals(signum).name}: its "
                  "start took too long, or it was asked to stop)")


def boot(cmdline: str | None = None) -> int:
    """``rtk-remote.service``: remote access on at boot with the keys that ``rtk.ssh=``
    and ``rtk.ssh_keys=`` give. Never fails the boot: a problem is said in the journal
    and in the status file (the menu's header shows it), also when the unit is stopped
    (SIGTERM) before it is done."""
    from toolkit.unattended.cmdline import Cmdline, CmdlineError, ssh_from

    main = threading.current_thread() is threading.main_thread()  # (signals: main only)
    previous = signal.signal(signal.SIGTERM, _stopped) if main else None
    try:
        given = ssh_from(Cmdline(cmdline))
        if not given:
            return 0
        keys = list(given.get("keys", ()))
        if "keys_url" in given:
            keys += fetch_keys(given["keys_url"])
        st, _ = enable(keys, source="kernel command line")
    except (CmdlineError, RemoteError, KeyRefused, OSError, Stopped) as e:
        print(f"rtk-remote: remote access stays off: {e}", flush=True)
        save_status(Status(error=str(e)))
        return 0
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    print(f"rtk-remote: remote access on (ssh -t {USER}@<this machine>), "
          f"{len(st.keys)} authorized key(s)", flush=True)
    for h in st.host_keys:
        print(f"rtk-remote: host key {h['type']} {h['fingerprint']}", flush=True)
    return 0


def check_config(workdir: str) -> None:
    """The build's check (hook 9000): sshd itself accepts both configurations we write
    (``sshd -t``), with throw-away host keys made in ``workdir``."""
    os.makedirs(host_key_dir(workdir), exist_ok=True)
    tools.run([SSH_KEYGEN, "-A", "-f", workdir], timeout=300)
    keys = [h["path"] for h in host_keys(workdir)]
    for password in (False, True):
        conf = os.path.join(workdir, f"sshd_config.{int(password)}")
        write_atomic(conf, sshd_config(password=password, host_keys=keys,
                                       keys_file=os.path.join(workdir, "authorized_keys"),
                                       pid_file=os.path.join(workdir, "sshd.pid")))
        tools.run([SSHD, "-t", "-f", conf], timeout=60)


def main(argv: list[str]) -> int:
    """``python -m toolkit.system.remote_boot boot|status|check-config DIR``."""
    if argv == ["boot"]:
        return boot()
    if argv == ["status"]:
        print(json.dumps(status().to_dict(), indent=1))
        return 0
    if len(argv) == 2 and argv[0] == "check-config":
        check_config(argv[1])
        print("sshd accepts the remote access configuration")
        return 0
    print("usage: python -m toolkit.system.remote_boot boot|status|check-config DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
