"""``rtk restore``: write an OS image onto a disk.

    rtk restore IMAGE TARGET [--sha256 HEX] [--grow] [--no-verify] [--ca-file F]
                             [--insecure] [--tmpdir DIR] [--hash blake3|sha256]
                             [--outage-limit DURATION] [--boot-mode any|uefi|bios]
                             [--replay-vhdx-log-in-place] [--windows-drivers auto|on|off]
                             [--linux-initramfs auto|on|off]
                             [--yes --target-id SERIAL]

IMAGE: a file or an HTTP(S) URL; raw (optionally gzip/xz/zstd), qcow2, VHD,
VHDX or VMDK, recognised by content. A given SHA-256 is checked before
anything is written. Exit codes: 0 ok; 4 checksum mismatch (nothing written)
or verification mismatch; 5 refused (nothing written; also Ctrl-C at the
confirmation); 1 failed or interrupted (the target is left without a partition
table); 2 usage error. The
confirmation is Disk Copy's (:mod:`toolkit.cli.common`): type the target's
serial (or device name), or ``--yes --target-id ID`` in scripts.
"""

from __future__ import annotations

import argparse
import sys

from toolkit.blockio.hashing import ALGORITHMS
from toolkit.cli.common import confirmed, err, refused, run_with_progress
from toolkit.cli.copy import duration
from toolkit.disks.transport import DEFAULT_LIMIT
from toolkit.exitcodes import EXIT_REFUSED
from toolkit.units import human_size


def _summary(plan) -> None:
    img, t = plan.image, plan.target
    size = f"{img.size} bytes ({human_size(img.size)})" if img.size else "unknown until written"
    print(f"image:  {img.location} ({img.kind}, {size})", file=sys.stderr)
    print(f"target: {t.label()}", file=sys.stderr)
    sha = img.expected_sha256 and f"{img.expected_sha256} (from {img.sha256_from})"
    print(f"sha256: {sha or 'not given'}; verify {'on' if plan.options.verify else 'off'}; "
          f"grow {'on' if plan.options.grow else 'off'}", file=sys.stderr)
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _finish(result, said: tuple[str, ...] = ()) -> int:
    """What the restore did, after it (``said``: the plan's warnings, printed before)."""
    print(result.message)
    done = tuple((result.shrink or {}).get("done") or ())
    for step in done:  # onto a smaller disk: what was checked, repaired and shrunk
        print(f"shrink: {step}")
    for w in result.warnings:  # found while it ran (a download restarted, a repair...)
        if w not in said and w not in done:
            print(f"warning: {w}", file=sys.stderr)
    if result.input_sha256:
        print(f"sha256 image file: {result.input_sha256}")
    if result.image_hash:
        print(f"{result.algorithm} written bytes: {result.image_hash}")
    for step in result.fit:
        print(f"fit: {step}")
    for s in (result.contents or {}).get("systems", []):
        print(f"system: {s['name']} (partition {s['partition']})")
    if result.boot:
        print(f"boot: {result.boot.message}")
    from toolkit.restore import windows_drivers
    for line in windows_drivers.summary(result.windows_drivers):
        print(f"windows drivers: {line}")
    from toolkit.restore import linux_report
    for line in linux_report.summary(result.linux_initramfs):
        print(f"linux initramfs: {line}")
    if result.report:
        print(f"report: {result.report.text}")
    return result.exit_code


def _udpcast_unchecked(image: str, sha256: str | None) -> str | None:
    """Why a udpcast:// IMAGE without a SHA-256 is refused (as the menu and the plans
    refuse it), or None."""
    from toolkit.restore import multicast
    if not multicast.is_multicast(image) or sha256:
        return None
    try:
        if multicast.parse(image).sha256:
            return None
    except ValueError:
        return None  # the plan says what is wrong with it
    return (f"{image}: a multicast image needs its SHA-256 (?sha256=HEX, what rtk fleet "
            "serve prints, or --sha256): the stream is whatever a sender on that port "
            "sends, and only the SHA-256 tells the planned image from another; nothing "
            "was written")


