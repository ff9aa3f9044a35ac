#!/bin/sh
# Installs the Debian packages nudge builds and tests with, only those missing.
# Usage: scripts/deps.sh [build|test|bench|fuzz]   (fuzz: clang for make fuzz; test adds the packages the test suites
# and the package test use; bench adds them and nginx with nchan and gnuplot, for bench/compare.py)
# Runs as root on a fresh Debian 12 machine; as another user it only reports.
set -eu

build_pkgs="gcc make pkg-config curl libuv1-dev node-llhttp libjansson-dev libinih-dev libssl-dev libsqlite3-dev libcrypt-dev libsystemd-dev libwbxml2-dev libwslay-dev xxd"
test_pkgs="libcmocka-dev libwbxml2-utils python3 python3-pytest python3-pytest-xdist iproute2 procps nftables dovecot-core dovecot-lmtpd dovecot-imapd lua-socket lua-dkjson"
# tests/e2e/test_activesync_nginx.py puts a real nginx in front of nudged (issue 19).
test_pkgs="$test_pkgs nginx"
# tests/browser drives Debian's Chromium (/usr/bin/chromium) with npm's playwright-core
# (README.md, "Tests"). Node.js and npm come from Debian only when the commands are missing:
# a nodesource nodejs already ships npm, and Debian's npm package would conflict with it.
test_pkgs="$test_pkgs chromium"
node_pkgs=""
command -v node >/dev/null 2>&1 || node_pkgs="nodejs"
command -v npm >/dev/null 2>&1 || node_pkgs="$node_pkgs npm"

# tests/package builds the .deb (dpkg-buildpackage, debhelper), bootstraps a minimal
# Debian 12 chroot to install it in (debootstrap), and checks the systemd unit
# (systemd-analyze, from systemd).
package_pkgs="debhelper dpkg-dev fakeroot debootstrap systemd"

# bench/compare.py measures nudge against nginx with the nchan module, and draws its chart with
# gnuplot; bench/auth.py drives its requests with wrk.
bench_pkgs="nginx libnginx-mod-nchan gnuplot-nox wrk"
# bench/tls_libs compares OpenSSL (libssl-dev, a build package) with wolfSSL and GnuTLS.
bench_pkgs="$bench_pkgs libwolfssl-dev libgnutls28-dev"

# make fuzz builds the libFuzzer targets with clang (not part of make test).
fuzz_pkgs="clang"

want="$build_pkgs"
[ "${1:-build}" = test ] && want="$want $test_pkgs $node_pkgs $package_pkgs"
[ "${1:-build}" = bench ] && want="$want $test_pkgs $node_pkgs $package_pkgs $bench_pkgs"
[ "${1:-build}" = fuzz ] && want="$want $fuzz_pkgs"

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
# Installing nginx would start the system's nginx on port 80; the benchmark runs
# its own in a private prefix. A policy-rc.d that says "no" (101) keeps
# services from starting during the install, unless the machine already has one.
policy=""
case "$missing" in *nginx*)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        policy=/usr/sbin/policy-rc.d
    fi ;;
esac
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
[ -n "$policy" ] && rm -f "$policy"
exit 0
