#!/usr/bin/env bash
# synack against a kernel reference (nginx over a veth pair), in one run, one table.
set -euo pipefail
source "$(dirname "$0")/common.sh"
restore_signals "$0" "$@"

usage() {
  cat <<USAGE
usage: sudo $0 [-d SECONDS] [-c CONNECTIONS] [-s BYTES] [-r RUNS]

Measures, in one run and on the same machine:
  - synack serve on a TUN device (namespace synack-bench, 10.77.0.2, MTU 1500);
  - the kernel's TCP with nginx (one worker, like synack's one thread) in a second
    namespace behind a veth pair (10.78.0.2, MTU 1500), serving the same bodies.
For each: keep-alive requests/s and new connections/s (wrk, Connection: close) for a
100-byte response, and MB/s for a download of BYTES (default 1000000000) with curl.
synack runs twice: capture off and capture on (the capture goes under captures/ and is
deleted afterwards). Prints one table with the ratios.

  -d SECONDS      length of each wrk run (default 5)
  -c CONNECTIONS  wrk connections (default 10)
  -s BYTES        size of the download (default 1000000000)
  -r RUNS         downloads per configuration; the median is reported (default 7)
Needs wrk, nginx and curl (installed with apt-get if missing).
USAGE
}

secs=5
conns=10
size=1000000000
runs=7
while getopts "d:c:s:r:h" opt; do
  case $opt in
    d) secs=$OPTARG ;;
    c) conns=$OPTARG ;;
    s) size=$OPTARG ;;
    r) runs=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_root
for tool in wrk nginx curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing $tool (apt-get)..."
    pkg=$tool; [ "$tool" = nginx ] && pkg=nginx-light
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null || die "cannot install $pkg: apt-get install $pkg"
  fi
done

top=$(repo_dir)
cd "$top"
ns=synack-bench
ref=synack-bench-ref
work=$(mktemp -d)
server_pid=""
nginx_pid=""

cleanup() {
  trap - EXIT INT TERM
  [ -z "$server_pid" ] || { kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; } || true
  [ -z "$nginx_pid" ] || { kill -TERM "$nginx_pid" 2>/dev/null; wait "$nginx_pid" 2>/dev/null; } || true
  "$top/netns-scripts/down.sh" -n "$ns" || true
  "$top/netns-scripts/down.sh" -n "$ref" || true
  rm -rf "$work" captures/bench-*.pcapng
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building synack (release)..."
bin=$(build_synack "$0")

# Client namespace with tun0 (synack) and a veth to the reference namespace (nginx).
"$top/netns-scripts/up.sh" -n "$ns" -m 1500 >/dev/null
ip netns add "$ref"
ip link add bench0 netns "$ns" type veth peer name bench1 netns "$ref"
ip -n "$ns" addr add 10.78.0.1/24 dev bench0
ip -n "$ref" addr add 10.78.0.2/24 dev bench1
ip -n "$ns" link set bench0 up mtu 1500
ip -n "$ref" link set bench1 up mtu 1500
ip -n "$ref" link set lo up

# The same bodies synack generates, as files for nginx (whose worker runs as www-data).
chmod 755 "$work"
mkdir -p "$work/www/bytes"
python3 - "$work/www/bytes" "$size" <<'PY'
import sys
pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
block = pattern * 16384
def write(path, n):
    with open(path, "wb") as f:
        while n >= len(block):
            f.write(block); n -= len(block)
        f.write(block[:n])
write(sys.argv[1] + "/100", 100)
write(sys.argv[1] + "/" + sys.argv[2], int(sys.argv[2]))
PY
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type text/plain;
  server { listen 10.78.0.2:80; root $work/www; }
}
NGINX
ip netns exec "$ref" nginx -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
wait_for 10 ip netns exec "$ns" curl -sf --max-time 2 -o /dev/null http://10.78.0.2/bytes/100 || die "nginx did not start"

in_ns() { ip netns exec "$ns" "$@"; }

start_synack() {
  ip netns exec "$ns" "$bin" serve --tun tun0 --addr 10.77.0.2/24 --journey off "$@" 2>"$work/synack.log" &
  server_pid=$!
  wait_for 20 grep -q "synack: serving" "$work/synack.log" || { cat "$work/synack.log" >&2; die "synack did not start"; }
}
# Each server's own account of its run (connections, packets, SYNs dropped...), labelled,
# for when a number in the table looks wrong.
stop_synack() {
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  rm -f captures/bench-*.pcapng
  printf '%-28s %s\n' "$1:" "$(grep -o 'stopped\..*' "$work/synack.log" | cut -c10-)" >> "$work/summaries"
}

# wrk's Requests/sec, whole.
wrk_rate() {
  in_ns wrk -t1 -c"$conns" -d"${secs}s" "$@" 2>/dev/null | awk '/Requests\/sec/ { printf "%d", $2 }'
}
# MB/s (10^6 bytes) of one download.
download() {
  in_ns curl -s --max-time 120 -o /dev/null -w '%{speed_download}\n' "$1" | awk '{ printf "%.0f\n", $1 / 1e6 }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A R
off_flags=(--no-capture)
on_flags=(--capture "captures/bench-$$.pcapng")

echo "measuring the kernel reference..."
R[kernel,ka]=$(wrk_rate "http://10.78.0.2/bytes/100")
R[kernel,cc]=$(wrk_rate -H "Connection: close" "http://10.78.0.2/bytes/100")
R[kernel,dl]=$(for i in $(seq "$runs"); do download "http://10.78.0.2/bytes/$size"; done | median)

# Each synack measurement gets a fresh server: the connections a Connection: close run
# leaves in TIME-WAIT (10 s) would otherwise slow the next measurement (see README).
for name in off on; do
  echo "measuring synack, capture $name..."
  flags="${name}_flags[@]"
  start_synack "${!flags}"; R[$name,ka]=$(wrk_rate "http://10.77.0.2/bytes/100"); stop_synack "keep-alive, capture $name"
  start_synack "${!flags}"; R[$name,cc]=$(wrk_rate -H "Connection: close" "http://10.77.0.2/bytes/100"); stop_synack "close, capture $name"
done
# Downloads alternate capture off and on, so that drift in the machine (other load, the
# disk writing back earlier captures) falls on both alike. The capture's cost is the
# median over rounds of each round's on/off ratio: one slow minute then hits one round,
# not the comparison of two medians taken at different moments.
echo "measuring downloads, capture off and on alternately..."
: > "$work/dl-off"; : > "$work/dl-on"
for i in $(seq "$runs"); do
  for name in off on; do
    flags="${name}_flags[@]"
    start_synack "${!flags}"
    download "http://10.77.0.2/bytes/$size" >> "$work/dl-$name"
    stop_synack "download $i, capture $name"
  done
done
R[off,dl]=$(median < "$work/dl-off")
R[on,dl]=$(median < "$work/dl-on")
paired=$(paste "$work/dl-on" "$work/dl-off" | awk '$2 > 0 { printf "%.3f\n", $1 / $2 }' | median)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
printf "%-34s %12s %12s %12s %10s %10s\n" "" "kernel" "synack" "synack" "synack/" "capture"
printf "%-34s %12s %12s %12s %10s %10s\n" "" "(nginx)" "capture off" "capture on" "kernel" "on/off"
row() {
  printf "%-34s %12s %12s %12s %10s %10s\n" "$1" "${R[kernel,$2]}" "${R[off,$2]}" "${R[on,$2]}" \
    "$(ratio "${R[off,$2]}" "${R[kernel,$2]}")" "${3:-$(ratio "${R[on,$2]}" "${R[off,$2]}")}"
}
row "keep-alive requests/s (100 B)" ka
row "new connections/s (100 B, close)" cc
row "download MB/s ($((size / 1000000)) MB, median of $runs)" dl "$(printf "%.2f" "$paired")"
echo
echo "wrk: 1 thread, $conns connections, ${secs} s each; MTU 1500 on both paths; $(nproc) cores"
echo "capture on/off for the download: the median of the rounds' ratios"
echo
echo "downloads, MB/s, round by round: capture off $(tr '\n' ' ' < "$work/dl-off")"
echo "                                 capture on  $(tr '\n' ' ' < "$work/dl-on")"
echo
echo "synack's own counts, run by run:"
sed 's/, [0-9]* DNS answers ([0-9]* datagrams dropped)//' "$work/summaries"
