#!/bin/sh
# Write the netboot artifacts of a built live system into OUT:
#   vmlinuz, initrd.img, filesystem.squashfs   served over HTTP (and TFTP for PXELINUX)
#   boot.ipxe, pxelinux.cfg/default, grub.cfg  example boot entries
#   SHA256SUMS
# live-boot's fetch= downloads the squashfs into RAM at boot: no CD, no NFS.
#
#   make_netboot.sh BINARY_DIR OUT "KERNEL PARAMETERS" [BASE_URL]
#
# BASE_URL is where OUT will be served (default: http://192.0.2.10/rtk, a
# documentation address to replace; or set RTK_NETBOOT_URL for build_iso.sh).
set -eu
BIN=$1 OUT=$2 APPEND=$3 BASE=${4:-http://192.0.2.10/rtk}
rm -rf "$OUT"
mkdir -p "$OUT/pxelinux.cfg"
cp "$BIN/live/vmlinuz" "$BIN/live/initrd.img" "$BIN/live/filesystem.squashfs" "$OUT/"
NET="$APPEND fetch=$BASE/filesystem.squashfs"

cat > "$OUT/boot.ipxe" <<CFG
#!ipxe
# Recovery Toolkit over the network. Serve this directory as $BASE/
# and chain this script from your iPXE: chain $BASE/boot.ipxe
# The live system is fetched into RAM (fetch=): give machines 2 GiB or more.
set base $BASE
set rtk
# Unattended: one plan file per machine, named after its MAC address
# (plans/52-54-00-12-34-56.yaml). Uncomment to restore every machine booting this:
# set rtk rtk.mode=restore rtk.plan=\${base}/plans/\${net0/mac:hexhyp}.yaml rtk.report=http://192.0.2.10:8080/report
kernel \${base}/vmlinuz initrd=initrd.img $NET BOOTIF=01-\${net0/mac:hexhyp} \${rtk}
initrd \${base}/initrd.img
boot
CFG

cat > "$OUT/pxelinux.cfg/default" <<CFG
# PXELINUX (BIOS): put vmlinuz and initrd.img under rtk/ on the TFTP server;
# the squashfs is fetched over HTTP from $BASE/.
# IPAPPEND 2 passes BOOTIF= so live-boot uses the NIC that booted.
DEFAULT rtk
PROMPT 1
TIMEOUT 50

LABEL rtk
	KERNEL rtk/vmlinuz
	APPEND initrd=rtk/initrd.img $NET
	IPAPPEND 2

LABEL rtk-restore
	# Unattended: the plan file names the image, the disk and the consent.
	KERNEL rtk/vmlinuz
	APPEND initrd=rtk/initrd.img $NET rtk.mode=restore rtk.plan=$BASE/plans/node.yaml rtk.done=reboot
	IPAPPEND 2
CFG

# GRUB names an HTTP file (http,HOST[:PORT])/PATH
GRUB_DEV=$(echo "$BASE" | sed -E 's#^(https?)://([^/]+).*#(\1,\2)#')
GRUB_PATH=$(echo "$BASE" | sed -E 's#^https?://[^/]+##')
cat > "$OUT/grub.cfg" <<CFG
# GRUB (UEFI network boot, grubnetx64.efi): everything over HTTP from $BASE/.
insmod http
set timeout=5
set default=0
menuentry "Recovery Toolkit (network)" {
	linux $GRUB_DEV$GRUB_PATH/vmlinuz $NET
	initrd $GRUB_DEV$GRUB_PATH/initrd.img
}
menuentry "Recovery Toolkit: unattended restore (plans/node.yaml)" {
	linux $GRUB_DEV$GRUB_PATH/vmlinuz $NET rtk.mode=restore rtk.plan=$BASE/plans/node.yaml rtk.done=reboot
	initrd $GRUB_DEV$GRUB_PATH/initrd.img
}
CFG

(cd "$OUT" && sha256sum vmlinuz initrd.img filesystem.squashfs > SHA256SUMS)
