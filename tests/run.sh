#!/bin/bash
# Run the Recovery Toolkit tests. On a fresh Debian 12 machine, as root:
#
#   ./tests/run.sh                  everything: lint, unit, host, ISO build, VM tests
#   ./tests/run.sh -m unit          only the fast layer (seconds)
#   ./tests/run.sh -m "unit or host"   no ISO, no VM
#
# Installs what the tests need (apt packages, a venv from requirements-dev.lock).
# With no arguments it rebuilds the ISO first (./build_iso.sh), so the VM tests
# always boot an ISO made from this tree; with arguments they boot build/rtk.iso.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

[ "$(id -u)" = 0 ] || { echo "tests/run.sh: run as root (loop devices, mkfs, tgtd, QEMU)" >&2; exit 1; }

APT_PACKAGES=(python3 python3-venv qemu-system-x86 ipxe-qemu qemu-utils ovmf tgt gdisk fdisk util-linux libfuse2 fuse3
              dosfstools e2fsprogs ntfs-3g xfsprogs gddrescue zstd xz-utils curl mtools
              cloud-guest-utils iproute2 iputils-ping openssl)
need=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing test dependencies: ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# Debian starts a system-wide tgtd on install; the VM lab runs its own on 127.0.0.1:3260.
if command -v systemctl >/dev/null && systemctl is-active --quiet tgt 2>/dev/null; then
    systemctl stop tgt
fi

if [ ! -x .venv/bin/python ] || ! cmp -s requirements-dev.lock .venv/.installed-lock; then
    echo "== test venv from requirements-dev.lock"
    rm -rf .venv
    python3 -m venv .venv
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
echo "== pytest $*"
exec .venv/bin/python -m pytest "$@"
