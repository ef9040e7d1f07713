"""The one way the toolkit runs an external tool: :func:`run`, and one error type.

A failure raises :class:`ToolError` (an ``OSError``, so every handler of I/O
failures catches it), whose message names the tool, its exit status and its
last stderr line: ``sfdisk failed: /dev/sdz: cannot open (exit 1)``. A tool
that is not installed raises :class:`ToolNotInstalled`, naming the Debian
package that has it (:data:`PACKAGES`): ``iscsiadm is not installed
(open-iscsi)``. ``secrets`` are masked (``********``) in everything this
module writes or raises: the command line, the output kept in the error, the
log; ``shown`` is the command line to show instead of ``argv`` (a caller that
masks by position, as iscsiadm's ``-v VALUE`` after a password setting).

Failures, missing tools and skipped steps go to the ``toolkit`` logger, which
writes them to ``tools.log`` in the log directory (the menu's Logs shows it).
A process that streams (qemu-img with progress) is started with
:func:`popen` and its failure built with :func:`failure`.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence

from toolkit.system.paths import LOG_DIR

MASK = "********"

# tool -> the Debian package that installs it (Debian 12 and 13)
PACKAGES = {
    "blkid": "util-linux", "blockdev": "util-linux", "dmesg": "util-linux",
    "partx": "util-linux", "losetup": "mount", "mount": "mount", "umount": "mount",
    "udevadm": "udev", "systemctl": "systemd", "journalctl": "systemd",
    "networkctl": "systemd", "iscsiadm": "open-iscsi", "iscsi-iname": "open-iscsi",
    "sg_persist": "sg3-utils", "qemu-img": "qemu-utils", "sfdisk": "fdisk",
    "growpart": "cloud-guest-utils", "e2fsck": "e2fsprogs", "resize2fs": "e2fsprogs",
    "debugfs": "e2fsprogs", "ntfsresize": "ntfs-3g", "ntfsls": "ntfs-3g", "ntfs-3g": "ntfs-3g",
    "xfs_growfs": "xfsprogs", "xfs_db": "xfsprogs", "chroot": "coreutils", "unshare": "util-linux",
    "lvs": "lvm2", "vgchange": "lvm2", "mdir": "mtools", "efibootmgr": "efibootmgr",
    "ip": "iproute2", "ping": "iputils-ping", "ifdown": "ifupdown", "modprobe": "kmod",
    "pidof": "sysvinit-utils", "udp-receiver": "udpcast", "udp-sender": "udpcast",
    "ntfscat": "ntfs-3g", "ntfsinfo": "ntfs-3g", "xfs_logprint": "xfsprogs",
    "partclone.ntfs": "partclone", "partclone.extfs": "partclone", "partclone.xfs": "partclone",
    "partclone.fat": "partclone",
    "hivexsh": "libhivex-bin", "hivexget": "libhivex-bin",
    "ckbcomp": "console-setup", "loadkeys": "kbd", "ssh-keygen": "openssh-client",
    "sshd": "openssh-server", "chpasswd": "passwd", "usermod": "passwd",
}

log = logging.getLogger("toolkit.tools")
_missing: set[str] = set()  # tools whose absence was logged (once each per process)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``********`` (the longest first: a secret
    that contains another is masked whole)."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class ToolError(OSError):
    """An external tool failed: ``tool``, ``status`` (its exit status; negative: killed by
    that signal; None: it did not finish), ``stderr``/``stdout`` (secrets masked),
    ``argv`` as shown (secrets masked)."""

    def __init__(self, argv: Sequence[str], status: int | None, stderr: str = "", *,
                 stdout: str = "", timeout: float | None = None, message: str | None = None):
        self.argv = [str(a) for a in argv]
        self.tool = os.path.basename(self.argv[0]) if self.argv else "?"
        self.status = status
        self.stderr, self.stdout = stderr or "", stdout or ""
        self.timed_out = timeout is not None
        self.message = message or self._describe(timeout)
        super().__init__(self.message)

    @property
    def name(self) -> str:
        """What the message calls the tool (a subclass may add its subcommand)."""
        return self.tool

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def last_line(self) -> str:
        """The last non-empty line of stderr (of stdout when stderr is empty)."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return ""

    def _describe(self, timeout: float | None) -> str:
        if timeout is not None:
            return f"{self.name} timed out after {timeout:g} s"
        last = self.last_line
        if last.startswith(f"{self.tool}: "):
            last = last[len(self.tool) + 2:]
        if self.status is not None and self.status < 0:
            return f"{self.name} was killed by signal {-self.status}" + (f": {last}" if last
                                                                           else "")
        return f"{self.name} failed" + (f": {last}" if last else "") + f" (exit {self.status})"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (_rebuild, (type(self), self.__dict__))

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "tool": self.tool,
                "status": self.status, "command": self.command,
                "stderr": self.stderr.strip()[-2000:]}


def _rebuild(cls, state):
    e = cls.__new__(cls)
    OSError.__init__(e, state.get("message", ""))
    e.__dict__.update(state)
    return e


