# Shared defaults and helpers for the netns scripts; sourced, not run.
# shellcheck shell=bash

SYNACK_NS=${SYNACK_NS:-synack}
SYNACK_TUN=${SYNACK_TUN:-tun0}
SYNACK_KERNEL_ADDR=${SYNACK_KERNEL_ADDR:-10.77.0.1/24}
SYNACK_STACK_ADDR=${SYNACK_STACK_ADDR:-10.77.0.2/24}
# The TUN device's queue toward synack (see up.sh).
SYNACK_TXQUEUELEN=${SYNACK_TXQUEUELEN:-10000}

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root for network namespaces: run it with sudo"
}

# The repository's top directory, wherever the script is called from.
repo_dir() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Waits until "$@" succeeds, at most $1 seconds (checked every 50 ms).
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# Builds synack (release) in the repository and prints the binary's path. Without cargo
# on root's PATH, uses a binary built before, or says how to get one.
build_synack() {
  local top
  top=$(repo_dir)
  if command -v cargo >/dev/null; then
    (cd "$top" && cargo build --release --quiet) >&2
  elif [ ! -x "$top/target/release/synack" ]; then
    die "cargo is not on root's PATH; build first (cargo build --release) or run: sudo env PATH=\"\$PATH\" $1"
  fi
  echo "$top/target/release/synack"
}

# The EXIT trap of the scripts that run a server in a namespace: stops $server_pid with
# SIGTERM (so its capture is complete), removes namespace $ns and the directory $work,
# and keeps the exit code.
cleanup_run() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${server_pid:-}" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  "$(repo_dir)/netns-scripts/down.sh" -n "$ns" || true
  [ -z "${work:-}" ] || rm -rf "$work"
  exit "$rc"
}

# A heading for each step of a script's run.
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Re-runs the calling script with SIGINT and SIGTERM at their defaults if it was started
# with them ignored: POSIX shells cannot trap a signal ignored on entry, which is how a
# background job starts, and then Ctrl-C could not clean up. Call it before any trap.
restore_signals() {
  if [ -z "${SYNACK_SIGNALS_RESTORED:-}" ]; then
    export SYNACK_SIGNALS_RESTORED=1
    exec env --default-signal=INT,TERM "$@"
  fi
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }

# One line per packet of a capture, with synack's comments; long runs of plain data and
# ACK segments are shortened to their ends. Needs tshark; says so if it is missing.
packet_summary() {
  local capture=$1
  if ! command -v tshark >/dev/null; then
    echo "(install tshark for a one-line-per-packet summary here)"
    return 0
  fi
  tshark -n -r "$capture" -T fields -E separator='|' \
    -e frame.number -e frame.time_relative -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport \
    -e tcp.flags.str -e tcp.seq -e tcp.ack -e tcp.len -e frame.comment -e udp.srcport -e udp.dstport 2>/dev/null |
    awk -F'|' '
      function line(i) { return run[i] }
      function flush_run(   i) {
        if (n > 12) {
          for (i = 1; i <= 4; i++) print line(i)
          printf "     ... %d more data and ACK segments ...\n", n - 8
          for (i = n - 3; i <= n; i++) print line(i)
        } else for (i = 1; i <= n; i++) print line(i)
        n = 0
      }
      $4 == "" { l = sprintf("%4d %9.6f %s:%-5s -> %s:%-5s UDP", $1, $2, $3, $12, $5, $13) }
      $4 != "" { l = sprintf("%4d %9.6f %s:%-5s -> %s:%-5s %s seq=%-7s ack=%-7s len=%-5s", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10) }
      {
        if ($11 == "") { run[++n] = l } else { flush_run(); print l "  # " $11 } }
      END { flush_run() }'
  echo "(every packet: tshark -r $capture)"
}
