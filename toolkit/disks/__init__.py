"""Disks: what is attached, what names it, and whether it may be written.

| module | holds |
|---|---|
| ``probe`` | the raw facts: sysfs, udev, mounts, swaps, iSCSI sessions (``--dump-probe``) |
| ``inventory`` | :class:`Disk` and :class:`Partition` built from a probe (``list_disks``) |
| ``mounts`` | /proc/self/mountinfo and /proc/swaps parsers |
| ``roles`` | SOURCE/TARGET roles of attached LUNs, the kernel read-only flag of SOURCE disks |
| ``identity`` | the one identity record of a disk (reports, menu, unattended) and its labels |
| ``ptable`` | the partition table read from the disk itself: GPT (CRCs, backup header), MBR |
| ``cluster`` | cluster disk identity: disk GUID or MBR signature, CSV IDs, clones noted |
| ``cluster_compare`` | what a copy does to cluster disks, said before it (``comparison``) |
| ``endpoint`` | a path resolved to its disk or partition (:class:`Endpoint`, ``resolve``) |
| ``eligibility`` | may this disk be written at all (in use, boot medium, read-only, SOURCE) |
| ``overlap`` | do two ends lie on one medium (same device, partition, serial/WWN, loop file) |
| ``aliases`` | every device and file a path stands for (links, nodes, partitions, loops, dm) |
| ``consent`` | what a person named the target with, and whether it names the target |
| ``decision`` | the write gate's decision: every reason a target must not be written |
| ``gate`` | the write gate: the only writable descriptor (the hold); imports the decision |
"""
