"""Pure parsers of iscsiadm, initiator-name and sg_persist output.

Each docstring carries a sample of the real output it parses, captured in
the live system (the same text is in tests/fixtures/iscsi/, which the tests
feed to these functions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolkit.iscsi.portal import PORTAL_TPGT, format_portal

_RECORD = re.compile(rf"^{PORTAL_TPGT}\s+(?P<iqn>\S+)\s*$")


@dataclass(frozen=True)
class PortalRecord:
    """One ``ADDRESS:PORT,TPGT IQN`` line (discovery output, node records)."""

    address: str
    port: int
    tpgt: int
    iqn: str

    @property
    def portal(self) -> str:
        return format_portal(self.address, self.port)

    @classmethod
    def from_match(cls, m: re.Match, **more):
        """From a match of :data:`~toolkit.iscsi.portal.PORTAL_TPGT` and an ``iqn`` group."""
        return cls(address=m.group("addr").strip("[]"), port=int(m.group("port")),
                   tpgt=int(m.group("tpgt")), iqn=m.group("iqn"), **more)


def parse_portal_records(text: str) -> list[PortalRecord]:
    """SendTargets discovery output, or ``iscsiadm -m node``::

        127.0.0.1:3262,1 iqn.2026-11.lab.rtk:bdr
        127.0.0.1:3262,1 iqn.2026-11.lab.rtk:san

    IPv6 portals come in brackets: ``[fd00::1]:3260,1 iqn...``.
    """
    matches = (_RECORD.match(line.strip()) for line in text.splitlines())
    return [PortalRecord.from_match(m) for m in matches if m]


_SESSION = re.compile(rf"^(?P<transport>\w+): \[(?P<sid>\d+)\] {PORTAL_TPGT} (?P<iqn>\S+)"
                      r"(?: \((?P<kind>[^)]*)\))?")


@dataclass(frozen=True)
class SessionLine(PortalRecord):
    """A portal record with the session's transport and id."""

    transport: str
    sid: int


def parse_session_list(text: str) -> list[SessionLine]:
    """``iscsiadm -m session``::

        tcp: [4] 10.0.2.2:3262,1 iqn.2026-11.lab.rtk:san (non-flash)
        tcp: [6] 10.0.2.2:3262,1 iqn.2026-11.lab.rtk:bdr (non-flash)
    """
    matches = (_SESSION.match(line.strip()) for line in text.splitlines())
    return [SessionLine.from_match(m, transport=m.group("transport"), sid=int(m.group("sid")))
            for m in matches if m]


@dataclass
class SessionDetail:
    target: str
    portal: str | None = None
    sid: int | None = None
    state: str | None = None  # iSCSI Connection State
    session_state: str | None = None
    initiator_name: str | None = None
    chap_username: str | None = None
    luns: dict[int, str | None] = field(default_factory=dict)  # LUN -> sdX


def parse_session_detail(text: str) -> list[SessionDetail]:
    """``iscsiadm -m session -P 3`` (abridged; passwords print as ``********``)::

        Target: iqn.2026-11.lab.rtk:bdr (non-flash)
            Current Portal: 10.0.2.2:3262,1
            Persistent Portal: 10.0.2.2:3262,1
                    **********
                    Interface:
                    **********
                    Iface Initiatorname: iqn.2005-03.org.open-iscsi:6d66395b588b
                    SID: 6
                    iSCSI Connection State: LOGGED IN
                    iSCSI Session State: LOGGED_IN
                    ************************
                    Attached SCSI devices:
                    ************************
                    Host Number: 3  State: running
                    scsi3 Channel 00 Id 0 Lun: 0
                    scsi3 Channel 00 Id 0 Lun: 1
                            Attached scsi disk sdb          State: running
                    scsi3 Channel 00 Id 0 Lun: 2
                            Attached scsi disk sdc          State: running
    """
    out: list[SessionDetail] = []
    cur: SessionDetail | None = None
    lun: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Target: "):
            cur = SessionDetail(target=line.split()[1])
            out.append(cur)
            continue
        if cur is None:
            continue
        key, _, value = line.partition(": ")
        value = value.strip()
        if key == "Current Portal":
            cur.portal = value.split(",")[0]
        elif key == "SID":
            cur.sid = int(value)
        elif key == "iSCSI Connection State":
            cur.state = value
        elif key == "iSCSI Session State":
            cur.session_state = value
        elif key == "Iface Initiatorname":
            cur.initiator_name = value
        elif key == "username" and cur.chap_username is None:
            cur.chap_username = None if value == "<empty>" else value
        m = re.match(r"scsi\d+ Channel \d+ Id \d+ Lun: (\d+)", line)
        if m:
            lun = int(m.group(1))
            cur.luns[lun] = None
        m = re.match(r"Attached scsi disk (\S+)", line)
        if m and lun is not None:
            cur.luns[lun] = m.group(1)
    return out


def parse_initiator_name(text: str) -> str | None:
    """/etc/iscsi/initiatorname.iscsi::

        InitiatorName=iqn.2005-03.org.open-iscsi:6d66395b588b
    """
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("InitiatorName="):
            return line.partition("=")[2].strip() or None
    return None


_IQN = re.compile(r"^(iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[^\s]+)?|eui\.[0-9A-Fa-f]{16}"
                  r"|naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?)$")


def valid_iscsi_name(name: str) -> bool:
    """RFC 3720 names: ``iqn.YYYY-MM.reversed.domain[:anything]``, ``eui.`` or ``naa.``."""
    return bool(_IQN.match(name)) and len(name.encode()) <= 223


@dataclass
class Reservation:
    keys: list[str] = field(default_factory=list)  # registered keys, "0x..."
    holder: str | None = None  # the key holding the reservation
    type: str | None = None  # "Write Exclusive, registrants only"...

    @property
    def held(self) -> bool:
        return bool(self.keys or self.holder)


def parse_pr_keys(text: str) -> list[str]:
    """``sg_persist --in --read-keys DEV``::

          IET       VIRTUAL-DISK      0001
          Peripheral device type: disk
          PR generation=0x1, 1 registered reservation key follows:
            0x1234abcd

    or ``PR generation=0x0, there are NO registered reservation keys``.
    """
    if "NO registered reservation keys" in text:
        return []
    after = text.split("follows:", 1)
    if len(after) < 2:
        return []
    return re.findall(r"^\s*(0x[0-9a-fA-F]+)\s*$", after[1], re.M)


def parse_pr_reservation(text: str) -> tuple[str | None, str | None]:
    """``sg_persist --in --read-reservation DEV`` -> (key, type)::

          IET       VIRTUAL-DISK      0001
          Peripheral device type: disk
          PR generation=0x1, Reservation follows:
            Key=0x1234abcd
            scope: LU_SCOPE,  type: Write Exclusive, registrants only

    or ``PR generation=0x1, there is NO reservation held``.
    """
    if "NO reservation held" in text:
        return None, None
    key = re.search(r"Key\s*=\s*(0x[0-9a-fA-F]+)", text)
    rtype = re.search(r"scope:.*?\btype:\s*(.+?)\s*$", text, re.M)
    return (key.group(1) if key else None), (rtype.group(1) if rtype else None)
