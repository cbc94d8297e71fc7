#!/usr/bin/env bash
# Impairs the kernel's side of the namespace's TUN device, and says what is in force:
# tc netem where the kernel has it; otherwise nftables for loss and tbf for rate, and a
# plain word on what cannot be done here (synack's own --delay, --reorder... can).
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: sudo $0 [-n NAMESPACE] [-d DEVICE] [--loss PCT] [--delay MS] [--jitter MS]
                 [--reorder PCT] [--duplicate PCT] [--corrupt PCT] [--rate KBIT]
       sudo $0 [-n NAMESPACE] [-d DEVICE] show
       sudo $0 [-n NAMESPACE] [-d DEVICE] clear

Sets impairment on DEVICE (default $SYNACK_TUN) in NAMESPACE (default $SYNACK_NS), the
kernel's side of the link to synack, replacing what was there, then shows what is in
force. With netem (tc qdisc ... netem) every option works, on the kernel's egress. This
machine's kernel may lack netem; then:
  --loss   nftables drops that share of packets both ways (numgen random)
  --rate   tbf shapes the kernel's egress
  others   cannot be done in the kernel here: the script says so and exits 3; use
           synack's own fault flags (synack serve --delay 20 ...), which need no kernel help
'show' prints what is in force; 'clear' removes it all.
USAGE
}

dev=$SYNACK_TUN
action=set
loss="" delay="" jitter="" reorder="" duplicate="" corrupt="" rate=""
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    -n) SYNACK_NS=$2; shift ;;
    -d) dev=$2; shift ;;
    --loss) loss=$2; shift ;;
    --delay) delay=$2; shift ;;
    --jitter) jitter=$2; shift ;;
    --reorder) reorder=$2; shift ;;
    --duplicate) duplicate=$2; shift ;;
    --corrupt) corrupt=$2; shift ;;
    --rate) rate=$2; shift ;;
    show|clear) action=$1 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
need_root
ns_exists "$SYNACK_NS" || die "no namespace $SYNACK_NS: make it with netns-scripts/up.sh -n $SYNACK_NS"
in_ns() { ip netns exec "$SYNACK_NS" "$@"; }
in_ns ip link show "$dev" >/dev/null 2>&1 || die "no device $dev in $SYNACK_NS"

table=synack_impair

number() { # number NAME VALUE MAX: a decimal in 0..MAX, or die with the range
  [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v v="$2" -v m="$3" 'BEGIN { exit !(v <= m) }' ||
    die "--$1 $2 is out of range 0..$3"
}

clear_all() {
  in_ns tc qdisc del dev "$dev" root 2>/dev/null || true
  in_ns nft delete table inet "$table" 2>/dev/null || true
}

show() {
  echo "impairment on $dev in $SYNACK_NS:"
  local qdisc
  qdisc=$(in_ns tc qdisc show dev "$dev" | grep -E "netem|tbf" || true)
  [ -z "$qdisc" ] || echo "  tc:  $qdisc"
  if in_ns nft list table inet "$table" >/dev/null 2>&1; then
    in_ns nft list table inet "$table" | grep -E "drop" | sed 's/^[[:space:]]*/  nft: /'
  fi
  [ -n "$qdisc" ] || in_ns nft list table inet "$table" >/dev/null 2>&1 || echo "  none"
}

case $action in
  show) show; exit 0 ;;
  clear) clear_all; show; exit 0 ;;
esac

[ -z "$loss" ] || number loss "$loss" 100
for v in delay jitter; do [ -z "${!v}" ] || number "$v" "${!v}" 10000; done
for v in reorder duplicate corrupt; do [ -z "${!v}" ] || number "$v" "${!v}" 100; done
[ -z "$rate" ] || number rate "$rate" 100000000
clear_all

# netem, if this kernel has it: everything in one qdisc.
netem=()
[ -z "$loss" ] || netem+=(loss "$loss%")
[ -z "$delay" ] || netem+=(delay "${delay}ms" ${jitter:+"${jitter}ms"})
[ -z "$reorder" ] || netem+=(reorder "$reorder%")
[ -z "$duplicate" ] || netem+=(duplicate "$duplicate%")
[ -z "$corrupt" ] || netem+=(corrupt "$corrupt%")
[ -z "$rate" ] || netem+=(rate "${rate}kbit")
if [ ${#netem[@]} -eq 0 ]; then
  show
  exit 0
fi
if err=$(in_ns tc qdisc add dev "$dev" root netem "${netem[@]}" 2>&1); then
  echo "using netem"
  show
  exit 0
fi
echo "netem is not available here (tc says: ${err%%$'\n'*}); falling back"
rc=0
if [ -n "$loss" ]; then
  # Per mille, so 0.5 % works: numgen draws 0..999 for each packet, both ways.
  permille=$(awk -v p="$loss" 'BEGIN { printf "%d", p * 10 + 0.5 }')
  in_ns nft -f - <<NFT
table inet $table {
  chain egress { type filter hook output priority 0; oifname "$dev" numgen random mod 1000 < $permille counter drop; }
  chain ingress { type filter hook input priority 0; iifname "$dev" numgen random mod 1000 < $permille counter drop; }
}
NFT
  echo "loss $loss%: nftables drops it both ways"
fi
if [ -n "$rate" ]; then
  # A burst of at least one full packet, or tbf passes nothing.
  in_ns tc qdisc add dev "$dev" root tbf rate "${rate}kbit" burst 16kb latency 400ms
  echo "rate $rate kbit/s: tbf shapes the kernel's egress"
fi
for v in delay jitter reorder duplicate corrupt; do
  if [ -n "${!v}" ]; then
    echo "cannot do --$v here: the kernel has no netem; synack's own --$v does it (synack serve --$v ${!v})"
    rc=3
  fi
done
show
exit "$rc"
