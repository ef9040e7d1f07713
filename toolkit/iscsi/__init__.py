"""iSCSI Manager: attach backup-appliance snapshot LUNs as SOURCE and SAN LUNs as TARGET.

| module | holds |
|---|---|
| ``adm`` | one function per iscsiadm operation (the only place that runs it), CHAP masking |
| ``parse`` | pure parsers of iscsiadm / sg_persist output |
| ``errors`` | iscsiadm exit codes, the exception tree, ``rtk iscsi`` exit codes |
| ``sessions`` | sysfs: session -> host -> target -> LUN -> /dev/sdX, by-path names |
| ``initiator`` | the initiator name, iscsid |
| ``reservations`` | SCSI-3 persistent reservations (cluster nodes holding a disk) |
| ``manager`` | discover, attach, detach, list_sessions, rescan |

Roles (SOURCE/TARGET) live in :mod:`toolkit.disks.roles`. See docs/iscsi.md.
"""

from toolkit.iscsi.adm import Chap
from toolkit.iscsi.errors import (
                                  IscsiAuthError,
                                  IscsidNotRunning,
                                  IscsiError,
                                  IscsiPortalUnreachable,
                                  IscsiSessionExists,
                                  IscsiTargetNotFound,
)
from toolkit.iscsi.initiator import (
                                  ensure_iscsid,
                                  generate_initiator_name,
                                  read_initiator_name,
                                  set_initiator_name,
)
from toolkit.iscsi.manager import (
                                  AttachResult,
                                  DetachResult,
                                  DiscoveryResult,
                                  Target,
                                  attach,
                                  detach,
                                  discover,
                                  list_sessions,
                                  rescan,
                                  split_portal,
)
from toolkit.iscsi.reservations import read_reservation, reservation_warning

__all__ = [
    "AttachResult", "Chap", "DetachResult", "DiscoveryResult", "IscsiAuthError", "IscsiError",
    "IscsiPortalUnreachable", "IscsiSessionExists", "IscsiTargetNotFound", "IscsidNotRunning",
    "Target", "attach", "detach", "discover", "ensure_iscsid", "generate_initiator_name",
    "list_sessions", "read_initiator_name", "read_reservation", "rescan",
    "reservation_warning", "set_initiator_name", "split_portal",
]
