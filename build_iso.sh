#!/bin/bash
# Build the Recovery Toolkit live ISO: build/rtk.iso (and the versioned file it
# points to), and the netboot artifacts in build/netboot/. Run as root on
# Debian 12 or newer; installs its own build dependencies. Takes about 5 minutes
# on 2 cores the first time.
#
#   ./build_iso.sh            build (reuses live-build's package cache in build/iso/cache)
#   ./build_iso.sh --clean    forget the cache first
#   ./build_iso.sh --usb-image 8G [--usb-fs vfat]
#                             also build/rtk-usb.img: the ISO plus an RTK-DATA partition
#                             (ext4, or vfat/exfat) filling 8G (iso/make_usb_image.sh)
#   RTK_NETBOOT_URL=http://pxe.example/rtk ./build_iso.sh
#                             the URL build/netboot/ will be served from (in its examples)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
ROOT=$PWD
BUILD=${RTK_BUILD_DIR:-$ROOT/build}   # output and live-build cache
LB=$BUILD/iso
# The ISO's Python (trixie) is 3.13: the wheelhouse is fetched for it.
ISO_PYTHON=3.13
CLEAN=0 USB_SIZE="" USB_FS=ext4
while [ $# -gt 0 ]; do
    case "$1" in
        --clean) CLEAN=1 ;;
        --usb-image) USB_SIZE=${2:?--usb-image SIZE (e.g. 8G)}; shift ;;
        --usb-fs) USB_FS=${2:?--usb-fs ext4|vfat|exfat}; shift ;;
        *) echo "usage: $0 [--clean] [--usb-image SIZE [--usb-fs ext4|vfat|exfat]]" >&2; exit 2 ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || { echo "build_iso.sh: run as root (live-build needs it)" >&2; exit 1; }

./.ci/apt-install.sh "build dependencies" live-build debootstrap xorriso isolinux syslinux-common \
    squashfs-tools mtools dosfstools grub-efi-amd64-bin grub-pc-bin python3-venv python3-pip
if [ "$USB_FS" = exfat ]; then ./.ci/apt-install.sh "exFAT tools" exfatprogs; fi

start=$(date +%s)
if [ "$CLEAN" = 1 ]; then rm -rf "$LB"; fi
mkdir -p "$BUILD"

echo "== wheelhouse from requirements.lock for Python $ISO_PYTHON"
[ -x "$BUILD/venv/bin/pip" ] || python3 -m venv "$BUILD/venv"
WHEELS=$BUILD/wheels
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
"$BUILD/venv/bin/pip" download -q --require-hashes --only-binary=:all: \
    --python-version "$ISO_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -r requirements.lock -d "$WHEELS"
"$BUILD/venv/bin/pip" wheel -q --no-deps . -w "$WHEELS"

echo "== live-build tree in $LB"
mkdir -p "$LB"
rm -rf "$LB/config" "$LB/auto"
cp -a iso/auto "$LB/auto"
cp -a iso/config "$LB/config"   # lb config (auto/config) adds its own files around ours
mkdir -p "$LB/config/includes.chroot/opt/rtk"
cp -a "$WHEELS" "$LB/config/includes.chroot/opt/rtk/wheels"
cp requirements.lock "$LB/config/includes.chroot/opt/rtk/requirements.lock"

cd "$LB"
# An interrupted build leaves /proc, /sys, /dev/pts mounted inside the chroot.
{ findmnt -rn -o TARGET | grep "^$LB/" || true; } | sort -r | while read -r mnt; do umount -l "$mnt"; done
lb clean >/dev/null 2>&1 || true   # drops chroot/ and binary/, keeps the package cache
lb config
lb build 2>&1 | tee "$BUILD/lb-build.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "build_iso.sh: lb build failed, see $BUILD/lb-build.log" >&2; exit 1; }
cd "$ROOT"

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ISO=$BUILD/rtk-$VERSION-amd64.iso
size=$(stat -c %s "$LB/live-image-amd64.hybrid.iso")
if [ "$size" -gt 400000000 ]; then   # checked before it replaces the ISO in place
    echo "build_iso.sh: the ISO is $((size / 1000000)) MB, larger than 400 MB; build/rtk.iso not replaced" >&2
    exit 1
fi
# Into place only now, each by one rename: a VM test booting the old build/rtk.iso or
# netboot files keeps reading the old ones (the same inode), a new one gets the new.
mv "$LB/live-image-amd64.hybrid.iso" "$ISO"
ln -sfn "$(basename "$ISO")" "$BUILD/rtk.iso"
# Netboot: kernel, initrd and squashfs with example iPXE/PXELINUX/GRUB entries
# (live-boot's fetch=), for RTK_NETBOOT_URL, the URL they will be served from.
APPEND=$(. "$LB/config/binary" && echo "$LB_BOOTAPPEND_LIVE")
rm -rf "$BUILD/netboot.new" "$BUILD/netboot.old"
iso/netboot/make_netboot.sh "$LB/binary" "$BUILD/netboot.new" "$APPEND" \
    "${RTK_NETBOOT_URL:-http://192.0.2.10/rtk}"
if [ -e "$BUILD/netboot" ]; then mv "$BUILD/netboot" "$BUILD/netboot.old"; fi
mv "$BUILD/netboot.new" "$BUILD/netboot"
rm -rf "$BUILD/netboot.old" "$BUILD/live"   # older builds put the kernel in live/
echo "== $ISO: $((size / 1000000)) MB, built in $(( $(date +%s) - start )) s"
if [ -n "$USB_SIZE" ]; then
    echo "== USB image: $BUILD/rtk-usb.img ($USB_SIZE, RTK-DATA $USB_FS)"
    iso/make_usb_image.sh "$ISO" "$BUILD/rtk-usb.img" "$USB_SIZE" "$USB_FS"
fi
