#!/usr/bin/env bash
# Two userspace stacks talking through the kernel: synack serve on tun0, synack fetch on
# tun1, and the kernel routing between them. Each side leaves its own capture.
set -euo pipefail
source "$(dirname "$0")/common.sh"
restore_signals "$0" "$@"

usage() {
  cat <<USAGE
usage: sudo $0 [-n NAMESPACE] [-o DIR] [-c CACERT] [URL] [-- FETCH-OPTIONS...]

Builds synack (release) and makes namespace NAMESPACE (default synack-two) with two TUN
devices and forwarding on:
  tun0  kernel side 10.77.0.1/24   synack serve at 10.77.0.2 (HTTP, HTTPS, DNS)
  tun1  kernel side 10.77.1.1/24   synack fetch at 10.77.1.2
Then fetches URL (default https://synack.test/) from the client stack: the name is
resolved by the server stack's DNS responder, the packets go tun1 -> kernel -> tun0 and
back, and the certificate is verified with --cacert against the one serve made (or
against CACERT, to see what an untrusted certificate does).
FETCH-OPTIONS go to 'synack fetch' (for example -- --loss 5 or -- -o body.bin).
Both captures stay in DIR (default captures/two-stacks-<time>/): serve.pcapng and
fetch.pcapng, with the certificate. Everything else is removed on exit, Ctrl-C included.
The exit code is fetch's.
USAGE
}

ns=synack-two
dir=""
cacert=""
while getopts "n:o:c:h" opt; do
  case $opt in
    n) ns=$OPTARG ;;
    o) dir=$OPTARG ;;
    c) cacert=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
url=https://synack.test/
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  url=$1
  shift
fi
[ "${1:-}" != "--" ] || shift
need_root

top=$(repo_dir)
cd "$top"
[ -n "$dir" ] || dir="captures/two-stacks-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$dir"
work=$(mktemp -d)
server_pid=""

trap cleanup_run EXIT
trap 'exit 130' INT TERM

step "build"
bin=$(build_synack "$0")

step "namespace $ns: tun0 (server side) and tun1 (client side), forwarding on"
"$top/netns-scripts/up.sh" -n "$ns" -d tun0 -a 10.77.0.1/24
"$top/netns-scripts/up.sh" -n "$ns" -d tun1 -a 10.77.1.1/24
ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1

step "synack serve on tun0 at 10.77.0.2"
# Not through a function: $! must be synack itself so that SIGTERM reaches it.
ip netns exec "$ns" "$bin" serve --tun tun0 --addr 10.77.0.2/24 --capture "$dir/serve.pcapng" \
  --cert-out "$dir/synack-cert.pem" --journey text --journey-file "$work/serve-journey.txt" \
  2>"$work/server.log" &
server_pid=$!
wait_for 20 grep -q "synack: serving" "$work/server.log" || { cat "$work/server.log" >&2; die "the server did not start"; }
cat "$work/server.log"

[ -n "$cacert" ] || cacert="$dir/synack-cert.pem"
step "synack fetch on tun1 at 10.77.1.2: $url"
rc=0
ip netns exec "$ns" "$bin" fetch --tun tun1 --addr 10.77.1.2/24 --resolver 10.77.0.2 \
  --cacert "$cacert" --capture "$dir/fetch.pcapng" -o "$work/body" "$@" "$url" || rc=$?
[ ! -f "$work/body" ] || echo "body: $(wc -c <"$work/body") bytes"

step "stop the server (SIGTERM)"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
grep -E "stopped|complete" "$work/server.log"

step "the server's journey"
cat "$work/serve-journey.txt"

step "the client's capture ($dir/fetch.pcapng)"
packet_summary "$dir/fetch.pcapng"
step "the server's capture ($dir/serve.pcapng)"
packet_summary "$dir/serve.pcapng"

step "done (fetch exited with $rc)"
echo "captures: $dir/fetch.pcapng (the client's side) and $dir/serve.pcapng (the server's side)"
echo "the same segments appear in both, each from its own end: compare the handshake, and the"
echo "TIME-WAIT on the client's side (it closed first)."
exit "$rc"
