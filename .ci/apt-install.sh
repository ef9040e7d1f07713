#!/bin/bash
# Install those of the Debian packages named that are not installed yet.
#
#   .ci/apt-install.sh WHAT PACKAGE...     (WHAT says what they are for, in the message)
#
# build_iso.sh (its build dependencies) and tests/run.sh (the tests') both use it.
set -euo pipefail
what=$1
shift
need=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing $what: ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
