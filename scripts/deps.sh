#!/bin/sh
# Installs the Debian packages nudge builds and tests with, only those missing.
# Usage: scripts/deps.sh [build|test]   (test adds the packages the test suites use)
# Runs as root on a fresh Debian 12 machine; as another user it only reports.
set -eu

build_pkgs="gcc make pkg-config curl libuv1-dev node-llhttp libjansson-dev libinih-dev libssl-dev libsqlite3-dev"
test_pkgs="libcmocka-dev python3 python3-pytest python3-pytest-xdist iproute2 nftables dovecot-core dovecot-lmtpd dovecot-imapd lua-socket lua-dkjson"

want="$build_pkgs"
[ "${1:-build}" = test ] && want="$want $test_pkgs"

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: not root: install these packages first:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
