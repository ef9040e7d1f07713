#!/bin/bash
# Run the Recovery Toolkit tests. On a fresh Debian 12 machine, as root:
#
#   ./tests/run.sh                  everything: lint, unit, host, ISO build, VM tests
#                                   (the VM tests in two runs beside the others)
#   ./tests/run.sh -m unit          only the fast layer (seconds)
#   ./tests/run.sh -m "unit or host"   no ISO, no VM
#
# Installs what the tests need (apt packages, a venv from requirements-dev.lock).
# With no arguments it rebuilds the ISO first (./build_iso.sh), so the VM tests
# always boot an ISO made from this tree; with arguments they boot build/rtk.iso.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (loop devices, mkfs, tgtd, QEMU)" >&2; exit 1; }

# Every program the tests run, or the code under test runs on the host (the unit and
# host layers), and the VM lab's. Not udev: the tests run without a udev daemon and
# without udevadm, as a fresh Debian 12 machine of this kind has neither.
APT_PACKAGES=(
    python3 python3-venv                          # Debian's Python for the venv (not a pyenv build)
    qemu-system-x86 ipxe-qemu ovmf tgt            # VM lab: QEMU, netboot ROMs, UEFI, iSCSI target
    qemu-utils qemu-system-common                 # qemu-img: container images; qemu-storage-daemon: FUSE exports (smaller disks)
    util-linux mount fdisk gdisk                  # losetup, partx, blkid, blockdev, blkdiscard, sfdisk, sgdisk
    cloud-guest-utils                             # growpart
    dosfstools e2fsprogs ntfs-3g xfsprogs mtools  # mkfs.*, fsck.vfat, debugfs, ntfs*, xfs_*, mtype
    libfuse2 fuse3                                # fusepy (the bad-sector disk), fusermount
    gddrescue diffutils                           # ddrescuelog, cmp
    partclone                                     # used blocks: filesystem allocation maps (-D)
    libhivex-bin                                  # hivexsh, hivexget: Windows SYSTEM hives (restore)
    cryptsetup-bin                                # cryptsetup: a LUKS volume in a restore image
    lvm2                                          # lvs: an image's LVM metadata read (the host has no device-mapper: nothing activated)
    zstd xz-utils gzip                            # compressed images
    curl openssl ca-certificates                  # HTTP(S) images, the test CA
    iproute2 iputils-ping                         # rtk net
    udpcast                                       # udp-sender, udp-receiver: multicast fleets
    openssh-client                                # ssh-keygen, ssh: remote access (host keys, logins)
    tmux                                          # the remote menu's terminal (rtk-remote-login)
    xorriso isolinux                              # a small iso-hybrid image for the RTK-DATA README commands
)
./.ci/apt-install.sh "test dependencies" "${APT_PACKAGES[@]}"
# Debian starts a system-wide tgtd on install; the VM lab runs its own on 127.0.0.1:3260.
if command -v systemctl >/dev/null && systemctl is-active --quiet tgt 2>/dev/null; then
    systemctl stop tgt
fi

if [ ! -x .venv/bin/python ] || ! cmp -s requirements-dev.lock .venv/.installed-lock; then
    echo "== test venv from requirements-dev.lock"
    rm -rf .venv
    /usr/bin/python3 -m venv .venv   # Debian's, whatever python3 is first on PATH
    .venv/bin/pip install -q --require-hashes -r requirements-dev.lock
    .venv/bin/pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
        || .venv/bin/pip install -q --no-deps -e .
    cp requirements-dev.lock .venv/.installed-lock
fi

if [ $# -eq 0 ]; then
    echo "== ruff"
    .venv/bin/ruff check .
    echo "== ISO"
    ./build_iso.sh
fi
# Debian 13's dracut-core for the dracut host test (tests/dracut_debs.py: cached, verified
# with the ISO chroot's archive keyring); needs build/iso/chroot, so only after a build
if [ -d build/iso/chroot/usr/share/keyrings ]; then
    echo "== dracut-core .deb for the dracut host test"
    python3 tests/dracut_debs.py
fi
if [ $# -gt 0 ]; then
    echo "== pytest $*"
    exec .venv/bin/python -m pytest "$@"
fi
# Everything: three pytest runs at once, each in its own temporary directory, their lines
# prefixed and written whole: the VM lab in two (each boots one TCG guest at a time: one
# core each; the longest files, the hardware lab and the unattended boots, apart from the
# others so that both take about as long) beside the unit and host layers. The run fails
# when any fails.
VM_APART=(tests/test_hardware_vm.py tests/test_unattended_vm.py)
echo "== pytest -m vm (two runs), beside pytest -m 'not vm'"
stream() {  # NAME ARGS...: a pytest whose output lines start with [NAME]
    local name=$1; shift
    .venv/bin/python -m pytest -p no:cacheprovider --basetemp="/tmp/rtk-tests-$name" "$@" \
        2>&1 | sed -u "s/^/[$name] /"
    return "${PIPESTATUS[0]}"
}
stream vm1 -m vm "${VM_APART[@]}" & vm1=$!
stream vm2 -m vm "${VM_APART[@]/#/--ignore=}" & vm2=$!
set +e
stream rest -m "not vm"; rest=$?
wait "$vm1"; vm1rc=$?
wait "$vm2"; vm2rc=$?
echo "== pytest: unit and host layers exit $rest, VM layer exit $vm1rc and $vm2rc"
[ "$rest" = 0 ] && [ "$vm1rc" = 0 ] && [ "$vm2rc" = 0 ]
