"""The phases of an unattended run, each a method of :class:`Job`, in order:

1. ``network``: apply ``plan.network`` (``ip=``, ``vlan=``, plan file), if any.
2. ``iscsi``: set the initiator name, attach ``plan.sources`` (and an
   ``rtk.image=iscsi:...`` LUN with a server) as SOURCE, ``plan.targets`` as
   TARGET (CHAP from the plan).
3. ``select``: the one disk ``rtk.disk=`` names (:func:`toolkit.unattended.selectors.select`),
   and ``rtk.consent=`` must name it (:func:`~toolkit.unattended.selectors.check_consent`).
4. ``check``: restore: :func:`toolkit.restore.plan_restore` (image readable,
   fits the disk, not a SOURCE, not in use...) and, with a SHA-256, the
   restore's own check before writing (:func:`toolkit.restore.check_image`: a
   first pass over the image, an HTTP one spooled where it fits); copy:
   :func:`toolkit.copy.plan.plan_copy` with the SOURCE roles.
5. ``write``: :func:`toolkit.restore.restore` or :func:`toolkit.copy.engine.copy`,
   progress to the console and the report server.

A ``udpcast://`` image with ``plan.fallback`` is restored once more from that HTTP(S)
URL when the stream fails (:mod:`toolkit.unattended.restore_steps`).

A failed check raises :class:`Stop` before the first write to any disk. A dry run
(``dry_run``) changes nothing: ``network`` only validates the settings against the NICs
here, ``iscsi`` only opens (and closes) a TCP connection to each portal, ``select`` looks
among the disks already present; each says what a real run would do (:meth:`Job.would`,
the report's ``would_do``).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, unquote, urlsplit

from toolkit import iscsi
from toolkit.disks import gate
from toolkit.disks.identity import identity_of
from toolkit.disks.inventory import Disk
from toolkit.iscsi.adm import redact
from toolkit.jobs import report
from toolkit.jobs.progress import Progress
from toolkit.unattended import selectors
from toolkit.unattended.console import Console
from toolkit.unattended.copy_steps import CopySteps, PairSteps
from toolkit.unattended.plan import Plan
from toolkit.unattended.reporter import RunReporter
from toolkit.unattended.restore_steps import FALLBACK_ON, RestoreSteps
from toolkit.unattended.selectors import IscsiLun, Selector
from toolkit.unattended.stop import Stop

__all__ = ["FALLBACK_ON", "PHASES", "Job", "Stop", "disk_identity", "iscsi_luns",
           "plan_secrets", "probe_portal", "set_initiator"]

PHASES = ("network", "iscsi", "select", "check", "write")


def plan_secrets(plan: Plan) -> list[str]:
    """Every CHAP password in ``plan``, and every password and query value (a token) of its
    URLs (to keep them out of reports and messages)."""
    luns = [*plan.sources, *plan.targets, *([plan.image.lun] if plan.image and plan.image.lun
                                           else [])]
    chap = [c.password for x in luns for c in (x.chap, x.mutual) if c and c.password]
    urls = [plan.image.location if plan.image else None, plan.fallback,
            getattr(plan, "report", None)]
    return chap + [s for u in urls if isinstance(u, str) for s in url_secrets(u)]


def url_secrets(url: str) -> list[str]:
    """A URL's password (``user:password@``) and its query values of 4 characters or more
    (tokens; shorter ones such as ``1`` would mask every such digit); none for a
    ``udpcast://`` location (its ``NIC@`` and query hold no secret)."""
    if "://" not in url or url.startswith("udpcast://"):
        return []
    u = urlsplit(url)
    try:
        password = u.password
    except ValueError:
        password = None
    found = [unquote(password)] if password else []
    found += [v for _, v in parse_qsl(u.query, keep_blank_values=False) if len(v) >= 4]
    # and as typed, before any %-decoding
    raw = [u.netloc.rpartition("@")[0].partition(":")[2],
           *(p.partition("=")[2] for p in u.query.split("&"))]
    return found + [r for r in raw if len(r) >= 4 and r not in found]


