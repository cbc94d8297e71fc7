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
deleted afterwards). Then the scale section: keep-alive requests/s at 10, 1000 and 4000
connections (errors counted), a 200 MB download on a fresh server, right after a burst of
20000 Connection: close requests, and with 5000 idle keep-alive connections open; the
resident memory with 10000 idle keep-alive connections (each served one request) and after
they close; and what --internals on costs. Prints the tables with the ratios.

  -d SECONDS      length of each wrk run (default 5)
  -c CONNECTIONS  wrk connections (default 10)
  -s BYTES        size of the download (default 1000000000)
  -r RUNS         downloads per configuration; the median is reported (default 7)
  -S              the scale section only
Needs wrk, nginx, curl and ab (installed with apt-get if missing) and python3.
USAGE
}

secs=5
conns=10
size=1000000000
runs=7
scale_only=""
while getopts "d:c:s:r:Sh" opt; do
  case $opt in
    d) secs=$OPTARG ;;
    c) conns=$OPTARG ;;
    s) size=$OPTARG ;;
    r) runs=$OPTARG ;;
    S) scale_only=1 ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_root
for tool in wrk nginx curl ab; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing $tool (apt-get)..."
    pkg=$tool; [ "$tool" = nginx ] && pkg=nginx-light; [ "$tool" = ab ] && pkg=apache2-utils
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
  [ -z "${hold_pid:-}" ] || { kill "$hold_pid" 2>/dev/null; wait "$hold_pid" 2>/dev/null; } || true
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
write(sys.argv[1] + "/200000000", 200000000)
write(sys.argv[1] + "/" + sys.argv[2], int(sys.argv[2]))
PY
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
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

# wrk with C connections for D seconds: "requests/s errors" (errors: connect, read, write,
# timeouts and non-2xx answers, summed).
wrk_scale() {
  local c=$1 d=$2; shift 2
  in_ns sh -c "ulimit -n 20000; wrk -t2 -c$c -d${d}s --timeout 5s $*" 2>/dev/null | awk '
    /Requests\/sec/ { rate = $2 }
    /Socket errors/ { gsub(",", ""); errors += $4 + $6 + $8 + $10 }
    /Non-2xx/ { errors += $NF }
    END { printf "%d %d\n", rate, errors }'
}

# Holds N keep-alive connections open to HOST, each having had one response, until killed.
cat > "$work/hold.py" <<'PY'
import socket, sys, time
n, host, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
held = []
for i in range(n):
    s = socket.create_connection((host, 80), timeout=10)
    s.sendall(b"GET /bytes/100 HTTP/1.1\r\nHost: bench\r\n\r\n")
    got = b""
    while not (b"\r\n\r\n" in got and len(got.split(b"\r\n\r\n", 1)[1]) >= 100):
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection %d closed early" % i)
        got += chunk
    held.append(s)
open(ready, "w").write("%d\n" % len(held))
while True:
    time.sleep(3600)
