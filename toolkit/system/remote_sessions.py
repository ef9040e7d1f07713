"""Who is logged in over SSH now (remote access, :mod:`toolkit.system.remote`): read from
sshd's own processes and their TCP connections, since Debian 13 has no utmp."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    user: str
    host: str  # the client's address
    tty: str  # pts/0; "" or notty: no terminal (ssh -N, or a command that was refused)
    started: float

    @property
    def terminal(self) -> bool:
        return self.tty not in ("", "notty")


# sshd's process of an accepted login: "sshd-session: root@pts/0" once it has a session
# ("root@notty" without a terminal), plain "sshd-session: root" while it has none (ssh
# -N). Before the login is accepted: "root [priv]", "[preauth]", "[net]" (brackets).
SESSION_TITLE = re.compile(r"sshd(?:-session)?: ([^\s@\[]+)(?:@(\S+)|$)")


def sessions(processes=None) -> list[Session]:
    """The remote logins now, oldest first: sshd's process of each accepted login
    (:data:`SESSION_TITLE`), with the client's address from its TCP connection. (Debian 13
    has no utmp: ``who`` knows nothing of them.) ``processes``: psutil processes, for
    tests."""
    import psutil

    out = []
    procs = psutil.process_iter(["cmdline", "create_time"]) if processes is None else processes
    for p in procs:
        m = SESSION_TITLE.match((p.info.get("cmdline") or [""])[0].rstrip())
        if not m:
            continue
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.Error, OSError):  # it ended meanwhile
            continue
        host = next((c.raddr.ip for c in conns if c.raddr and c.status == "ESTABLISHED"),
                    None)
        if host:
            out.append(Session(m.group(1), host.removeprefix("::ffff:"), m.group(2) or "",
                               p.info.get("create_time") or 0.0))
    return sorted(out, key=lambda s: s.started)
