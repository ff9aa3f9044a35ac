#!/bin/sh
# Raises the system limits bench/compare.py needs for N held connections on
# loopback, as far as this machine allows, and says what it did.
# Usage: scripts/bench-limits.sh N
#
# - net.ipv4.ip_local_port_range 1024-65535: ~64k ports per source address
#   (loadgen spreads connections over 64 of them, 127.0.0.2-65).
# - fs.file-max: both ends of every connection are descriptors of this
#   machine: 2N plus room.
# - net.ipv4.tcp_max_syn_backlog 8192: a burst of connects is not dropped
#   before the servers' 4096-entry accept queues.
# - nf_conntrack_max, only when connection tracking is loaded: every loopback
#   connection would take an entry.
# The per-process descriptor limit (RLIMIT_NOFILE) is raised to its hard limit
# by the Makefile's shell and by loadgen; the hard limit itself (20,000 here)
# cannot be raised, which is why the servers and loadgen run many processes.
set -eu
n=${1:-100000}
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-limits: not root: leaving sysctls as they are" >&2
    exit 0
fi
set_at_least() {   # name value: raise a single-valued sysctl to value
    cur=$(sysctl -n "$1" 2>/dev/null) || return 0
    if [ "$cur" -lt "$2" ]; then
        sysctl -q -w "$1=$2" && echo "bench-limits: $1 $cur -> $2"
    fi
}
sysctl -q -w net.ipv4.ip_local_port_range="1024 65535"
set_at_least fs.file-max $((2 * n + 200000))
set_at_least net.ipv4.tcp_max_syn_backlog 8192
[ -e /proc/sys/net/netfilter/nf_conntrack_max ] &&
    set_at_least net.netfilter.nf_conntrack_max $((n + n / 4 + 100000))
exit 0