def disk_identity(d: Disk | None) -> dict | None:
    """What names a disk in the report: everything a person checks, nothing else."""
    return None if d is None else identity_of(d).to_dict()


def set_initiator(name: str) -> None:
    if iscsi.read_initiator_name() != name:
        iscsi.set_initiator_name(name)


def probe_portal(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None when ``host:port`` accepts a TCP connection (closed at once: no iSCSI login, no
    discovery, nothing recorded here), else why not in plain words."""
    import socket
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        return f"the host name {host} is not resolved"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def _net_line(s) -> str:
    """``ens3 static 10.0.2.15/24 gateway 10.0.2.2, DNS 10.0.2.3, MTU 9000``."""
    parts = [s.iface, s.mode] + ([s.address] if s.address else [])
    extra = ([f"gateway {s.gateway}"] if s.gateway else []) + (
        [f"DNS {' '.join(s.dns)}"] if s.dns else []) + ([f"MTU {s.mtu}"] if s.mtu else [])
    return " ".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def _lun_label(x: IscsiLun) -> str:
    return f"{x.role} {x.iqn} LUN {x.lun} at {x.portal}"


def iscsi_luns(plan: Plan) -> list[IscsiLun]:
    """The LUNs to attach, SOURCE first: ``plan.sources``, an ``rtk.image=iscsi:`` LUN
    with a server (unless listed already), then ``plan.targets``."""
    out = list(plan.sources)
    im = plan.image
    if im and im.lun and all((x.iqn, x.lun, x.host) != (im.lun.iqn, im.lun.lun, im.lun.host)
                             for x in out):
        out.append(im.lun)
    return out + list(plan.targets)



def _source_selector(plan: Plan) -> Selector | None:
    if plan.image and plan.image.selector:
        return plan.image.selector
    if len(plan.sources) == 1:
        x = plan.sources[0]
        return Selector("iscsi", f"{x.iqn}:{x.lun}", iqn=x.iqn, lun=x.lun)
    return None


class Job(RestoreSteps, CopySteps, PairSteps):
    """One run of a plan: the phases, what they found and did (for the report). The
    network, iscsi and select phases are here; check and write are in
    :class:`~toolkit.unattended.restore_steps.RestoreSteps` and
    :class:`~toolkit.unattended.copy_steps.CopySteps`."""

    def __init__(self, plan: Plan, reporter: RunReporter, console: Console, *, dry_run: bool,
                 medium: str, hooks: dict):
        self.plan, self.rep, self.con, self.dry_run = plan, reporter, console, dry_run
        self.medium, self.hooks = medium, hooks
        self.phase = "start"
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.disk: Disk | None = None
        self.source: Disk | None = None
        self.attached: list[dict] = []
        self.warnings: list[str] = []
        self.hashes: dict = {}
        self.inner: dict = {}  # the restore/copy result as its report has it
        self.inner_report: report.ReportPaths | None = None
        self.written = False
        self.would_do: list[dict] = []  # a dry run: what a real run would do, in order
        self.not_checked: list[str] = []  # a dry run: what it could not check
        self.secrets = plan_secrets(plan)
        self.disks: list[Disk] = []  # the disks the select phase saw (for the fallback)
        self.fallback: dict | None = None  # the HTTP fallback, when it was used
        self.pair_disks: list[tuple[Disk, Disk]] = []  # plan.pairs: (source, disk) each

    def step(self, name: str):
        """``toolkit.restore``'s ``name`` (plan_restore, check_image, restore) unless the
        hooks replace it (tests)."""
        from toolkit import restore
        return self.hooks.get(name) or getattr(restore, name)

    def clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def write_consent(self) -> gate.Consent:
        """``rtk.consent=`` as the write gate takes it (it checks it names the disk)."""
        c = self.plan.consent
        return gate.Consent.unattended(c.kind, c.value) if c else gate.Consent.unattended("", "")

    def enter(self, phase: str, text: str) -> None:
        self.phase = phase
        self.con.say(text)
        self.rep.progress(Progress(phase, 0, 0, 0.0, 0.0, None), force=True)

    def timed(self, phase: str, fn, *args, **kw):
        start = time.monotonic()
        try:
            return fn(*args, **kw)
        finally:
            self.timings[phase] = round(self.timings.get(phase, 0) + time.monotonic() - start, 3)

    def on_progress(self, p: Progress) -> None:
        try:
            self.con.progress(p)
            self.rep.progress(p)
        except Exception:  # noqa: BLE001 - progress display must never stop a write
            pass

    # phases ---------------------------------------------------------------------------
    def network(self) -> None:
        if not self.plan.network:
            return
        from toolkit.net.errors import NetError
        self.enter("network", "network: " + ("checking" if self.dry_run else "applying") + " "
                   + ", ".join(f"{s.iface} {s.mode}" for s in self.plan.network))
        try:
            known = self.hooks["known_nics"]()
            settings = self.plan.network_settings(known)  # validated: the NICs exist here
            for s in settings:
                if self.dry_run:  # nothing applied: what a real run would do
                    self.would("network", f"apply {_net_line(s)}", settings=s.to_dict())
                    continue
                r = self.hooks["apply_network"](s, known_nics=known)
                addrs = ", ".join(getattr(r, "addresses", []) or []) or "no address yet"
                self.con.say(f"network: {s.iface} up ({addrs})")
        except (NetError, OSError, ValueError) as e:
            raise Stop("network", f"network settings failed: {e}") from None

    def attach(self) -> None:
        luns = iscsi_luns(self.plan)
        if not luns:
            return
        if self.dry_run:
            return self.attach_dry(luns)
        self.enter("iscsi", f"iscsi: attaching {len(luns)} LUN(s)")
        try:
            if self.plan.initiator:
                self.hooks["set_initiator"](self.plan.initiator)
                self.con.say(f"iscsi: initiator {self.plan.initiator}")
        except (iscsi.IscsiError, OSError, ValueError) as e:
            raise Stop("iscsi", self.clean(f"cannot set the initiator name: {e}")) from None
        for x in luns:
            try:
                r = self.hooks["attach"](x.host, x.iqn, x.role, port=x.port, lun=x.lun,
                                         chap=x.chap, mutual=x.mutual)
            except iscsi.IscsiAuthError as e:
                hint = getattr(e, "hint", None)
                raise Stop("iscsi", self.clean(
                    f"CHAP authentication failed for {_lun_label(x)}: {e}"
                    + (f" ({hint})" if hint else ""))) from None
            except iscsi.IscsiPortalUnreachable as e:
                raise Stop("iscsi", self.clean(f"iSCSI portal unreachable for "
                                               f"{_lun_label(x)}: {e}")) from None
            except (iscsi.IscsiError, OSError, ValueError) as e:
                raise Stop("iscsi", self.clean(f"cannot attach {_lun_label(x)}: {e}")) from None
            devices = [getattr(lun, "device", None) for lun in getattr(r, "luns", []) or []]
            self.attached.append({"role": x.role, "iqn": x.iqn, "lun": x.lun,
                                  "portal": x.portal, "devices": [d for d in devices if d]})
            self.warnings += [self.clean(w) for w in getattr(r, "warnings", []) or []]
            self.con.say(f"iscsi: attached {_lun_label(x)}"
                         + (f" as {', '.join(d for d in devices if d)}" if any(devices) else ""))

    def attach_dry(self, luns: list[IscsiLun]) -> None:
        """A dry run's iscsi phase: no initiator name set, no discovery (it would create
        node records), no login; only a TCP connect to each portal, which changes
        nothing here."""
        self.enter("iscsi", f"iscsi: checking {len(luns)} LUN(s) (dry run: no login)")
        if self.plan.initiator:
            self.would("iscsi", f"set the initiator name to {self.plan.initiator}",
                       initiator=self.plan.initiator)
        answered: dict[tuple[str, int], str | None] = {}
        for x in luns:
            if (x.host, x.port) not in answered:
                answered[x.host, x.port] = self.hooks["probe_portal"](x.host, x.port)
            why = answered[x.host, x.port]
            if why:
                raise Stop("iscsi", self.clean(f"iSCSI portal unreachable for {_lun_label(x)}: "
                                               f"{x.portal} does not answer ({why}); a real run "
                                               "would stop here"))
            self.would("iscsi", f"attach {_lun_label(x)}"
                       + (" with CHAP" if x.chap else "") + (", mutual" if x.mutual else ""),
                       role=x.role, iqn=x.iqn, lun=x.lun, portal=x.portal,
                       chap=bool(x.chap), mutual=bool(x.mutual), portal_answers=True)

    def would(self, phase: str, action: str, **details) -> None:
        """A dry run: what a real run would do here (the console and the report say it)."""
        self.would_do.append({"phase": phase, "action": action, **details})
        self.con.say(f"{phase}: dry run: would {action}")

    def stop_if_not_attached(self, disks: list[Disk], sel: Selector, param: str) -> None:
        """A dry run attached nothing: a disk that may be one of the LUNs a real run would
        attach cannot be selected. Stop the dry run there (not a refusal), saying so."""
        luns = iscsi_luns(self.plan)
        if not (self.dry_run and luns) or any(selectors.matches(d, sel) for d in disks):
            return
        if sel.kind == "iscsi" and all((x.iqn, x.lun) != (sel.iqn, sel.lun) for x in luns):
            return  # not a LUN of this run: a real run would not find it either
        what = (f"{param}={sel} is a LUN this run would attach" if sel.kind == "iscsi" else
                f"no disk here matches {param}={sel}, and it may be one of the "
                f"{len(luns)} LUN(s) this run would attach")
        note = (f"{what}, not attached in a dry run: the selection, the consent and the "
                f"{'image' if self.plan.mode == 'restore' else 'copy'} checks were not done")
        self.not_checked.append(f"select: {note}")
        raise Stop("select", f"dry run: the checks up to here passed, nothing was changed; "
                             f"{note}", "dry-run")

    def select(self) -> list[Disk]:
        if self.plan.pairs:  # a copy job of several pairs (PairSteps)
            return self.select_pairs()
        self.enter("select", f"disk: looking for rtk.disk={self.plan.disk}")
        try:
            disks = self.hooks["list_disks"]()  # a dry run: only the disks present
            self.stop_if_not_attached(disks, self.plan.disk, "rtk.disk")
            self.disk = selectors.select(disks, self.plan.disk)
            self.rep.update(disk=disk_identity(self.disk))
            self.con.say(f"disk: found {selectors.describe(self.disk)}")
            selectors.check_consent(self.disk, self.plan.consent)
            self.con.say(f"disk: rtk.consent={self.plan.consent} names it")
            if self.plan.mode == "copy":
                sel = _source_selector(self.plan)
                if sel is None:
                    raise Stop("select", "rtk.mode=copy: no source (rtk.image=iscsi:IQN:LUN "
                                         "or exactly one rtk.source=)")
                self.stop_if_not_attached(disks, sel, "the source")
                self.source = selectors.select(disks, sel, "the source")
                self.rep.update(source=disk_identity(self.source))
                self.con.say(f"source: {selectors.describe(self.source)}")
        except (selectors.SelectError, selectors.ConsentError) as e:
            raise Stop("select", str(e)) from None
        except OSError as e:
            raise Stop("select", f"cannot list the disks: {e}") from None
        return disks
