# Shared defaults and helpers for the netns scripts; sourced, not run.
# shellcheck shell=bash

SYNACK_NS=${SYNACK_NS:-synack}
SYNACK_TUN=${SYNACK_TUN:-tun0}
SYNACK_KERNEL_ADDR=${SYNACK_KERNEL_ADDR:-10.77.0.1/24}
SYNACK_STACK_ADDR=${SYNACK_STACK_ADDR:-10.77.0.2/24}

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

ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }
