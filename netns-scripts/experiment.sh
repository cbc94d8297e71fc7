#!/usr/bin/env bash
# A sweep of real transfers between the kernel and synack, one knob at a time, and a table
# of what each did: throughput, retransmissions, segments, handshake RTT. Every cell keeps
# its capture, for synack ladder / stats / Wireshark.
set -euo pipefail
source "$(dirname "$0")/common.sh"
restore_signals "$0" "$@"

usage() {
  cat <<USAGE
usage: sudo $0 [-n NAMESPACE] [-o DIR] [-s BYTES] [-b "RX-BUFS"] [-d "DELAYS"] [-l "LOSSES"] [-q]

In namespace NAMESPACE (default synack-lab), python's http.server (the kernel's TCP) serves
a file of BYTES (default 1000000); synack fetch downloads it once per cell of
  receive buffer  RX-BUFS  (default "4k 64k 1m"): synack's advertised window
  delay           DELAYS   (default "0 5 25" ms, each way, from synack's --delay)
  loss            LOSSES   (default "0 2" %, each way, from synack's --loss)
then, for small writes, uploads 2000 bytes 20 at a time every 2 ms (delay 5 ms each way) with
Nagle on and off. Prints one table row per cell. Captures: DIR (default
captures/experiment-<time>/), one per cell. -q: a quick sweep (2 cells and the Nagle pair).
Each transfer is bounded (30 s); the namespace is removed on exit, Ctrl-C included.
USAGE
}

ns=synack-lab
dir=""
size=1000000
bufs="4k 64k 1m"
delays="0 5 25"
losses="0 2"
while getopts "n:o:s:b:d:l:qh" opt; do
  case $opt in
    n) ns=$OPTARG ;;
    o) dir=$OPTARG ;;
    s) size=$OPTARG ;;
    b) bufs=$OPTARG ;;
    d) delays=$OPTARG ;;
    l) losses=$OPTARG ;;
    q) bufs="4k 1m"; delays="5"; losses="0"; size=300000 ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_root
[[ $size =~ ^[0-9]+$ ]] && [ "$size" -le 100000000 ] || die "-s $size: give a size in bytes, at most 100000000"

top=$(repo_dir)
cd "$top"
[ -n "$dir" ] || dir="captures/experiment-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$dir"
work=$(mktemp -d)
server_pid=""
trap cleanup_run EXIT
trap 'exit 130' INT TERM

bin=$(build_synack "$0")
"$top/netns-scripts/up.sh" -n "$ns" >/dev/null
mkdir -p "$work/www"
head -c "$size" /dev/urandom >"$work/www/file.bin"

# The kernel's side: a file server that also takes uploads (POST answers 200 with the size).
cat >"$work/server.py" <<'PY'
import http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        reply = f"{len(body)} bytes\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("10.77.0.1", 8000), lambda *a: H(*a, directory=sys.argv[1])).serve_forever()
PY
ip netns exec "$ns" python3 "$work/server.py" "$work/www" &
server_pid=$!
wait_for 10 bash -c "ip netns exec '$ns' ss -Htln 'sport = :8000' | grep -q ." || die "the python server did not start"

row() { printf '%-8s %-6s %-6s %-7s %10s %8s %10s %14s\n' "$@"; }
# "retransmissions segments handshake-ms upload-segments" of the one TCP connection in a
# capture, from synack stats --json.
numbers() {
  "$bin" stats --json "$1" | python3 -c '
import json, sys
c = [x for x in json.load(sys.stdin) if x.get("client")][0]
hs = c["handshake_ms"]
print(sum(c["retransmissions"]), sum(c["segments"]), "-" if hs is None else f"{hs:.1f}", c["segments"][0])'
}

cell() { # cell NAME ARGS...: one fetch, one row
  local name=$1; shift
  local cap="$dir/$name.pcapng" start end secs rc=0
  start=$(date +%s.%N)
  ip netns exec "$ns" "$bin" fetch --tun tun0 --addr 10.77.0.2/24 --max-time 30 --no-time-wait \
    --journey off --capture "$cap" -o "$work/out" "$@" >/dev/null 2>"$work/err" || rc=$?
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
  if [ "$rc" -ne 0 ]; then
    echo "FAILED ($(tail -1 "$work/err"))"
    return
  fi
  echo "$secs $(numbers "$cap")"
}

echo "downloads of $size bytes from the kernel's TCP to synack (captures in $dir)"
row rx-buf delay loss "" "MB/s" retx segments "handshake ms"
for buf in $bufs; do
  for delay in $delays; do
    for loss in $losses; do
      out=$(cell "rx$buf-d$delay-l$loss" --rx-buf "$buf" --delay "$delay" --loss "$loss" \
        http://10.77.0.1:8000/file.bin)
      if [[ $out == FAILED* ]]; then
        row "$buf" "${delay}ms" "$loss%" "" "$out" "" "" ""
        continue
      fi
      read -r secs retx segs hs _ <<<"$out"
      mbs=$(awk -v s="$size" -v t="$secs" 'BEGIN { printf "%.2f", s / t / 1e6 }')
      row "$buf" "${delay}ms" "$loss%" "" "$mbs" "$retx" "$segs" "$hs"
    done
  done
done

echo
echo "small writes: 2000 bytes uploaded 20 at a time every 2 ms, 5 ms each way"
printf '%-8s %10s %8s %10s\n' nagle seconds segments "to server"
head -c 2000 /dev/zero | tr '\0' 'x' >"$work/upload"
for nagle in on off; do
  out=$(cell "nagle-$nagle" --nagle "$nagle" --delay 5 --data-file "$work/upload" \
    --write-size 20 --write-every 2 http://10.77.0.1:8000/upload)
  if [[ $out == FAILED* ]]; then
    printf '%-8s %s\n' "$nagle" "$out"
    continue
  fi
  read -r secs retx segs hs up <<<"$out"
  printf '%-8s %10s %8s %10s\n' "$nagle" "$secs" "$segs" "$up"
done
echo
echo "captures: $dir (synack stats FILE, synack ladder FILE, or Wireshark)"