PY
hold_pid=""
hold() {
  rm -f "$work/held"
  ip netns exec "$ns" sh -c "ulimit -n 20000; exec python3 '$work/hold.py' $1 $2 '$work/held'" &
  hold_pid=$!
  wait_for 120 test -s "$work/held" || die "could not open $1 connections to $2"
}
unhold() { kill "$hold_pid" 2>/dev/null; wait "$hold_pid" 2>/dev/null || true; hold_pid=""; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

declare -A R
off_flags=(--no-capture)
if [ -z "$scale_only" ]; then
on_flags=(--capture "captures/bench-$$.pcapng")

echo "measuring the kernel reference..."
R[kernel,ka]=$(wrk_rate "http://10.78.0.2/bytes/100")
R[kernel,cc]=$(wrk_rate -H "Connection: close" "http://10.78.0.2/bytes/100")
R[kernel,dl]=$(for i in $(seq "$runs"); do download "http://10.78.0.2/bytes/$size"; done | median)

# Each synack measurement gets a fresh server, so each starts from the same state (the
# scale section measures what a Connection: close burst leaves behind on purpose).
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
fi

# --- the scale section -------------------------------------------------------------
# Every measurement with a fresh server (and nginx reference where there is one), so that
# what one leaves behind (TIME-WAIT, idle connections) is measured only where meant to be.
declare -A S
echo "scale: keep-alive at 10, 1000 and 4000 connections..."
for c in 10 1000 4000; do
  S[kernel,ka$c]=$(wrk_scale "$c" "$secs" "http://10.78.0.2/bytes/100")
  start_synack --no-capture; S[synack,ka$c]=$(wrk_scale "$c" "$secs" "http://10.77.0.2/bytes/100"); stop_synack "keep-alive, $c connections"
done
echo "scale: new connections/s..."
S[kernel,cc]=$(wrk_scale 100 "$secs" -H "'Connection: close'" "http://10.78.0.2/bytes/100")
start_synack --no-capture; S[synack,cc]=$(wrk_scale 100 "$secs" -H "'Connection: close'" "http://10.77.0.2/bytes/100"); stop_synack "close, 100 connections"
echo "scale: 200 MB downloads: fresh, after a 20000-request close burst, with 5000 idle connections..."
big="http://10.77.0.2/bytes/200000000"
dl_fresh=(); dl_burst=(); dl_idle=(); tw_after=""
for i in $(seq 3); do
  start_synack --no-capture
  dl_fresh+=("$(download "$big")")
  stop_synack "download 200 MB, fresh"
  start_synack --no-capture
  in_ns ab -q -s 10 -c 50 -n 20000 http://10.77.0.2/bytes/100 >/dev/null 2>&1 || true
  tw_after=$(in_ns curl -s --max-time 5 http://10.77.0.2/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["time_wait"])')
  dl_burst+=("$(download "$big")")
  stop_synack "download 200 MB after 20000 closed"
  start_synack --no-capture --idle-timeout 3600
  hold 5000 10.77.0.2
  dl_idle+=("$(download "$big")")
  unhold
  stop_synack "download 200 MB, 5000 idle open"
done
S[fresh]=$(printf '%s\n' "${dl_fresh[@]}" | median)
S[burst]=$(printf '%s\n' "${dl_burst[@]}" | median)
S[idle]=$(printf '%s\n' "${dl_idle[@]}" | median)
echo "scale: memory with 10000 idle keep-alive connections..."
start_synack --no-capture --idle-timeout 3600
S[rss0]=$(rss_kb "$server_pid")
hold 10000 10.77.0.2
S[rss10k]=$(rss_kb "$server_pid")
unhold
wait_for 30 sh -c "[ \$(ip netns exec '$ns' curl -s --max-time 2 http://10.77.0.2/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"active_connections\"])') -le 1 ]" || true
S[rssafter]=$(rss_kb "$server_pid")
stop_synack "10000 idle connections"
hold_ref() {
  rm -f "$work/held"
  ip netns exec "$ns" sh -c "ulimit -n 20000; exec python3 '$work/hold.py' 10000 10.78.0.2 '$work/held'" &
  hold_pid=$!
  wait_for 120 test -s "$work/held" || die "could not open 10000 connections to nginx"
}
hold_ref; S[nginx10k]=$(rss_kb "$nginx_pid"); unhold
echo "scale: what --internals on costs..."
start_synack --no-capture --internals on; S[int,ka]=$(wrk_scale 100 "$secs" "http://10.77.0.2/bytes/100"); stop_synack "keep-alive, internals on"
start_synack --no-capture; S[noint,ka]=$(wrk_scale 100 "$secs" "http://10.77.0.2/bytes/100"); stop_synack "keep-alive, internals off"
start_synack --no-capture --internals on; S[int,dl]=$(download "$big"); stop_synack "download, internals on"
start_synack --no-capture; S[noint,dl]=$(download "$big"); stop_synack "download, internals off"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
first() { echo "${1%% *}"; }
second() { echo "${1##* }"; }
echo
printf "%-44s %14s %14s %8s  %s\n" "scale" "kernel (nginx)" "synack" "ratio" "target"
srow() {
  printf "%-44s %14s %14s %8s  %s\n" "$1" "$2" "$3" "$(ratio "$(first "$3")" "$(first "$2")")" "$4"
}
for c in 10 1000 4000; do
  srow "keep-alive req/s, $c conns (errors)" \
    "$(first "${S[kernel,ka$c]}") ($(second "${S[kernel,ka$c]}"))" \
    "$(first "${S[synack,ka$c]}") ($(second "${S[synack,ka$c]}"))" \
    "$([ "$c" = 4000 ] && echo ">= 1.00, 0 errors")"
done
srow "new connections/s, 100 conns (errors)" \
  "$(first "${S[kernel,cc]}") ($(second "${S[kernel,cc]}"))" \
  "$(first "${S[synack,cc]}") ($(second "${S[synack,cc]}"))" ">= 1.00"
printf "%-44s %14s %14s %8s  %s\n" "200 MB download MB/s, fresh" "" "${S[fresh]}" "1.00" ""
printf "%-44s %14s %14s %8s  %s\n" "  right after 20000 Connection: close" "" "${S[burst]}" "$(ratio "${S[burst]}" "${S[fresh]}")" ">= 0.80 of fresh"
printf "%-44s %14s %14s %8s  %s\n" "  with 5000 idle connections open" "" "${S[idle]}" "$(ratio "${S[idle]}" "${S[fresh]}")" ">= 0.80 of fresh"
printf "%-44s %14s %14s %8s  %s\n" "RSS MB, 10000 idle keep-alive connections" "$((S[nginx10k] / 1024))" "$((S[rss10k] / 1024))" "" "<= 500 MB"
printf "%-44s %14s %14s %8s  %s\n" "RSS MB, started / after they closed" "" "$((S[rss0] / 1024)) / $((S[rssafter] / 1024))" "" "falls back"
printf "%-44s %14s %14s %8s  %s\n" "--internals on: keep-alive req/s, on/off" "" "${S[int,ka]%% *} / ${S[noint,ka]%% *}" "$(ratio "${S[int,ka]%% *}" "${S[noint,ka]%% *}")" ""
printf "%-44s %14s %14s %8s  %s\n" "--internals on: download MB/s, on/off" "" "${S[int,dl]} / ${S[noint,dl]}" "$(ratio "${S[int,dl]}" "${S[noint,dl]}")" ""
echo
echo "downloads, MB/s: fresh ${dl_fresh[*]}; after the burst ${dl_burst[*]}; with 5000 idle ${dl_idle[*]}"
echo "TIME-WAIT entries right after the 20000-request burst: $tw_after"
[ -z "$scale_only" ] || { echo; echo "synack's own counts, run by run:"; sed 's/, [0-9]* DNS answers ([0-9]* datagrams dropped)//' "$work/summaries"; }
