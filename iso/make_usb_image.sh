#!/bin/sh
# A USB stick image: the ISO, then an RTK-DATA partition filling the rest of SIZE, which
# the toolkit mounts at boot to keep mapfiles, reports and logs across reboots (see the
# README, "Keeping state across reboots: the RTK-DATA partition"). Write it whole, e.g.
#   dd if=build/rtk-usb.img of=/dev/sdX bs=4M oflag=direct
# (not conv=sparse: blocks of zeros must overwrite what the stick held before).
#
#   iso/make_usb_image.sh ISO OUT SIZE [ext4|vfat|exfat]     (build_iso.sh --usb-image SIZE)
#
# SIZE as truncate(1) reads it (8G = 8 GiB, 8GB = 8*10^9: a "16 GB" stick holds 16GB or a
# little less); at least the ISO plus 64 MiB. The filesystem: ext4 (the default: its
# journal survives a power cut best), vfat or exfat (readable on Windows too; exfat needs
# exfatprogs). No loop device and no root needed: the filesystem is made in a file and
# copied into place. The image stays sparse.
set -eu
usage() { echo "usage: $0 ISO OUT SIZE [ext4|vfat|exfat]" >&2; exit 2; }
[ $# -ge 3 ] && [ $# -le 4 ] || usage
ISO=$1 OUT=$2 SIZE=$3 FS=${4:-ext4}
case "$FS" in
    ext4) TYPE=83 ;;   # Linux
    vfat) TYPE=c ;;    # W95 FAT32 (LBA)
    exfat) TYPE=7 ;;   # HPFS/NTFS/exFAT
    *) usage ;;
esac
[ -f "$ISO" ] || { echo "$0: $ISO: no such file" >&2; exit 1; }
for tool in sfdisk dd truncate "mkfs.$FS"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is not installed" >&2; exit 1; }
done
tmp="$OUT.tmp.$$"
part="$OUT.part.$$"
trap 'rm -f "$tmp" "$part"' EXIT
rm -f "$tmp" "$part"
cp --sparse=always "$ISO" "$tmp"
truncate -s "$SIZE" "$tmp"
iso_size=$(stat -c %s "$ISO")
total=$(stat -c %s "$tmp")
if [ "$total" -lt $((iso_size + 64 * 1024 * 1024)) ]; then
    echo "$0: SIZE $SIZE is too small: the ISO has $iso_size bytes, and the data partition needs 64 MiB" >&2
    exit 1
fi
# The same command as on a stick (README): a new partition in the free space after the
# ISO's own (the iso-hybrid image has an MBR: partition 1 the ISO, 2 the EFI image).
echo ",,$TYPE" | sfdisk --quiet --append "$tmp"
# The new partition is the last one listed: "FILE3 : start=   6144, size=  124928, type=83"
line=$(sfdisk --dump "$tmp" | grep ' : start=' | tail -n 1)
start=$(echo "$line" | sed -n 's/.*start= *\([0-9][0-9]*\).*/\1/p')
sectors=$(echo "$line" | sed -n 's/.*size= *\([0-9][0-9]*\).*/\1/p')
[ -n "$start" ] && [ -n "$sectors" ] || { echo "$0: cannot read the new partition: $line" >&2; exit 1; }
truncate -s $((sectors * 512)) "$part"
case "$FS" in
    ext4) mkfs.ext4 -q -F -L RTK-DATA "$part" ;;
    vfat) mkfs.vfat -F 32 -n RTK-DATA -h "$start" "$part" >/dev/null ;;  # -h: where it starts
    exfat) mkfs.exfat -L RTK-DATA "$part" >/dev/null ;;
esac
dd if="$part" of="$tmp" bs=1M seek=$((start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
sync "$tmp"
mv "$tmp" "$OUT"
num=$(echo "${line%% *}" | sed 's/.*[^0-9]\([0-9][0-9]*\)$/\1/')
echo "$OUT: $(stat -c %s "$OUT") bytes: the ISO, then partition $num ($FS, label RTK-DATA, $((sectors / 2048)) MiB)"