class ToolNotInstalled(ToolError):
    """The tool is not on PATH; ``package`` is the Debian package that has it (or None)."""

    def __init__(self, argv: Sequence[str]):
        tool = os.path.basename(str(argv[0])) if argv else "?"
        self.package = PACKAGES.get(tool)
        super().__init__(argv, None, message=f"{tool} is not installed"
                         + (f" ({self.package})" if self.package else ""))
        self.errno = errno.ENOENT


def _not_installed(argv: Sequence[str]) -> ToolNotInstalled:
    """The error for a missing tool, logged the first time only (a tolerant caller that
    asks again and again, as the disk probe does, must not fill the log)."""
    e = ToolNotInstalled(argv)
    if e.tool not in _missing:
        _missing.add(e.tool)
        log.info("%s", e)
    return e


def installed(tool: str) -> bool:
    return shutil.which(tool) is not None


def require(tool: str) -> None:
    """Raise :class:`ToolNotInstalled` unless ``tool`` is on PATH."""
    if not installed(tool):
        raise _not_installed([tool])


def failure(argv: Sequence[str], status: int | None, stderr: str = "", *, stdout: str = "",
            secrets: Iterable[str] = (), error: type[ToolError] = ToolError,
            timeout: float | None = None) -> ToolError:
    """The error for ``argv`` ending with ``status`` (logged, secrets masked), to raise."""
    secrets = tuple(s for s in secrets if s)
    e = error([redact(a, secrets) for a in argv], status, redact(stderr, secrets),
              stdout=redact(stdout, secrets), timeout=timeout)
    log.info("$ %s: %s", e.command, e)
    return e


def run(argv: Sequence[str], *, check: bool = True, ok: Iterable[int] = (0,),
        input: str | bytes | None = None, timeout: float | None = None,
        capture: bool = True, text: bool = True, env: dict | None = None,
        cwd: str | None = None, secrets: Iterable[str] = (),
        shown: Sequence[str] | None = None,
        error: type[ToolError] = ToolError) -> subprocess.CompletedProcess:
    """Run ``argv``; its ``CompletedProcess`` (output as text unless ``text=False``, not
    captured with ``capture=False``: a shell on the terminal).

    Raises ``error`` (a :class:`ToolError`) for an exit status outside ``ok`` when
    ``check``; :class:`ToolNotInstalled` and a timeout are raised even without ``check``.
    """
    argv = [str(a) for a in argv]
    secrets = tuple(s for s in secrets if s)
    view = [redact(str(a), secrets) for a in (shown if shown is not None else argv)]
    kw: dict = {"input": input, "timeout": timeout, "env": env, "cwd": cwd, "check": False}
    if capture:
        kw["capture_output"] = True
    if text:
        kw.update(text=True, errors="replace")
    started = time.monotonic()
    try:
        p = subprocess.run(argv, **kw)
    except FileNotFoundError:
        raise _not_installed(view) from None
    except subprocess.TimeoutExpired as t:
        raise failure(view, None, _text(t.stderr), stdout=_text(t.stdout), secrets=secrets,
                      error=error, timeout=timeout) from None
    except OSError as o:  # not executable, no interpreter...
        e = error(view, None, message=f"{os.path.basename(argv[0])} could not be run: "
                                      f"{o.strerror}")
        log.info("$ %s: %s", e.command, e)
        raise e from None
    log.debug("$ %s: exit %s in %.2f s", shlex.join(view), p.returncode,
              time.monotonic() - started)
    if check and p.returncode not in set(ok):
        raise failure(view, p.returncode, _text(p.stderr), stdout=_text(p.stdout),
                      secrets=secrets, error=error)
    return p


def popen(argv: Sequence[str], **kw) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kw)`` for a tool whose output streams; a missing tool
    raises :class:`ToolNotInstalled`. Build its failure with :func:`failure`."""
    try:
        return subprocess.Popen([str(a) for a in argv], **kw)
    except FileNotFoundError:
        raise _not_installed([str(a) for a in argv]) from None


class _LogDirHandler(logging.Handler):
    """Appends records to ``tools.log`` in the log directory: ``RTK_LOG_DIR`` (read at
    each record, as the reports do; made if missing), else /var/log/rtk if it exists (the
    image makes it; a development machine without it logs nothing). A read-only
    directory loses the line, nothing else."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            d = os.environ.get("RTK_LOG_DIR")
            if d:
                os.makedirs(d, exist_ok=True)
            elif os.path.isdir(LOG_DIR):
                d = LOG_DIR
            else:
                return
            with open(os.path.join(d, "tools.log"), "a", encoding="utf-8") as f:
                f.write(self.format(record) + "\n")
        except OSError:
            pass


def _setup_log() -> None:
    root = logging.getLogger("toolkit")
    if not any(isinstance(h, _LogDirHandler) for h in root.handlers):
        h = _LogDirHandler(logging.INFO)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root.addHandler(h)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


_setup_log()
