#!/usr/bin/env bash
# Makes the namespace synack runs in: a persistent tun0 whose kernel side is 10.77.0.1/24,
# with IPv6 off so captures show only the IPv4 journey. Running it again changes nothing.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [-n NAMESPACE] [-d DEVICE] [-a KERNEL_ADDR/PREFIX] [-m MTU]

Creates network namespace NAMESPACE (default $SYNACK_NS) holding a persistent TUN device
DEVICE (default $SYNACK_TUN) whose kernel side is KERNEL_ADDR (default $SYNACK_KERNEL_ADDR).
Then, inside it:  synack serve --tun $SYNACK_TUN --addr $SYNACK_STACK_ADDR
Idempotent: run it again to change the MTU or to repair a half-made namespace.
USAGE
}

mtu=""
while getopts "n:d:a:m:h" opt; do
  case $opt in
    n) SYNACK_NS=$OPTARG ;;
    d) SYNACK_TUN=$OPTARG ;;
    a) SYNACK_KERNEL_ADDR=$OPTARG ;;
    m) mtu=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_root

ns_exists "$SYNACK_NS" || ip netns add "$SYNACK_NS"
in_ns() { ip netns exec "$SYNACK_NS" "$@"; }
# Before the device exists, so it never gets an IPv6 link-local address or sends
# router solicitations into the capture.
in_ns sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1
in_ns ip link set lo up
if ! in_ns ip link show "$SYNACK_TUN" >/dev/null 2>&1; then
  in_ns ip tuntap add dev "$SYNACK_TUN" mode tun
fi
in_ns ip addr replace "$SYNACK_KERNEL_ADDR" dev "$SYNACK_TUN"
# The kernel's queue of packets waiting for synack to read them. At TUN's default of 500,
# a burst of thousands of new connections (wrk -c 4000) overflows it and the kernel drops
# SYNs and requests (`ip -s link` counts them as TX dropped), which then wait out
# retransmission timeouts. A NIC has rings of a few thousand; 10000 absorbs such a burst.
in_ns ip link set "$SYNACK_TUN" txqueuelen "$SYNACK_TXQUEUELEN"
[ -z "$mtu" ] || in_ns ip link set "$SYNACK_TUN" mtu "$mtu"
in_ns ip link set "$SYNACK_TUN" up
echo "namespace $SYNACK_NS: $SYNACK_TUN $(in_ns ip -4 -br addr show "$SYNACK_TUN" | awk '{print $3}') mtu $(in_ns cat /sys/class/net/"$SYNACK_TUN"/mtu)"
