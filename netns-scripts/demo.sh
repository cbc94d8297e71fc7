#!/usr/bin/env bash
# The journey of an HTTP request, end to end: builds synack, makes a namespace, serves,
# runs curl against it, stops cleanly, and shows the journey and the capture.
set -euo pipefail
source "$(dirname "$0")/common.sh"
# Started in the background (cargo test &, nohup, an init script), bash inherits SIGINT
# ignored and cannot trap it; start again with the default, so Ctrl-C always cleans up.
restore_signals "$0" "$@"

usage() {
  cat <<USAGE
usage: sudo $0 [-n NAMESPACE] [-o CAPTURE.pcapng]

Builds synack (release), creates namespace NAMESPACE (default synack-demo) with tun0
(kernel side 10.77.0.1/24), runs 'synack serve' at 10.77.0.2 with a capture, points the
namespace's resolver at synack's DNS responder, and from the namespace runs curl:
GET http://synack.test/ (by name), two requests on one kept-alive connection, POST /json,
GET https://synack.test/ (verified with --cacert against the certificate synack made),
GET /bytes/1000000. Then stops the server with SIGTERM, prints each connection's
journey and, if tshark is installed, one line per captured packet. The capture stays
in CAPTURE (default captures/demo-<time>.pcapng). Everything else is removed on exit,
Ctrl-C included.
USAGE
}

ns=synack-demo
capture=""
while getopts "n:o:h" opt; do
  case $opt in
    n) ns=$OPTARG ;;
    o) capture=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_root

top=$(repo_dir)
cd "$top"
[ -n "$capture" ] || capture="captures/demo-$(date +%Y%m%d-%H%M%S).pcapng"
work=$(mktemp -d)
server_pid=""

trap cleanup_run EXIT
trap 'exit 130' INT TERM
in_ns() { ip netns exec "$ns" "$@"; }

step "build"
bin=$(build_synack "$0")

step "namespace $ns: tun0, kernel side $SYNACK_KERNEL_ADDR"
"$top/netns-scripts/up.sh" -n "$ns"

step "synack serve at ${SYNACK_STACK_ADDR%/*}, capturing to $capture"
# Not through in_ns: a backgrounded function is a subshell, and $! must be synack itself
# (ip netns exec execs it) so that SIGTERM reaches it.
ip netns exec "$ns" "$bin" serve --tun tun0 --addr "$SYNACK_STACK_ADDR" --capture "$capture" \
  --journey text --journey-file "$work/journey.txt" 2>"$work/server.log" &
server_pid=$!
wait_for 20 grep -q "synack: serving" "$work/server.log" || { cat "$work/server.log" >&2; die "the server did not start"; }
cat "$work/server.log"

url="http://${SYNACK_STACK_ADDR%/*}"
# The namespace's resolver is synack's DNS responder (ip netns exec bind-mounts this file
# over /etc/resolv.conf); down.sh removes it with the namespace.
mkdir -p "/etc/netns/$ns"
echo "nameserver ${SYNACK_STACK_ADDR%/*}" > "/etc/netns/$ns/resolv.conf"
step "GET http://synack.test/   (the name resolves through synack's DNS; curl -v shows the heads)"
in_ns curl -sS --max-time 30 -v -o /dev/null "http://synack.test/" 2>&1 | grep -E '^[<>*] ' | grep -v '^\* *Trying\|^\* *Closing' || true

step "two requests on one kept-alive connection: GET /echo, then GET /journey"
in_ns curl -sS --max-time 30 -v "$url/echo" "$url/journey" -o /dev/null -o "$work/journey.json" 2>&1 | grep -E 'Connected|Re-using|^< HTTP' || true
python3 - "$work/journey.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
h = j["handshake"]
print("  /journey says: connection #%d, client ISN %d, our ISN %d, client MSS %s, %d request(s) served before it"
      % (j["id"], h["client_isn"], h["server_isn"], h["client_options"]["mss"], j["requests"]))
PY

step "POST /json"
in_ns curl -sS --max-time 30 -H 'Content-Type: application/json' -d '{"hello": "world", "numbers": [1, 2, 3]}' "$url/json"

step "HTTPS: GET https://synack.test/ verified against synack's own certificate (not -k)"
in_ns curl -sS --max-time 30 -v --cacert "$(dirname "$capture")/synack-cert.pem" -o /dev/null "https://synack.test/" 2>&1 |
  grep -E 'SSL connection|ALPN: server|subject:|SSL certificate verify|< HTTP' || true

step "GET /bytes/1000000"
in_ns curl -sS --max-time 30 -o /dev/null -w '  %{size_download} bytes in %{time_total} s (%{speed_download} bytes/s)\n' "$url/bytes/1000000"

step "stop the server (SIGTERM): the capture is flushed and complete"
# curl leaves once it has sent its FIN; the kernel acknowledges our FIN a moment later.
# Wait (at most 2 s) until no kernel socket is still closing, so that ACK is captured.
wait_for 2 bash -c "[ -z \"\$(ip netns exec '$ns' ss -Htan state fin-wait-1 state fin-wait-2 state closing state last-ack)\" ]" || true
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
grep -E "stopped|complete" "$work/server.log"

step "the journey, one timeline per connection"
cat "$work/journey.txt"

step "the capture, one line per packet"
packet_summary "$capture"

step "done"
echo "capture: $capture"
echo "The HTTPS request shows decrypted in Wireshark (display filter: http): the capture"
echo "carries its own TLS keys, so treat it as secret if the traffic was."
echo
echo "next, with this capture:"
echo "  # each packet as an arrow, with its comment"
echo "  $bin ladder $capture"
echo "  # the numbers, and a picture of the download (open the SVG in a browser)"
echo "  $bin stats $capture --plot ${capture%.pcapng}.svg"
echo "  # in Wireshark, add a column for frame.comment; Statistics > Flow Graph draws the ladder"
echo "  wireshark $capture"
echo "  # the same, each segment saying why it left: serve with --internals on"
echo "  sudo netns-scripts/up.sh && sudo ip netns exec synack $bin serve --internals on"