def cmd_restore(args: argparse.Namespace) -> int:
    from toolkit import restore  # imported here: `rtk copy` need not load requests

    why = _udpcast_unchecked(args.image, args.sha256)
    if why:
        err(why)
        return EXIT_REFUSED
    options = restore.RestoreOptions(
        verify=args.verify, grow=args.grow, sha256=args.sha256, ca_file=args.ca_file,
        insecure=args.insecure, tmpdir=args.tmpdir, algorithm=args.algorithm,
        outage_limit=args.outage_limit, boot_mode=args.boot_mode,
        vhdx_log="in-place" if args.replay_vhdx_log_in_place else "copy",
        windows_drivers=args.windows_drivers, linux_initramfs=args.linux_initramfs)
    try:
        plan = restore.plan_restore(args.image, args.target, options)
        _summary(plan)
        consent = confirmed(args, plan.target, "restore")
        if not consent:
            return EXIT_REFUSED
    except restore.Refused as e:
        return refused(e, "restore")
    except KeyboardInterrupt:  # Ctrl-C while probing or at the confirmation
        print(file=sys.stderr)
        err("restore cancelled (Ctrl-C): nothing was written")
        return EXIT_REFUSED
    return run_with_progress("restore", lambda line, cancel: restore.restore(
        plan, progress=line, cancel=cancel, consent=consent),
        lambda result: _finish(result, tuple(plan.warnings)))


def register(sub) -> None:
    """Add ``restore`` to ``rtk``'s subcommands."""
    p = sub.add_parser("restore", help="write an OS image (raw, compressed, qcow2, VHD(X), "
                                       "VMDK; file or URL) onto a disk",
                       description="Restore IMAGE onto the disk TARGET, first MiB last, "
                                   "verified; refuses unsafe targets before writing.")
    p.add_argument("image", metavar="IMAGE", help="a file or an http(s):// URL")
    p.add_argument("target", metavar="TARGET", help="the disk to overwrite")
    p.add_argument("--sha256", metavar="HEX",
                   help="expected SHA-256 of IMAGE (default: IMAGE.sha256 if it exists)")
    p.add_argument("--grow", action="store_true",
                   help="grow the last partition and its filesystem to the end of the disk")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="read the target back and compare (default: on)")
    p.add_argument("--hash", dest="algorithm", choices=ALGORITHMS, default="blake3",
                   help="hash of the written image bytes in the report (default: blake3)")
    p.add_argument("--ca-file", metavar="FILE", help="CA certificate(s) for an https:// IMAGE")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the server's TLS certificate")
    p.add_argument("--tmpdir", metavar="DIR",
                   help="where container images from a URL are downloaded (default: $TMPDIR)")
    p.add_argument("--outage-limit", type=duration, default=DEFAULT_LIMIT, metavar="DURATION",
                   help="how long an outage of the target's storage path (an iSCSI session "
                        "lost) is waited out before the restore fails (default: 10m; 30s, "
                        "2h...); what failed meanwhile is written again")
    p.add_argument("--boot-mode", choices=("any", "uefi", "bios"), default="any",
                   help="the firmware mode the restored disk must boot in: an image that "
                        "does not is refused before writing (default any: this machine's "
                        "mode, a mismatch only warned about)")
    p.add_argument("--replay-vhdx-log-in-place", action="store_true",
                   help="a VHDX whose log was never replayed: replay it in IMAGE itself "
                        "(it changes) instead of on a copy in --tmpdir")
    p.add_argument("--windows-drivers", choices=("auto", "on", "off"), default="auto",
                   help="after a Windows image: make the storage drivers Windows ships start "
                        "at boot in every control set (Start 0, StartOverride deleted), so it "
                        "boots on another controller; auto (default): when the target's "
                        "controller is not one the image already boots from")
    p.add_argument("--linux-initramfs", choices=("auto", "on", "off"), default="auto",
                   help="after a Linux image (ext4 or XFS root, also on LVM): rebuild the "
                        "initramfs of every kernel it has in a chroot with its own tool "
                        "(dracut or update-initramfs), so it holds the target's controller "
                        "module, and check fstab's devices are on the disk; auto (default): "
                        "only when a kernel's initramfs lacks that module (looked at first "
                        "on the disk mounted read-only, nothing written; not when the "
                        "controller is not known); on: always when a Linux root is found")
    p.add_argument("--yes", action="store_true", help="no interactive confirmation")
    p.add_argument("--target-id", metavar="ID", help="with --yes: the target's serial or WWN")
    p.set_defaults(func=cmd_restore)
